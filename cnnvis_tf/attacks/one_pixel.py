"""One-pixel (few-pixel) attack by differential evolution, using only model outputs."""

from collections.abc import Callable

import numpy as np
import scipy.optimize
import tensorflow as tf
from numpy.typing import ArrayLike

from cnnvis_tf.attacks._common import check_positive_int, check_seed, finish, invalid, prepare
from cnnvis_tf.progress import check_progress

__all__ = ["one_pixel"]


def _apply(image, candidates, pixels, lo, hi):
    """Writes each candidate's ``pixels`` (row, col, value per channel) into a copy."""
    h, w, c = image.shape
    out = np.repeat(image[None], len(candidates), axis=0)
    params = candidates.reshape(len(candidates), pixels, 2 + c)
    rows = np.clip(params[..., 0].astype(int), 0, h - 1)
    cols = np.clip(params[..., 1].astype(int), 0, w - 1)
    idx = np.arange(len(candidates))[:, None]
    out[idx, rows, cols] = np.clip(params[..., 2:], lo, hi)
    return out


def one_pixel(
    model_fn: Callable,
    x: ArrayLike,
    *,
    pixels: int = 1,
    maxiter: int = 30,
    popsize: int = 20,
    seed: int = 0,
    y: ArrayLike | None = None,
    targeted: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    from_probabilities: bool = False,
    progress: Callable | None = None,
) -> np.ndarray:
    """Changes ``pixels`` pixels per image, found by differential evolution.

    Each candidate is ``(row, col, value per channel)`` per pixel; the fitness is the
    softmax probability of the true class (untargeted, minimized) or of the target
    (maximized). The population is evaluated in one model call per generation; evolution
    stops early once an image is fooled.

    Args:
      model_fn: callable mapping a batch of ``(H, W, C)`` images to logits.
      x: batch of images in ``[clip_min, clip_max]``.
      pixels: pixels changed per image.
      maxiter: generations of differential evolution.
      popsize: population multiplier (scipy's ``popsize``).
      seed: seed of the evolution.
      y: labels (or targets); ``None`` uses the model's predictions.
      targeted: reach ``y`` instead of leaving it.
      clip_min: lower bound of the input space.
      clip_max: upper bound of the input space.
      from_probabilities: ``model_fn`` outputs softmax probabilities instead of logits.
      progress: optional ``progress(done, total)`` called after each image (e.g. a
        :class:`cnnvis_tf.progress.Progress`); None is quiet.

    Returns:
      float32 numpy array; unfooled images carry the best candidate found.

    Raises:
      InputError: bad arguments or inputs.

    References:
      Su, Vargas, Sakurai. One pixel attack for fooling deep neural networks. IEEE
      Transactions on Evolutionary Computation 23(5), 2019.
    """
    pixels = check_positive_int("pixels", pixels)
    maxiter = check_positive_int("maxiter", maxiter)
    popsize = check_positive_int("popsize", popsize)
    seed = check_seed(seed)
    progress = check_progress(progress)
    model_fn, x, y, _ = prepare(
        model_fn, x, y=y, targeted=targeted, clip_min=clip_min, clip_max=clip_max,
        from_probabilities=from_probabilities,
    )
    if x.shape.rank != 4:
        raise invalid("x", "images of shape (batch, height, width, channels)", x.shape)
    x0, label = x.numpy(), y.numpy()
    _, h, w, c = x0.shape
    bounds = [(0, h), (0, w)] + [(clip_min, clip_max)] * c
    out = x0.copy()
    for i in range(len(x0)):

        def probs(cands, i=i):
            imgs = _apply(x0[i], np.atleast_2d(cands.T), pixels, clip_min, clip_max)
            return tf.nn.softmax(model_fn(tf.constant(imgs))).numpy()[:, label[i]]

        def fitness(cands):
            p = probs(cands)
            return -p if targeted else p

        def fooled(xk, convergence=None, i=i):
            p = tf.nn.softmax(model_fn(tf.constant(_apply(x0[i], xk[None], pixels, clip_min,
                                                          clip_max)))).numpy()[0]
            return bool((p.argmax() == label[i]) == targeted)

        res = scipy.optimize.differential_evolution(
            fitness, bounds * pixels, maxiter=maxiter, popsize=popsize, seed=seed + i,
            recombination=1.0, polish=False, vectorized=True, updating="deferred",
            callback=lambda xk, convergence=None: fooled(xk), init="random", tol=-1,
        )
        out[i] = _apply(x0[i], res.x[None], pixels, clip_min, clip_max)[0]
        if progress is not None:
            progress(i + 1, len(x0))
    return finish(out, clip_min, clip_max)
