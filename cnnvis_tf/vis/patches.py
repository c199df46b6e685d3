"""Maximally activating image patches, cropped to each unit's receptive field.

References:
  Girshick, R. et al. Rich feature hierarchies for accurate object detection and semantic
  segmentation. CVPR 2014 (maximally activating regions of a unit).
  Zeiler, M. D. and Fergus, R. Visualizing and Understanding Convolutional Networks.
  ECCV 2014 (top-9 patches per feature map).
"""

import dataclasses
from collections.abc import Sequence

import keras
import numpy as np
from numpy.typing import ArrayLike

from cnnvis_tf.checks import check_labels, check_positive_int
from cnnvis_tf.vis import _model


@dataclasses.dataclass
class ReceptiveField:
    """Receptive field of one unit: ``size`` pixels, units ``jump`` pixels apart, the
    centre of unit 0 at pixel ``start``."""

    size: float
    jump: float
    start: float

    def box(self, row: int, col: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(r0, r1, c0, c1) input box of unit (row, col), clipped to the image."""
        half = (self.size - 1) / 2.0
        cr, cc = self.start + row * self.jump, self.start + col * self.jump
        r0, c0 = int(np.ceil(cr - half)), int(np.ceil(cc - half))
        r1, c1 = int(np.floor(cr + half)) + 1, int(np.floor(cc + half)) + 1
        return max(r0, 0), min(r1, height), max(c0, 0), min(c1, width)


def _layer_rf(layer, rf):
    kernel = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None)
    if kernel is None:
        return rf
    k = int(kernel[0])
    s = int((getattr(layer, "strides", None) or (1,))[0])
    d = int((getattr(layer, "dilation_rate", None) or (1,))[0])
    k = d * (k - 1) + 1
    pad = (k - 1) / 2.0 if getattr(layer, "padding", "valid") == "same" else 0.0
    return ReceptiveField(rf.size + (k - 1) * rf.jump, rf.jump * s,
                          rf.start + ((k - 1) / 2.0 - pad) * rf.jump)


def receptive_field(model: keras.Model, layer: str) -> ReceptiveField:
    """Receptive field of the units of ``layer`` (conv / pooling arithmetic along the layers
    in call order, following which layer feeds which; at merges the largest field is kept).

    ``model`` is any Keras classifier or a :class:`~cnnvis_tf.vis._model.ResolvedModel`.
    """
    r = model if isinstance(model, _model.ResolvedModel) else _model.ResolvedModel(
        model, "receptive_field")
    r.get(layer)
    fields, prev = {}, ReceptiveField(1.0, 1.0, 0.0)
    for key in r.order:
        known = [fields[k] for k in r.inputs_of[key] if k in fields]
        if not r.inputs_of[key] or any(k is None for k in r.inputs_of[key]):
            known.append(ReceptiveField(1.0, 1.0, 0.0) if not fields else prev)
        fields[key] = prev = _layer_rf(r.layers[key], max(known, key=lambda f: f.size))
        if key == layer:
            break
    return fields[layer]


def top_patches(model: keras.Model, x: ArrayLike, layer: str,
                channels: Sequence[int] | None = None, k: int = 9, batch_size: int = 256, *,
                clip_min: float = 0.0, clip_max: float = 1.0) -> dict:
    """The ``k`` input patches that most activate each channel of ``layer``.

    Each image counts once per channel (its strongest position); the patch is the unit's
    receptive field, padded with NaN where it leaves the image.

    Args:
      model: any Keras classifier.
      x: images (N, H, W, C).
      layer: a layer with spatial output (conv, pooling, activation of a conv).
      channels: channel indices (``None``: the first 8).
      k: patches per channel.

    Returns:
      dict with ``patches`` (len(channels), k, s, s, C) float32 (NaN outside the image),
      ``activations`` (len(channels), k), ``indices`` image index and ``positions``
      (len(channels), k, 2), ``channels`` and ``rf_size``.
    """
    vis = _model.Visualizer(model, layer, clip_min=clip_min, clip_max=clip_max)
    r = vis.resolved
    _model.spatial_layer(r, layer, "top_patches")
    x = vis.images(x)
    k = check_positive_int("k", k)
    n_ch = int(r.shapes[layer][-1])
    channels = list(range(min(8, n_ch))) if channels is None else channels
    channels = check_labels(np.atleast_1d(channels), np.size(channels), n_ch,
                            name="channels").tolist()
    acts = r.predict(x, [layer], batch_size=batch_size)[0][..., channels]
    n, h, w, _ = acts.shape
    flat = acts.reshape(n, h * w, len(channels))
    best_pos, best_val = flat.argmax(axis=1), flat.max(axis=1)  # (n, ch)
    k = min(k, n)
    rf = receptive_field(r, layer)
    size = int(np.ceil(rf.size))
    H, W = x.shape[1:3]
    out = np.full((len(channels), k, size, size, x.shape[-1]), np.nan, dtype="float32")
    idx = np.argsort(-best_val, axis=0)[:k].T  # (ch, k)
    pos = np.zeros((len(channels), k, 2), dtype="int64")
    for ci in range(len(channels)):
        for j, i in enumerate(idx[ci]):
            r, c = divmod(int(best_pos[i, ci]), w)
            pos[ci, j] = (r, c)
            r0, r1, c0, c1 = rf.box(r, c, H, W)
            half = (rf.size - 1) / 2.0
            top = r0 - int(np.ceil(rf.start + r * rf.jump - half))
            left = c0 - int(np.ceil(rf.start + c * rf.jump - half))
            out[ci, j, top : top + r1 - r0, left : left + c1 - c0] = x[i, r0:r1, c0:c1]
    vals = np.take_along_axis(best_val.T, idx, axis=1)
    return {"patches": out, "activations": vals, "indices": idx, "positions": pos,
            "channels": np.asarray(channels), "rf_size": size}
