"""Occlusion sensitivity: slide a gray patch over the image and watch the class probability.

References:
  Zeiler, M. D. and Fergus, R. Visualizing and Understanding Convolutional Networks.
  ECCV 2014 (arXiv:1311.2901), Section 4.2.
"""

import dataclasses

import numpy as np

from cnnvis_tf.errors import InputError
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
    """

    heatmap: np.ndarray
    positions: np.ndarray
    true_prob: np.ndarray
    predicted: np.ndarray
    base_prob: float
    label: int

    def table(self):
        """Rows ``{"row", "col", "true_class_prob", "predicted_class"}`` per position."""
        return [
            {"row": int(r), "col": int(c), "true_class_prob": float(p), "predicted_class": int(k)}
            for (r, c), p, k in zip(self.positions, self.true_prob, self.predicted)
        ]


def _starts(size, patch, stride):
    if patch >= size:
        return [0]
    starts = list(range(0, size - patch + 1, stride))
    return starts


def occlude(x, positions, patch, fill):
    """Copies of one image ``x`` (H, W, C) with a ``patch``-sized square of ``fill`` at
    each (row, col) in ``positions``; returns (len(positions), H, W, C)."""
    out = np.repeat(x[None], len(positions), axis=0)
    for i, (r, c) in enumerate(positions):
        out[i, r : r + patch, c : c + patch, :] = fill
    return out


class Occlusion:
    """Occlusion sensitivity evaluated in batches of patch positions.

    Args:
      model: a Keras model outputting logits (a softmax head is handled).
      patch_size: side of the square patch in pixels (0 covers nothing: a sanity check).
      stride: step between patch positions in pixels.
      fill: value written into the patch (0.5 is gray for inputs in [0, 1]).
      batch_size: occluded images per forward pass.
    """

    def __init__(self, model, patch_size=14, stride=7, fill=0.5, batch_size=128):
        if int(patch_size) < 0 or int(stride) < 1:
            raise InputError(
                "Invalid value received for argument `patch_size`/`stride`. Expected "
                f"patch_size >= 0 and stride >= 1. Received: patch_size={patch_size}, "
                f"stride={stride}"
            )
        self.model = _model.logits_model(model)
        self.patch_size = int(patch_size)
        self.stride = int(stride)
        self.fill = float(fill)
        self.batch_size = int(batch_size)

    def positions(self, height, width):
        patch = min(self.patch_size, height, width)
        rows, cols = _starts(height, patch, self.stride), _starts(width, patch, self.stride)
        return np.array([(r, c) for r in rows for c in cols], dtype="int64"), len(rows), len(cols)

    def __call__(self, x, label=None, batched=True):
        """Occludes one image at every position.

        Args:
          x: one image (H, W, C) in the model's input space.
          label: the true class; ``None`` uses the model's prediction on the clean image.
          batched: evaluate ``batch_size`` positions per forward pass (False: one forward
            per position, kept for the benchmark and the equality test).

        Returns:
          OcclusionResult.
        """
        x = _model.as_batch(x, self.model)[0]
        h, w = x.shape[:2]
        base = _model.softmax(_model.predict(self.model, x[None]))[0]
        label = int(base.argmax()) if label is None else int(label)
        positions, nr, nc = self.positions(h, w)
        patch = min(self.patch_size, h, w)
        step = self.batch_size if batched else 1
        probs = []
        for i in range(0, len(positions), step):
            batch = occlude(x, positions[i : i + step], patch, self.fill)
            probs.append(_model.softmax(_model.predict(self.model, batch, batch_size=step)))
        probs = np.concatenate(probs)
        true_prob = probs[:, label].astype("float32")
        return OcclusionResult(
            heatmap=true_prob.reshape(nr, nc),
            positions=positions,
            true_prob=true_prob,
            predicted=probs.argmax(axis=-1),
            base_prob=float(base[label]),
            label=label,
        )
