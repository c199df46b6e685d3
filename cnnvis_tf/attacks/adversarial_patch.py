"""Adversarial patch: a square sticker that makes any image look like the target class."""

from collections.abc import Callable

import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from cnnvis_tf.attacks._common import (
    check_bool,
    check_positive_int,
    check_seed,
    finish,
    invalid,
    prepare,
)
from cnnvis_tf.checks import check_fraction
from cnnvis_tf.errors import InputError

__all__ = ["adversarial_patch", "apply_patch", "patch"]


def _side(patch_size, h, w):
    return max(1, int(round(patch_size * min(h, w))))


def _check_patch_size(patch_size):
    try:
        return check_fraction("patch_size", patch_size, low_open=True)
    except InputError:
        raise invalid("patch_size", "a fraction of the image side in (0, 1]",
                      patch_size) from None


def _check_position(position):
    try:
        position = tuple(int(v) for v in position)
    except (TypeError, ValueError):
        position = None
    if position is None or len(position) != 2:
        raise invalid("position", "None or (row, col) of the patch's top-left corner",
                      position)
    return position


def _paste(x, patch, r, c):
    """Differentiable paste of ``patch`` at (r, c) into every image of ``x``."""
    h, w = x.shape[1], x.shape[2]
    ph, pw = patch.shape[0], patch.shape[1]
    pad = [[r, h - r - ph], [c, w - c - pw], [0, 0]]
    mask = tf.pad(tf.ones_like(patch), pad)
    return x * (1.0 - mask) + tf.pad(patch, pad) * mask


def apply_patch(x: ArrayLike, patch_image: ArrayLike, *, positions: ArrayLike | None = None,
                seed: int = 0):
    """Pastes ``patch_image`` into each image at ``positions`` (``(n, 2)``; random if None)."""
    x = np.asarray(x, np.float32).copy()
    n, h, w = x.shape[:3]
    ph, pw = patch_image.shape[:2]
    if positions is None:
        rng = np.random.default_rng(seed)
        positions = np.stack([rng.integers(0, h - ph + 1, n), rng.integers(0, w - pw + 1, n)], 1)
    for i, (r, c) in enumerate(np.asarray(positions, int)):
        x[i, r : r + ph, c : c + pw] = patch_image
    return x


def adversarial_patch(
    model_fn: Callable,
    x: ArrayLike,
    *,
    y: ArrayLike | None = None,
    targeted: bool = True,
    patch_size: float = 0.3,
    steps: int = 100,
    step_size: float = 0.05,
    positions_per_step: int = 4,
    position: tuple[int, int] | None = None,
    seed: int = 0,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    from_probabilities: bool = False,
) -> np.ndarray:
    """Learns one patch that, pasted anywhere, pushes images of ``x`` to the targets ``y``.

    Each step pastes the patch at ``positions_per_step`` random positions into the whole
    batch (an expectation over placements) and takes a signed gradient step on the patch
    that lowers the mean cross-entropy to the targets.

    Args:
      model_fn: callable mapping a batch of ``(H, W, C)`` images to logits.
      x: training images in ``[clip_min, clip_max]``.
      y: target classes (one per image, usually all the same).
      targeted: must be True.
      patch_size: patch side as a fraction of the shorter image side.
      steps: optimization steps.
      step_size: L-inf step on the patch per step.
      positions_per_step: random placements averaged per step.
      position: ``(row, col)`` of a fixed placement instead of random ones (models that
        are not translation invariant, e.g. conv + flatten + dense, resist random
        placements far more).
      seed: seed of the initial patch and the positions.
      clip_min: lower bound of the input space.
      clip_max: upper bound of the input space.
      from_probabilities: ``model_fn`` outputs softmax probabilities instead of logits.

    Returns:
      the patch, float32 numpy array of shape ``(side, side, channels)``.

    Raises:
      InputError: bad arguments or inputs.

    References:
      Brown, Mane, Roy, Abadi, Gilmer. Adversarial Patch. arXiv:1712.09665, 2017.
    """
    if not check_bool("targeted", targeted):
        raise invalid("targeted", "True (the patch pushes towards y)", targeted)
    steps = check_positive_int("steps", steps)
    positions_per_step = check_positive_int("positions_per_step", positions_per_step)
    patch_size = _check_patch_size(patch_size)
    seed = check_seed(seed)
    if position is not None:
        position = _check_position(position)
    model_fn, x, y, _ = prepare(model_fn, x, y=y, targeted=True, clip_min=clip_min,
                                clip_max=clip_max, from_probabilities=from_probabilities,
                                step_size=step_size)
    if x.shape.rank != 4:
        raise invalid("x", "images of shape (batch, height, width, channels)", x.shape)
    _, h, w, ch = x.shape
    side = _side(patch_size, h, w)
    if position is not None:
        inside = 0 <= position[0] <= h - side
        if not inside or not 0 <= position[1] <= w - side:
            raise invalid("position", f"(row, col) with the {side}x{side} patch inside the "
                          f"{h}x{w} image", position)
    rng = np.random.default_rng(seed)
    p = tf.constant(rng.uniform(clip_min, clip_max, (side, side, ch)).astype(np.float32))
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(p)
            loss = 0.0
            for _ in range(1 if position is not None else positions_per_step):
                r, c = position if position is not None else (
                    int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1)))
                loss += tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=y, logits=model_fn(_paste(x, p, r, c))))
        p = tf.clip_by_value(p - step_size * tf.sign(tape.gradient(loss, p)), clip_min, clip_max)
    return finish(p, clip_min, clip_max)


def patch(model_fn: Callable, x: ArrayLike, *, y: ArrayLike | None = None, seed: int = 0,
          position: tuple[int, int] | None = None, clip_min: float = 0.0, clip_max: float = 1.0,
          **kwargs) -> np.ndarray:
    """Learns a patch on ``x`` (:func:`adversarial_patch`) and pastes it at random places
    (or at ``position``).

    References:
      Brown et al. Adversarial Patch. arXiv:1712.09665, 2017.
    """
    p = adversarial_patch(model_fn, x, y=y, seed=seed, position=position, clip_min=clip_min,
                          clip_max=clip_max, **kwargs)
    where = None if position is None else np.tile(np.asarray(position, int), (len(x), 1))
    return finish(apply_patch(np.asarray(x, np.float32), p, positions=where, seed=seed + 1), clip_min, clip_max)
