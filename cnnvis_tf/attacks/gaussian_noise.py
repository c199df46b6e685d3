"""Random Gaussian noise of a given size: the baseline adversarial directions are compared to."""

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from cnnvis_tf.attacks._common import check_norm, check_seed, finish, prepare

__all__ = ["gaussian_noise"]


def gaussian_noise(
    model_fn: Callable,
    x: ArrayLike,
    eps: float = 0.1,
    *,
    norm: float | int | str = 2,
    seed: int = 0,
    y: ArrayLike | None = None,
    targeted: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    from_probabilities: bool = False,
) -> np.ndarray:
    """Adds a Gaussian random direction scaled to size ``eps`` (before clipping).

    Probing with random noise of the same norm as an attack shows how much of the attack's
    effect is due to its direction rather than its size.

    Args:
      model_fn: callable mapping a batch to logits (only used to validate the inputs).
      x: batch of inputs in ``[clip_min, clip_max]``.
      eps: size of the noise in ``norm`` (L2: exact norm; L-inf: largest entry).
      norm: ``2`` or ``np.inf``.
      seed: seed of the noise.
      y, targeted: accepted for a uniform signature; ignored (the noise is blind).
      clip_min: lower bound of the input space.
      clip_max: upper bound of the input space.
      from_probabilities: ``model_fn`` outputs softmax probabilities instead of logits.

    Returns:
      float32 numpy array, the noisy batch.

    Raises:
      InputError: bad arguments or inputs.

    References:
      Szegedy et al. Intriguing properties of neural networks. ICLR 2014 (random noise vs
      adversarial distortion); Fawzi, Moosavi-Dezfooli, Frossard. Robustness of classifiers:
      from adversarial to random noise. NeurIPS 2016.
    """
    norm = check_norm(norm)
    seed = check_seed(seed)
    _, xt, _, _ = prepare(model_fn, x, y=y, targeted=targeted, clip_min=clip_min,
                          clip_max=clip_max, from_probabilities=from_probabilities, eps=eps)
    x0 = xt.numpy().astype(np.float64)
    n = len(x0)
    noise = np.random.default_rng(seed).standard_normal(x0.shape).reshape(n, -1)
    size = np.abs(noise).max(axis=1) if norm == np.inf else np.linalg.norm(noise, axis=1)
    noise = (float(eps) * noise / size[:, None]).reshape(x0.shape)
    return finish(np.clip(x0 + noise, clip_min, clip_max), clip_min, clip_max)
