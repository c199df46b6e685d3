"""Fast Gradient (Sign) Method, L-inf and L2, over cleverhans 4.

L-inf calls cleverhans' ``fast_gradient_method``; L2 uses its gradient with an exact
normalization (:func:`~cnnvis_tf.attacks._common.l2_direction`).
"""

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method as _ch_fgm
from cleverhans.tf2.utils import compute_gradient

from cnnvis_tf.attacks._common import check_norm, finish, l2_direction, prepare

_CE = tf.nn.sparse_softmax_cross_entropy_with_logits

__all__ = ["fast_gradient_method", "fgsm", "fgm_l2"]


def fast_gradient_method(
    model_fn,
    x,
    eps=0.1,
    *,
    norm=np.inf,
    y=None,
    targeted=False,
    clip_min=0.0,
    clip_max=1.0,
    from_probabilities=False,
):
    """One gradient step of size ``eps`` in the chosen norm.

    Args:
      model_fn: callable (e.g. a ``keras.Model``) mapping a batch to logits.
      x: batch of inputs in ``[clip_min, clip_max]``.
      eps: perturbation budget, measured in ``norm``.
      norm: ``np.inf`` (FGSM, ``eps * sign(grad)``) or ``2`` (step along the unit gradient).
      y: true labels (untargeted) or target labels (targeted). ``None`` uses the model's
        prediction, which avoids label leaking.
      targeted: move towards ``y`` instead of away from it.
      clip_min: lower bound of the input space.
      clip_max: upper bound of the input space.
      from_probabilities: ``model_fn`` outputs softmax probabilities instead of logits.

    Returns:
      float32 numpy array, the adversarial batch, within the budget and the clip box.

    Raises:
      InputError: bad budget, box, inputs, labels or a model returning probabilities.

    References:
      Goodfellow, Shlens, Szegedy. Explaining and Harnessing Adversarial Examples. ICLR 2015.
    """
    norm = check_norm(norm)
    model_fn, x, y, _ = prepare(
        model_fn, x, y=y, targeted=targeted, clip_min=clip_min, clip_max=clip_max,
        from_probabilities=from_probabilities, eps=eps,
    )
    if norm == 2:  # cleverhans under-steps when ||grad|| < 1e-6; see l2_direction
        grad = compute_gradient(model_fn, _CE, x, y, targeted)
        x_adv = tf.clip_by_value(x + float(eps) * l2_direction(grad), clip_min, clip_max)
    else:
        x_adv = _ch_fgm(
            model_fn, x, float(eps), norm, clip_min=float(clip_min),
            clip_max=float(clip_max), y=y, targeted=targeted,
        )
    return finish(x_adv, clip_min, clip_max)


def fgsm(model_fn, x, eps=0.1, **kwargs):
    """Fast Gradient Sign Method (L-inf); see :func:`fast_gradient_method`.

    References:
      Goodfellow, Shlens, Szegedy. Explaining and Harnessing Adversarial Examples. ICLR 2015.
    """
    return fast_gradient_method(model_fn, x, eps, norm=np.inf, **kwargs)


def fgm_l2(model_fn, x, eps=1.0, **kwargs):
    """Fast Gradient Method in L2: ``x + eps * grad / ||grad||_2``; see
    :func:`fast_gradient_method`.

    References:
      Goodfellow, Shlens, Szegedy. Explaining and Harnessing Adversarial Examples. ICLR 2015.
    """
    return fast_gradient_method(model_fn, x, eps, norm=2, **kwargs)
