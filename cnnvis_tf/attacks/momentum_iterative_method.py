"""Momentum Iterative Method (MI-FGSM), wrapping cleverhans 4.

The loop is cleverhans' ``momentum_iterative_method``, op for op, inside one
``tf.function`` (cleverhans runs it eagerly), with the step and projection of the
package's kernel (:mod:`~cnnvis_tf.attacks._steps`); results equal cleverhans' bit for bit.
"""

from collections.abc import Callable

import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from cnnvis_tf.attacks._common import check_norm, finish, prepare
from cnnvis_tf.attacks._steps import clip_eta, loss_gradient, optimize_linear
from cnnvis_tf.checks import check_nonneg, check_positive_int

__all__ = ["momentum_iterative_method", "mim"]


def momentum_iterative_method(
    model_fn: Callable,
    x: ArrayLike,
    eps: float = 0.1,
    *,
    eps_iter: float | None = None,
    nb_iter: int = 10,
    decay_factor: float = 1.0,
    norm: float | int | str = np.inf,
    y: ArrayLike | None = None,
    targeted: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    from_probabilities: bool = False,
) -> np.ndarray:
    """Iterative fast-gradient steps along an accumulated (momentum) gradient.

    Args:
      model_fn: callable mapping a batch to logits.
      x: batch of inputs in ``[clip_min, clip_max]``.
      eps: radius of the norm ball.
      eps_iter: step size; ``None`` means ``eps / nb_iter``.
      nb_iter: number of steps.
      decay_factor: momentum decay ``mu``.
      norm: ``np.inf`` or ``2``.
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
      Dong, Liao, Pang, Su, Zhu, Hu, Li. Boosting Adversarial Attacks with Momentum.
      CVPR 2018.
    """
    norm = check_norm(norm)
    nb_iter = check_positive_int("nb_iter", nb_iter)
    eps = check_nonneg("eps", eps)
    eps_iter = check_nonneg("eps_iter", eps / nb_iter if eps_iter is None else eps_iter)
    decay_factor = check_nonneg("decay_factor", decay_factor)
    model_fn, x, y, _ = prepare(
        model_fn, x, y=y, targeted=targeted, clip_min=clip_min, clip_max=clip_max,
        from_probabilities=from_probabilities,
    )
    floats = [tf.constant(float(v), tf.float32)
              for v in (eps, eps_iter, decay_factor, clip_min, clip_max)]
    x_adv = _steps(model_fn, x, y, *floats, tf.constant(nb_iter), norm, bool(targeted))
    return finish(x_adv, clip_min, clip_max)


@tf.function
def _steps(model_fn, x, y, eps, eps_iter, decay_factor, lo, hi, nb_iter, norm, targeted):
    momentum = tf.zeros_like(x)
    x_adv = x
    axes = list(range(1, len(x.shape)))
    for _ in tf.range(nb_iter):
        grad = loss_gradient(model_fn, x_adv, y, targeted)
        grad = grad / tf.math.maximum(
            tf.cast(1e-12, grad.dtype), tf.math.reduce_mean(tf.math.abs(grad), axes, keepdims=True)
        )
        momentum = decay_factor * momentum + grad
        x_adv = x_adv + optimize_linear(momentum, eps_iter, norm)
        x_adv = tf.clip_by_value(x + clip_eta(x_adv - x, norm, eps), lo, hi)
    return x_adv


mim = momentum_iterative_method
