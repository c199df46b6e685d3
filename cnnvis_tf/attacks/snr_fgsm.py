"""FGSM with the budget set per image by a signal-to-noise ratio in dB.

SNR(x, delta) = 20 log10(||x||_2 / ||delta||_2). For a sign perturbation
``delta = eps * sign(grad)`` with ``k`` non-zero entries, ``||delta||_2 = eps * sqrt(k)``,
so ``eps = ||x||_2 / (10^(snr/20) * sqrt(k))`` hits the requested SNR exactly (``k`` is the
number of pixels, ``d``, unless the gradient is exactly zero somewhere, as under max
pooling). Clipping to the box can only shrink ``delta``, raising the achieved SNR: by
default (``match_clipped=True``) ``eps`` is instead solved per image in closed form so
that the *clipped* perturbation has the requested SNR, where the box allows it. Use :func:`snr_db`
to report the achieved value.
"""

import numpy as np
import tensorflow as tf
from cleverhans.tf2.utils import compute_gradient

from cnnvis_tf.attacks._common import finish, invalid, prepare

__all__ = ["snr_fgsm", "snr_db", "snr_eps", "gradient_sign"]


def snr_db(x, x_adv):
    """Per-image SNR in dB, ``20 log10(||x||_2 / ||x_adv - x||_2)`` (inf if unchanged).

    References:
      Seed document 002 (IMT Atlantique internship report), eq. (2).
    """
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    noise = np.linalg.norm(np.asarray(x_adv, np.float64).reshape(len(x), -1) - x, axis=1)
    signal = np.linalg.norm(x, axis=1)
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(signal / noise)


def snr_eps(x, direction, snr):
    """Per-image step ``eps`` so that ``eps * direction`` has the requested SNR (dB)."""
    n = len(x)
    signal = np.linalg.norm(np.asarray(x, np.float64).reshape(n, -1), axis=1)
    dnorm = np.linalg.norm(np.asarray(direction, np.float64).reshape(n, -1), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = signal / (10.0 ** (float(snr) / 20.0) * dnorm)
    return np.where(dnorm > 0, eps, 0.0)


def _match_clipped(x, direction, eps, snr, clip_min, clip_max):
    """Per-image ``eps`` with ``||clip(x + eps d) - x||_2`` equal to the SNR's noise norm.

    For a sign direction each pixel moves by ``min(eps, cap_i)``, ``cap_i`` being its room
    to the box in its direction (0 where ``d_i = 0``), so the clipped squared norm is
    ``sum_{cap_i < eps} cap_i^2 + eps^2 * #{cap_i >= eps}``: piecewise quadratic and
    increasing in ``eps``. With the caps sorted, the segment holding the target is found
    from prefix sums and ``eps`` solved exactly there. Where even ``eps = max cap`` cannot
    reach the target, that ``eps`` is returned (the achieved SNR is then higher).

    Returns:
      (eps, reachable): float64 arrays of shape (N,).
    """
    del eps  # the exact solution needs no starting point
    n = len(x)
    flat_x = x.reshape(n, -1)
    flat_d = direction.reshape(n, -1)
    target2 = (np.linalg.norm(flat_x, axis=1) / 10.0 ** (snr / 20.0)) ** 2
    caps = np.where(flat_d > 0, clip_max - flat_x, np.where(flat_d < 0, flat_x - clip_min, 0.0))
    caps = np.sort(np.maximum(caps, 0.0), axis=1)
    d = caps.shape[1]
    prefix = np.concatenate([np.zeros((n, 1)), np.cumsum(caps**2, axis=1)], axis=1)  # S_k
    k = np.arange(d)
    at_caps = prefix[:, :-1] + caps**2 * (d - k)  # squared norm at eps = caps[:, k]
    reachable = prefix[:, -1] >= target2
    first = np.argmax(at_caps >= target2[:, None], axis=1)  # pixels saturated before eps
    rows = np.arange(n)
    eps = np.sqrt(np.maximum(target2 - prefix[rows, first], 0.0) / (d - first))
    return np.where(reachable, eps, caps[:, -1]), reachable


def gradient_sign(model_fn, x, y, targeted=False):
    """``sign`` of the cross-entropy gradient w.r.t. ``x`` (cleverhans' compute_gradient)."""
    grad = compute_gradient(
        model_fn, tf.nn.sparse_softmax_cross_entropy_with_logits, x, y, targeted
    )
    return np.sign(grad.numpy())


def snr_fgsm(
    model_fn,
    x,
    snr=40.0,
    *,
    y=None,
    targeted=False,
    clip_min=0.0,
    clip_max=1.0,
    from_probabilities=False,
    match_clipped=True,
):
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
    try:
        snr = float(snr)
    except (TypeError, ValueError):
        raise invalid("snr", "a finite number of dB", snr) from None
    if not np.isfinite(snr) or snr <= 0:
        raise invalid("snr", "a finite number of dB > 0 (0 dB: noise as large as the image)",
                      snr)
    _, x, _, _, grad = prepare(
        model_fn, x, y=y, targeted=targeted, clip_min=clip_min, clip_max=clip_max,
        from_probabilities=from_probabilities, gradient=True,
    )
    direction = np.sign(grad.numpy())  # gradient_sign, from prepare's compiled pass
    x64 = x.numpy().astype(np.float64)
    eps = snr_eps(x64, direction, snr)
    if match_clipped:
        eps, _ = _match_clipped(x64, direction, eps, snr, clip_min, clip_max)
    x_adv = x64 + eps.reshape((-1,) + (1,) * (direction.ndim - 1)) * direction
    return finish(np.clip(x_adv, clip_min, clip_max), clip_min, clip_max)
