"""Momentum Iterative Method (MI-FGSM), wrapping cleverhans 4."""

import numpy as np
from cleverhans.tf2.attacks.momentum_iterative_method import (
    momentum_iterative_method as _ch_mim,
)

from cnnvis_tf.attacks._common import check_nonneg, check_norm, check_positive_int, finish, prepare

__all__ = ["momentum_iterative_method", "mim"]


def momentum_iterative_method(
    model_fn,
    x,
    eps=0.1,
    *,
    eps_iter=None,
    nb_iter=10,
    decay_factor=1.0,
    norm=np.inf,
    y=None,
    targeted=False,
    clip_min=0.0,
    clip_max=1.0,
    from_probabilities=False,
):
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
    x_adv = _ch_mim(
        model_fn, x, eps, eps_iter, nb_iter, norm, clip_min=float(clip_min),
        clip_max=float(clip_max), y=y, targeted=targeted, decay_factor=decay_factor,
        sanity_checks=False,
    )
    return finish(x_adv, clip_min, clip_max)


mim = momentum_iterative_method
