"""Projected Gradient Descent (Madry et al.) as a thin wrapper over cleverhans 4.

Unlike cleverhans, ``rand_init`` defaults to True (the attack as published). The loop is
cleverhans' ``projected_gradient_descent``, op for op (its ``random_lp_vector`` start,
``compute_gradient``, ``optimize_linear`` step, ``clip_eta`` projection), with the
iterations inside one ``tf.function`` (cleverhans runs them eagerly); L-inf results equal
cleverhans' bit for bit. L2 uses an exact step normalization (cleverhans' L2 step
under-steps when the gradient norm is below 1e-6).
"""

import numpy as np
import tensorflow as tf
from cleverhans.tf2.utils import compute_gradient, random_lp_vector

from cnnvis_tf.attacks._common import (
    check_nonneg,
    check_norm,
    check_positive_int,
    clip_eta,
    finish,
    invalid,
    l2_direction,
    optimize_linear,
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
    if rand_init:  # eager, so that tf.random.set_seed reproduces cleverhans' start
        eta = random_lp_vector(tf.shape(x), norm, tf.cast(eps, x.dtype), dtype=x.dtype)
    else:
        eta = tf.zeros_like(x)
    x_adv = tf.clip_by_value(x + clip_eta(eta, norm, eps), float(clip_min), float(clip_max))
    floats = [tf.constant(float(v), tf.float32) for v in (eps, eps_iter, clip_min, clip_max)]
    x_adv = _steps(model_fn, x, x_adv, y, *floats, tf.constant(nb_iter), norm, bool(targeted))
    return finish(x_adv, clip_min, clip_max)


@tf.function
def _steps(model_fn, x, x_adv, y, eps, eps_iter, lo, hi, nb_iter, norm, targeted):
    """``nb_iter`` projected steps from ``x_adv``; numbers are tensors, so no retracing."""
    loss_fn = tf.nn.sparse_softmax_cross_entropy_with_logits
    for _ in tf.range(nb_iter):
        grad = compute_gradient(model_fn, loss_fn, x_adv, y, targeted)
        if norm == 2:  # exact normalization; see l2_direction
            step = eps_iter * l2_direction(grad)
        else:
            step = optimize_linear(grad, eps_iter, norm)
        x_adv = tf.clip_by_value(x_adv + step, lo, hi)
        x_adv = tf.clip_by_value(x + clip_eta(x_adv - x, norm, eps), lo, hi)
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
