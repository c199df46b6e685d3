"""Fast Gradient (Sign) Method, L-inf and L2, over cleverhans 4.

L-inf is cleverhans' ``fast_gradient_method`` step, ``clip(x + eps * sign(grad))``, on the
gradient that :func:`~cnnvis_tf.attacks._common.prepare` computes in the same compiled pass
as the input checks' logits: one forward+backward pass in all, and the result equals
cleverhans' bit for bit. L2 steps along the gradient with an exact normalization
(:func:`~cnnvis_tf.attacks._common.l2_direction`, applied in that same pass).
"""

import numpy as np
import tensorflow as tf

from cnnvis_tf.attacks._common import check_norm, finish, l2_direction, prepare

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
    # cleverhans under-steps in L2 when ||grad|| < 1e-6; see l2_direction
    _, x, _, _, direction = prepare(
        model_fn, x, y=y, targeted=targeted, clip_min=clip_min, clip_max=clip_max,
        from_probabilities=from_probabilities, gradient=l2_direction if norm == 2 else tf.sign,
        eps=eps,
    )
    # The step, clip(x + eps * direction), in numpy: the same exactly rounded float32
    # operations as cleverhans' optimize_linear and clip, without another TensorFlow call.
    x_adv = x.numpy() + np.float32(eps) * direction.numpy()
    return finish(np.clip(x_adv, np.float32(clip_min), np.float32(clip_max)), clip_min, clip_max)


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
