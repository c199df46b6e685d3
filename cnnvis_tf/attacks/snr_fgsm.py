"""FGSM with the budget set per image by a signal-to-noise ratio in dB.

SNR(x, delta) = 20 log10(||x||_2 / ||delta||_2). For a sign perturbation
``delta = eps * sign(grad)`` with ``k`` non-zero entries, ``||delta||_2 = eps * sqrt(k)``,
so ``eps = ||x||_2 / (10^(snr/20) * sqrt(k))`` hits the requested SNR exactly (``k`` is the
number of pixels, ``d``, unless the gradient is exactly zero somewhere, as under max
pooling). Clipping to the box can only shrink ``delta``, raising the achieved SNR: by
default (``match_clipped=True``) ``eps`` is then raised per image by bisection until the
*clipped* perturbation has the requested SNR, where the box allows it. Use :func:`snr_db`
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


def _match_clipped(x, direction, eps, snr, clip_min, clip_max, iters=50):
    """Raises each ``eps`` so that ``||clip(x + eps d) - x||_2`` reaches the SNR's norm.

    The clipped norm is non-decreasing in ``eps``; it is searched between the unclipped
    solution (a lower bound) and the box width (beyond which clipping fixes every pixel).
    """
    n = len(x)
    flat_x = x.reshape(n, -1)
    flat_d = direction.reshape(n, -1)
    target = np.linalg.norm(flat_x, axis=1) / 10.0 ** (snr / 20.0)

    buf = np.empty_like(flat_x)

    def norm(e):  # np.linalg.norm(clip(x + e d) - x, axis=1), in one buffer
        np.multiply(e[:, None], flat_d, out=buf)
        np.add(buf, flat_x, out=buf)
        np.minimum(np.maximum(buf, clip_min, out=buf), clip_max, out=buf)
        np.subtract(buf, flat_x, out=buf)
        np.multiply(buf, buf, out=buf)
        return np.sqrt(np.add.reduce(buf, axis=1))

    lo, hi = eps.copy(), np.full(n, float(clip_max - clip_min))
    hi = np.maximum(hi, lo)
    reachable = norm(hi) >= target
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        short = norm(mid) < target
        lo = np.where(short, mid, lo)
        hi = np.where(short, hi, mid)
    return hi, reachable


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
