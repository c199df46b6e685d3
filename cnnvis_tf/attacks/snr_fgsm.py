"""FGSM with the budget set per image by a signal-to-noise ratio in dB.

SNR(x, delta) = 20 log10(||x||_2 / ||delta||_2). For a sign perturbation
``delta = eps * sign(grad)`` with ``k`` non-zero entries, ``||delta||_2 = eps * sqrt(k)``,
so ``eps = ||x||_2 / (10^(snr/20) * sqrt(k))`` hits the requested SNR exactly (``k`` is the
number of pixels, ``d``, unless the gradient is exactly zero somewhere, as under max
pooling). Clipping to the box can only shrink ``delta``, raising the achieved SNR: by
default (``match_clipped=True``) ``eps`` is instead solved exactly per image so
that the *clipped* perturbation has the requested SNR, where the box allows it (the
package's one SNR convention: adversarial training and ``evaluation.accuracy_vs_snr`` use
the same kernel, :func:`~cnnvis_tf.attacks._steps.snr_eps`). Use :func:`snr_db` to report
the achieved value.
"""

from collections.abc import Callable

import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from cnnvis_tf.attacks import _steps
from cnnvis_tf.attacks._common import finish
from cnnvis_tf.attacks.fast_gradient_method import gradient_direction
from cnnvis_tf.checks import invalid

__all__ = ["snr_fgsm", "snr_db", "snr_step"]


def snr_db(x: ArrayLike, x_adv: ArrayLike) -> np.ndarray:
    """Per-image SNR in dB, ``20 log10(||x||_2 / ||x_adv - x||_2)`` (inf if unchanged).

    References:
      Seed document 002 (IMT Atlantique internship report), eq. (2).
    """
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    noise = np.linalg.norm(np.asarray(x_adv, np.float64).reshape(len(x), -1) - x, axis=1)
    signal = np.linalg.norm(x, axis=1)
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(signal / noise)


def snr_step(x: ArrayLike, direction: ArrayLike, snr: float, *, clip_min: float = 0.0,
             clip_max: float = 1.0, match_clipped: bool = True) -> np.ndarray:
    """The SNR-bounded FGSM step along a sign ``direction``, as float32 numpy.

    The per-image ``eps`` is the kernel's :func:`~cnnvis_tf.attacks._steps.snr_eps`,
    computed in float32 as in training: with ``match_clipped`` (default) the *clipped*
    perturbation has the requested SNR where the box allows it; otherwise seed 002's
    unclipped formula.

    References:
      Seed document 002 section 3 (SNR-bounded FGSM).
    """
    snr = _check_snr(snr)
    numbers = [tf.constant(float(v), tf.float32) for v in (snr, clip_min, clip_max)]
    x_adv = _compiled_snr_step(tf.constant(np.asarray(x, np.float32)),
                               tf.constant(np.asarray(direction, np.float32)), *numbers,
                               bool(match_clipped))
    return finish(x_adv, clip_min, clip_max)


@tf.function(reduce_retracing=True)
def _compiled_snr_step(x, direction, snr, lo, hi, match_clipped):
    """The kernel's SNR step, compiled (its loop is many small ops)."""
    return _steps.snr_step(x, direction, snr, clip_min=lo, clip_max=hi,
                           match_clipped=match_clipped)


def _check_snr(snr):
    try:
        snr = float(snr)
    except (TypeError, ValueError):
        raise invalid("snr", "a finite number of dB", snr) from None
    if not np.isfinite(snr) or snr <= 0:
        raise invalid("snr", "a finite number of dB > 0 (0 dB: noise as large as the image)",
                      snr)
    return snr


def snr_fgsm(
    model_fn: Callable,
    x: ArrayLike,
    snr: float = 40.0,
    *,
    y: ArrayLike | None = None,
    targeted: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    from_probabilities: bool = False,
    match_clipped: bool = True,
) -> np.ndarray:
    """FGSM whose per-image step gives the requested SNR (after clipping, by default).

    Args:
      model_fn: callable mapping a batch to logits.
      x: batch of inputs in ``[clip_min, clip_max]``.
      snr: requested signal-to-noise ratio in dB (higher means a smaller perturbation;
        seed 002 uses 50, 45, 40 and 33).
      y: labels (or targets); ``None`` uses the model's predictions.
      targeted: move towards ``y``.
      clip_min: lower bound of the input space.
      clip_max: upper bound of the input space.
      from_probabilities: ``model_fn`` outputs softmax probabilities instead of logits.
      match_clipped: raise the step per image so that the clipped perturbation has the
        requested SNR where the box allows it (False: seed 002's unclipped formula).

    Returns:
      float32 numpy array, the adversarial batch.

    Raises:
      InputError: bad arguments or inputs.

    References:
      Goodfellow, Shlens, Szegedy. Explaining and Harnessing Adversarial Examples. ICLR 2015;
      seed document 002 section 3 (SNR-bounded FGSM).
    """
    snr = _check_snr(snr)
    direction = gradient_direction(model_fn, x, y, targeted=targeted, clip_min=clip_min,
                                   clip_max=clip_max, from_probabilities=from_probabilities)
    return snr_step(x, direction, snr, clip_min=clip_min, clip_max=clip_max,
                    match_clipped=match_clipped)
