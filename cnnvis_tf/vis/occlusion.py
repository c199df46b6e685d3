"""Occlusion sensitivity: slide a gray patch over the image and watch the class probability.

References:
  Zeiler, M. D. and Fergus, R. Visualizing and Understanding Convolutional Networks.
  ECCV 2014 (arXiv:1311.2901), Section 4.2.
"""

import dataclasses

import keras
import numpy as np
from numpy.typing import ArrayLike

from cnnvis_tf.checks import check_positive_int, invalid
from cnnvis_tf.vis import _model


@dataclasses.dataclass
class OcclusionResult:
    """Occlusion maps for one image.

    Attributes:
      heatmap: (rows, cols) probability of the true class with the patch at each position.
      positions: (rows*cols, 2) top-left corner (row, col) of each patch position.
      true_prob: (rows*cols,) the same probabilities as ``heatmap``, in table order.
      predicted: (rows*cols,) class predicted with the patch at each position.
      base_prob: probability of the true class without occlusion.
      label: the true class used.
      pixel_map: (H, W) the true-class probability at image resolution: each pixel holds
        the mean over the patch positions covering it (``base_prob`` where none does).
    """

    heatmap: np.ndarray
    positions: np.ndarray
    true_prob: np.ndarray
    predicted: np.ndarray
    base_prob: float
    label: int
    pixel_map: np.ndarray = None

    def table(self):
        """Rows ``{"row", "col", "true_class_prob", "predicted_class"}`` per position."""
        return [
            {"row": int(r), "col": int(c), "true_class_prob": float(p), "predicted_class": int(k)}
            for (r, c), p, k in zip(self.positions, self.true_prob, self.predicted)
        ]


def _starts(size, patch, stride):
    """Patch starts every ``stride`` pixels, plus the last position ``size - patch`` when the
    stride does not reach it, so the patches cover the whole image."""
    if patch >= size:
        return [0]
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def pixel_map(positions: ArrayLike, values: ArrayLike, shape: tuple[int, int], patch: int,
              default: float) -> np.ndarray:
    """Upsamples per-position values to the image: each pixel of ``shape`` (H, W) gets the
    mean of ``values`` over the ``patch``-sized squares at ``positions`` covering it, and
    ``default`` where no square does (the patch geometry of Zeiler & Fergus' maps)."""
    total = np.zeros(shape, "float64")
    count = np.zeros(shape, "float64")
    for (r, c), v in zip(positions, values):
        total[r : r + patch, c : c + patch] += v
        count[r : r + patch, c : c + patch] += 1
    return np.where(count > 0, total / np.maximum(count, 1), default).astype("float32")


def occlude(x: np.ndarray, positions: ArrayLike, patch: int,
            fill: float | ArrayLike) -> np.ndarray:
    """Copies of one image ``x`` (H, W, C) with a ``patch``-sized square of ``fill`` at
    each (row, col) in ``positions``; returns (len(positions), H, W, C)."""
    out = np.repeat(x[None], len(positions), axis=0)
    for i, (r, c) in enumerate(positions):
        out[i, r : r + patch, c : c + patch, :] = fill
    return out


class Occlusion(_model.Visualizer):
    """Occlusion sensitivity evaluated in batches of patch positions.

    Args:
      model: any Keras classifier (a softmax head is handled).
      patch_size: side of the square patch in pixels (0 covers nothing: a sanity check).
      stride: step between patch positions in pixels; the last row and column of positions
        always touch the image border.
      fill: value written into the patch (default: the middle of the input range, gray).
      batch_size: occluded images per forward pass.
      clip_min, clip_max: the model's input range.
    """

    def __init__(self, model: keras.Model, patch_size: int = 14, stride: int = 7,
                 fill: float | None = None, batch_size: int = 128, *, clip_min: float = 0.0,
                 clip_max: float = 1.0):
        if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) or \
                patch_size < 0:
            raise invalid("patch_size", "an integer >= 0", patch_size)
        self.patch_size = int(patch_size)
        self.stride = check_positive_int("stride", stride)
        self.batch_size = check_positive_int("batch_size", batch_size)
        super().__init__(model, clip_min=clip_min, clip_max=clip_max)
        self.fill = 0.5 * (self.clip_min + self.clip_max) if fill is None else float(fill)
        if not self.clip_min <= self.fill <= self.clip_max:
            raise invalid("fill", f"a value in [{self.clip_min:g}, {self.clip_max:g}]", fill)

    def positions(self, height: int, width: int) -> tuple[np.ndarray, int, int]:
        patch = min(self.patch_size, height, width)
        rows, cols = _starts(height, patch, self.stride), _starts(width, patch, self.stride)
        return np.array([(r, c) for r in rows for c in cols], dtype="int64"), len(rows), len(cols)

    def __call__(self, x: ArrayLike, label: int | None = None,
                 batched: bool = True) -> OcclusionResult:
        """Occludes one image at every position.

        Args:
          x: one image (H, W, C), or a batch holding one image, in the model's input space.
          label: the true class; ``None`` uses the model's prediction on the clean image.
          batched: evaluate ``batch_size`` positions per forward pass (False: one forward
            per position, kept for the benchmark and the equality test).

        Returns:
          OcclusionResult.
        """
        x = self.images(x)
        if len(x) != 1:
            raise invalid("x", "one image (H, W, C)", f"a batch of {len(x)} images")
        label = None if label is None else int(self.classes(x, np.ravel(label), "label")[0])
        x = x[0]
        h, w = x.shape[:2]
        base = _model.softmax(self.resolved.logits(x[None]))[0]
        label = int(base.argmax()) if label is None else label
        positions, nr, nc = self.positions(h, w)
        patch = min(self.patch_size, h, w)
        step = self.batch_size if batched else 1
        probs = []
        for i in range(0, len(positions), step):
            batch = occlude(x, positions[i : i + step], patch, self.fill)
            probs.append(_model.softmax(self.resolved.logits(batch, batch_size=step)))
        probs = np.concatenate(probs)
        true_prob = probs[:, label].astype("float32")
        return OcclusionResult(
            heatmap=true_prob.reshape(nr, nc),
            positions=positions,
            true_prob=true_prob,
            predicted=probs.argmax(axis=-1),
            base_prob=float(base[label]),
            label=label,
            pixel_map=pixel_map(positions, true_prob, (h, w), patch, float(base[label])),
        )
