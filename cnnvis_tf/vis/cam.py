"""Class activation maps: Grad-CAM, Grad-CAM++ and Score-CAM.

The maps are computed here from the feature maps ``A`` (N, h, w, K) of one layer and the
class logits, both read in one hooked pass (:class:`~cnnvis_tf.vis._model.ResolvedModel`),
so every model type works; they are then upsampled bilinearly to the input size.

References:
  Selvaraju, R. R. et al. Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization. ICCV 2017.
  Chattopadhyay, A. et al. Grad-CAM++: Improved Visual Explanations for Deep Convolutional
  Networks. WACV 2018.
  Wang, H. et al. Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
  Networks. CVPR workshops 2020.
"""

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from cnnvis_tf.checks import check_positive_int
from cnnvis_tf.vis import _model


def upsample(maps: ArrayLike, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (N, h, w[, K]) maps to ``size`` (H, W)."""
    maps = tf.convert_to_tensor(maps, tf.float32)
    squeeze = len(maps.shape) == 3
    out = tf.image.resize(maps[..., None] if squeeze else maps, size, "bilinear")
    return (out[..., 0] if squeeze else out).numpy()


def normalize(maps: ArrayLike) -> np.ndarray:
    """Each map scaled to [0, 1] (an all-constant map becomes 0)."""
    maps = np.asarray(maps, "float32")
    lo = maps.min(axis=tuple(range(1, maps.ndim)), keepdims=True)
    hi = maps.max(axis=tuple(range(1, maps.ndim)), keepdims=True)
    return (maps - lo) / np.maximum(hi - lo, 1e-7)


class _Cam(_model.Visualizer):
    def _resolve_layer(self, layer):
        r = self.resolved
        name = r.last_spatial_layer() if layer is None else layer
        r.get(name)
        return _model.spatial_layer(r, name, type(self).__name__)

    def __call__(self, x: ArrayLike, classes: ArrayLike | None = None,
                 normalize: bool = True) -> np.ndarray:
        """Class activation maps.

        Args:
          x: images (N, H, W, C) or one image in the model's input space.
          classes: class per image; ``None`` uses the model's prediction.
          normalize: scale each map to [0, 1].

        Returns:
          float32 (N, H, W) maps upsampled to the input size.
        """
        x = self.images(x)
        classes = self.classes(x, classes)
        cam = self.low_res(x, classes)
        cam = upsample(cam, x.shape[1:3])
        return _normalize(cam) if normalize else cam.astype("float32")

    def _grads(self, x, classes):
        xt = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            logits, rec, _ = self.resolved.run(xt, [self.layer])
            score = tf.gather(logits, classes, axis=1, batch_dims=1)
        acts = rec[self.layer]
        return np.asarray(acts), tape.gradient(score, acts).numpy()


_normalize = normalize


class GradCAM(_Cam):
    """Grad-CAM: ReLU of the feature maps weighted by their average class gradient.

    Args:
      model: any Keras classifier.
      layer: layer to read; ``None`` is the last spatial layer (rectified, pooled maps of
        the last conv; the pre-ReLU conv output often gives an all-zero CAM).
      clip_min, clip_max: the model's input range.
    """

    def low_res(self, x: ArrayLike, classes: ArrayLike) -> np.ndarray:
        """(N, h, w) maps at the layer's resolution (Selvaraju et al. Eq. 1-2)."""
        a, g = self._grads(x, classes)
        w = g.mean(axis=(1, 2), keepdims=True)
        return np.maximum((w * a).sum(axis=-1), 0.0)


class GradCAMPlusPlus(_Cam):
    """Grad-CAM++: pixel-weighted positive gradients (same arguments as GradCAM)."""

    def low_res(self, x: ArrayLike, classes: ArrayLike) -> np.ndarray:
        """(N, h, w) maps (Chattopadhyay et al. Eq. 19 with the exponential score; its
        positive factor exp(S_c) only scales each map and is dropped)."""
        a, g = self._grads(x, classes)
        g2, g3 = g**2, g**3
        denom = 2.0 * g2 + a.sum(axis=(1, 2), keepdims=True) * g3
        alpha = np.where(denom != 0, g2 / np.where(denom != 0, denom, 1.0), 0.0)
        w = (alpha * np.maximum(g, 0.0)).sum(axis=(1, 2), keepdims=True)
        return np.maximum((w * a).sum(axis=-1), 0.0)


class ScoreCAM(_Cam):
    """Score-CAM: feature maps weighted by the softmax score of the class on the image
    masked by each (upsampled, [0, 1]-normalized) map.

    The softmax is applied once, to the logits (a softmax head of the model is removed).

    Args:
      model: any Keras classifier.
      layer: as for GradCAM.
      batch_size: masked images per forward pass.
      clip_min, clip_max: the model's input range.
    """

    def __init__(self, model: keras.Model, layer: str | None = None, batch_size: int = 64, *,
                 clip_min: float = 0.0, clip_max: float = 1.0):
        self.batch_size = check_positive_int("batch_size", batch_size)
        super().__init__(model, layer, clip_min=clip_min, clip_max=clip_max)

    def low_res(self, x: ArrayLike, classes: ArrayLike) -> np.ndarray:
        """(N, h, w) maps: ReLU(sum_k w_k A_k), w_k = softmax(f(x * M_k))_c (Wang et al.
        Eq. 4-6)."""
        acts = self.resolved.predict(x, [self.layer])[0]
        out = np.zeros(acts.shape[:3], "float32")
        for i, (img, a, c) in enumerate(zip(x, acts, classes)):
            masks = normalize(np.moveaxis(upsample(a[None], x.shape[1:3])[0], -1, 0))
            masked = img[None] * masks[..., None]  # (K, H, W, C)
            probs = _model.softmax(self.resolved.logits(masked, self.batch_size))
            out[i] = np.maximum((a * probs[:, c]).sum(axis=-1), 0.0)
        return out
