"""Fast Gradient (Sign) Method, L-inf and L2, on the package's one adversarial kernel.

:func:`gradient_direction` is the kernel's step direction (``sign(grad)``, or the exactly
normalized L2 gradient) on the gradient that :func:`~cnnvis_tf.attacks._common.prepare`
computes in the same compiled pass as the input checks' logits; :func:`fgm_step` is the
kernel's ``clip(x + eps * direction)``. L-inf results equal cleverhans'
``fast_gradient_method`` bit for bit.
"""

import functools
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from cnnvis_tf.attacks import _steps
from cnnvis_tf.attacks._common import check_norm, finish, prepare
from cnnvis_tf.checks import check_nonneg, invalid

__all__ = ["fast_gradient_method", "fgsm", "fgm_l2", "gradient_direction", "fgm_step"]

# One function object per norm, so the compiled gradient pass is traced once per norm.
_DIRECTION = {norm: functools.partial(_steps.direction, norm=norm) for norm in (np.inf, 2)}


def gradient_direction(model_fn, x, y=None, *, norm=np.inf, targeted=False, clip_min=0.0,
                       clip_max=1.0, from_probabilities=False):
    """The fast-gradient step direction of each example, after checking every input.

    Args:
      model_fn: callable mapping a batch to logits.
      x: batch of inputs in ``[clip_min, clip_max]``.
      y: labels (or targets); ``None`` uses the model's prediction.
      norm: ``np.inf`` (``sign(grad)``) or ``2`` (unit-L2 gradient).
      targeted: the gradient of the negated loss (towards ``y``).
      clip_min: lower bound of the input space.
      clip_max: upper bound of the input space.
      from_probabilities: ``model_fn`` outputs softmax probabilities instead of logits.

    Returns:
      float32 numpy array shaped like ``x``.

    Raises:
      InputError: bad inputs, labels or norm.
    """
    norm = check_norm(norm)
    return prepare(
        model_fn, x, y=y, targeted=targeted, clip_min=clip_min, clip_max=clip_max,
        from_probabilities=from_probabilities,
        gradient=_DIRECTION[norm],
    )[-1].numpy()


def fgm_step(x, direction, eps, *, clip_min=0.0, clip_max=1.0):
    """``clip(x + eps * direction)`` as float32 numpy (the kernel's step); ``eps`` is a
    number or one per example."""
    eps = np.asarray(eps, np.float32)
    if not (np.all(np.isfinite(eps)) and np.all(eps >= 0)):
        raise invalid("eps", "finite numbers >= 0", eps if eps.ndim else float(eps))
    x = np.asarray(x, np.float32)
    return finish(_steps.fgm_step(x, np.asarray(direction, np.float32), eps, clip_min,
                                  clip_max), clip_min, clip_max)


def fast_gradient_method(
    model_fn: Callable,
    x: ArrayLike,
    eps: float = 0.1,
    *,
    norm: float | int | str = np.inf,
    y: ArrayLike | None = None,
    targeted: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    from_probabilities: bool = False,
) -> np.ndarray:
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
    eps = check_nonneg("eps", eps)
    # cleverhans under-steps in L2 when ||grad|| < 1e-6; see _steps.l2_direction
    direction = gradient_direction(
        model_fn, x, y, norm=norm, targeted=targeted, clip_min=clip_min, clip_max=clip_max,
        from_probabilities=from_probabilities,
    )
    return fgm_step(x, direction, eps, clip_min=clip_min, clip_max=clip_max)


def fgsm(model_fn: Callable, x: ArrayLike, eps: float = 0.1, **kwargs) -> np.ndarray:
    """Fast Gradient Sign Method (L-inf); see :func:`fast_gradient_method`.

    References:
      Goodfellow, Shlens, Szegedy. Explaining and Harnessing Adversarial Examples. ICLR 2015.
    """
    return fast_gradient_method(model_fn, x, eps, norm=np.inf, **kwargs)


def fgm_l2(model_fn: Callable, x: ArrayLike, eps: float = 1.0, **kwargs) -> np.ndarray:
    """Fast Gradient Method in L2: ``x + eps * grad / ||grad||_2``; see
    :func:`fast_gradient_method`.

    References:
      Goodfellow, Shlens, Szegedy. Explaining and Harnessing Adversarial Examples. ICLR 2015.
    """
    return fast_gradient_method(model_fn, x, eps, norm=2, **kwargs)
