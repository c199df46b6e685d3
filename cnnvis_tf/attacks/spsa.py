"""SPSA: a gradient-free L-inf attack, using cleverhans 4's projected optimization loop.

cleverhans 4.0.0's ``SPSAAdam`` subclasses the Keras optimizer and passes ``lr=``, which
Keras 3 rejects; :class:`_SpsaAdam` is a plain re-statement of that update rule with the
same ``init_state``/``minimize`` interface, and cleverhans' ``projected_optimization`` and
``margin_logit_loss`` do the rest.
"""

from collections.abc import Callable

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.spsa import margin_logit_loss, projected_optimization
from numpy.typing import ArrayLike

from cnnvis_tf.attacks._common import (
    check_number,
    check_positive_int,
    check_seed,
    finish,
    invalid,
    prepare,
)
from cnnvis_tf.checks import check_positive

__all__ = ["spsa"]


class _SpsaAdam:
    """Adam on an SPSA estimate of the gradient (Uesato et al. 2018, Alg. 1)."""

    def __init__(self, lr, delta, num_samples, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        self.lr, self.delta, self.half = lr, delta, num_samples // 2
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def init_state(self, x):
        return {"t": 0.0, "m": [tf.zeros_like(v) for v in x], "u": [tf.zeros_like(v) for v in x]}

    def _gradient(self, loss_fn, x):
        noise = tf.sign(tf.random.uniform([self.half] + x.shape[1:].as_list(), -1.0, 1.0))
        delta_x = self.delta * tf.concat([noise, -noise], axis=0)
        loss = tf.reshape(loss_fn(x + delta_x), [-1] + [1] * (len(x.shape) - 1))
        return tf.reduce_mean(loss * delta_x, axis=0, keepdims=True) / self.delta

    def minimize(self, loss_fn, x, optim_state):
        t = optim_state["t"] + 1.0
        new_x, new_m, new_u = [], [], []
        for xi, m, u in zip(x, optim_state["m"], optim_state["u"]):
            g = self._gradient(loss_fn, xi)
            m = self.beta_1 * m + (1.0 - self.beta_1) * g
            u = self.beta_2 * u + (1.0 - self.beta_2) * g * g
            m_hat = m / (1.0 - tf.pow(self.beta_1, t))
            u_hat = u / (1.0 - tf.pow(self.beta_2, t))
            new_x.append(xi - self.lr * m_hat / (tf.sqrt(u_hat) + self.epsilon))
            new_m.append(m)
            new_u.append(u)
        return new_x, {"t": t, "m": new_m, "u": new_u}


def spsa(
    model_fn: Callable,
    x: ArrayLike,
    eps: float = 0.1,
    *,
    nb_iter: int = 20,
    learning_rate: float = 0.01,
    delta: float = 0.01,
    spsa_samples: int = 64,
    early_stop_loss_threshold: float | None = None,
    seed: int | None = None,
    y: ArrayLike | None = None,
    targeted: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    from_probabilities: bool = False,
) -> np.ndarray:
    """SPSA attack: Adam on finite-difference gradient estimates, inside the L-inf ball.

    Needs only model outputs (no gradients), so it sees through gradient masking. Examples
    are attacked one at a time.

    Args:
      model_fn: callable mapping a batch to logits.
      x: batch of inputs in ``[clip_min, clip_max]``.
      eps: L-inf radius.
      nb_iter: optimization steps per example.
      learning_rate: Adam step size.
      delta: finite-difference perturbation size.
      spsa_samples: model evaluations per gradient estimate (even).
      early_stop_loss_threshold: stop an example once its margin loss is below this.
      seed: if set, ``tf.random.set_seed(seed)`` is called first (resets the global seed).
      y: labels (or targets); ``None`` uses the model's predictions.
      targeted: move towards ``y``.
      clip_min: lower bound of the input space.
      clip_max: upper bound of the input space.
      from_probabilities: ``model_fn`` outputs softmax probabilities instead of logits.

    Returns:
      float32 numpy array, the adversarial batch.

    Raises:
      InputError: bad arguments or inputs.

    References:
      Uesato, O'Donoghue, van den Oord, Kohli. Adversarial Risk and the Dangers of
      Evaluating Against Weak Attacks. ICML 2018.
    """
    nb_iter = check_positive_int("nb_iter", nb_iter)
    spsa_samples = check_positive_int("spsa_samples", spsa_samples)
    if spsa_samples % 2:
        raise invalid("spsa_samples", "an even number", spsa_samples)
    delta = check_positive("delta", delta)
    seed = check_seed(seed, allow_none=True)
    if early_stop_loss_threshold is not None:
        early_stop_loss_threshold = check_number("early_stop_loss_threshold",
                                                 early_stop_loss_threshold)
    model_fn, x, y, logits = prepare(
        model_fn, x, y=y, targeted=targeted, clip_min=clip_min, clip_max=clip_max,
        from_probabilities=from_probabilities, eps=eps, learning_rate=learning_rate,
        delta=delta,
    )
    if seed is not None:
        tf.random.set_seed(seed)
    num_classes = logits.shape[1]
    sign = 1.0 if targeted else -1.0

    def loss_fn(xb, label):
        return sign * margin_logit_loss(model_fn(xb), label, nb_classes=num_classes)

    optimizer = _SpsaAdam(float(learning_rate), float(delta), spsa_samples)
    out = []
    for i in range(x.shape[0]):
        out.append(
            projected_optimization(
                loss_fn, x[i : i + 1], y[i : i + 1], float(eps), nb_iter, optimizer,
                float(clip_min), float(clip_max), early_stop_loss_threshold,
            )
        )
    return finish(np.concatenate([np.asarray(o) for o in out]), clip_min, clip_max)
