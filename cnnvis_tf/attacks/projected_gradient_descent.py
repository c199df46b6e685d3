"""Projected Gradient Descent (Madry et al.) as a thin wrapper over cleverhans 4.

Unlike cleverhans, ``rand_init`` defaults to True (the attack as published). L-inf calls
cleverhans' ``projected_gradient_descent``; L2 runs the same loop with cleverhans'
``random_lp_vector``/``clip_eta``/``compute_gradient`` but an exact step normalization
(cleverhans' L2 step under-steps when the gradient norm is below 1e-6).
"""

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.projected_gradient_descent import (
    projected_gradient_descent as _ch_pgd,
)
from cleverhans.tf2.utils import clip_eta, compute_gradient, random_lp_vector

from cnnvis_tf.attacks._common import (
    check_nonneg,
    check_norm,
    check_positive_int,
    finish,
    invalid,
    l2_direction,
    prepare,
)

__all__ = ["projected_gradient_descent", "pgd", "pgd_l2", "default_eps_iter"]


def default_eps_iter(eps, nb_iter):
    """Step size ``2.5 * eps / nb_iter`` (Madry et al.), never above ``eps``."""
    return min(float(eps), 2.5 * float(eps) / int(nb_iter))


def projected_gradient_descent(
    model_fn,
    x,
    eps=0.1,
    *,
    eps_iter=None,
    nb_iter=20,
    norm=np.inf,
    rand_init=True,
    seed=None,
    y=None,
    targeted=False,
    clip_min=0.0,
    clip_max=1.0,
    from_probabilities=False,
):
    """Iterated gradient steps projected back onto the ``eps`` ball and the clip box.

    Args:
      model_fn: callable (e.g. a ``keras.Model``) mapping a batch to logits.
      x: batch of inputs in ``[clip_min, clip_max]``.
      eps: radius of the norm ball.
      eps_iter: step size; ``None`` means ``2.5 * eps / nb_iter``. Must be ``<= eps``.
      nb_iter: number of steps.
      norm: ``np.inf`` or ``2``.
      rand_init: start from a uniform random point of the ball (default True).
      seed: if set, ``tf.random.set_seed(seed)`` is called first so the random start is
        reproducible (this resets TensorFlow's global seed).
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
      Madry, Makelov, Schmidt, Tsipras, Vladu. Towards Deep Learning Models Resistant to
      Adversarial Attacks. ICLR 2018.
    """
    norm = check_norm(norm)
    nb_iter = check_positive_int("nb_iter", nb_iter)
    eps = check_nonneg("eps", eps)
    eps_iter = default_eps_iter(eps, nb_iter) if eps_iter is None else eps_iter
    eps_iter = check_nonneg("eps_iter", eps_iter)
    if eps_iter > eps:
        raise invalid("eps_iter", f"a step size <= eps={eps}", eps_iter)
    model_fn, x, y, _ = prepare(
        model_fn, x, y=y, targeted=targeted, clip_min=clip_min, clip_max=clip_max,
        from_probabilities=from_probabilities,
    )
    if seed is not None:
        tf.random.set_seed(int(seed))
    if norm == 2:
        x_adv = _pgd_l2_loop(model_fn, x, y, eps, eps_iter, nb_iter, rand_init, targeted,
                             float(clip_min), float(clip_max))
    else:
        x_adv = _ch_pgd(
            model_fn, x, eps, eps_iter, nb_iter, norm, clip_min=float(clip_min),
            clip_max=float(clip_max), y=y, targeted=targeted, rand_init=bool(rand_init),
        )
    return finish(x_adv, clip_min, clip_max)


def _pgd_l2_loop(model_fn, x, y, eps, eps_iter, nb_iter, rand_init, targeted, lo, hi):
    loss_fn = tf.nn.sparse_softmax_cross_entropy_with_logits
    eta = random_lp_vector(tf.shape(x), 2, eps) if rand_init else tf.zeros_like(x)
    x_adv = tf.clip_by_value(x + clip_eta(eta, 2, eps), lo, hi)
    for _ in range(nb_iter):
        grad = compute_gradient(model_fn, loss_fn, x_adv, y, targeted)
        x_adv = tf.clip_by_value(x_adv + eps_iter * l2_direction(grad), lo, hi)
        x_adv = tf.clip_by_value(x + clip_eta(x_adv - x, 2, eps), lo, hi)
    return x_adv


def pgd(model_fn, x, eps=0.1, **kwargs):
    """L-inf PGD with random start; see :func:`projected_gradient_descent`.

    References:
      Madry et al. Towards Deep Learning Models Resistant to Adversarial Attacks. ICLR 2018.
    """
    return projected_gradient_descent(model_fn, x, eps, norm=np.inf, **kwargs)


def pgd_l2(model_fn, x, eps=1.0, **kwargs):
    """L2 PGD with random start; see :func:`projected_gradient_descent`.

    References:
      Madry et al. Towards Deep Learning Models Resistant to Adversarial Attacks. ICLR 2018.
    """
    return projected_gradient_descent(model_fn, x, eps, norm=2, **kwargs)
