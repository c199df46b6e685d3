"""Weakly supervised segmentation: GrabCut seeded by a thresholded saliency map.

References:
  Simonyan, K., Vedaldi, A. and Zisserman, A. Deep Inside Convolutional Networks:
  Visualising Image Classification Models and Saliency Maps. ICLR workshop 2014, Sec. 3.2
  (foreground seeds above the 95% saliency quantile, background below the 30% one).
  Rother, C., Kolmogorov, V. and Blake, A. "GrabCut": Interactive Foreground Extraction
  using Iterated Graph Cuts. SIGGRAPH 2004 (OpenCV ``cv2.grabCut``).
"""

import cv2
import keras
import numpy as np
from numpy.typing import ArrayLike

from cnnvis_tf.checks import check_fraction, check_positive_int, invalid
from cnnvis_tf.vis import _model, saliency


def _to_uint8_rgb(img, lo, hi):
    a = np.clip((np.asarray(img, "float64") - lo) / ((hi - lo) or 1.0), 0.0, 1.0)
    a = np.round(255 * a).astype("uint8")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    elif a.shape[-1] != 3:
        a = np.repeat(a.mean(axis=-1, keepdims=True).astype("uint8"), 3, axis=-1)
    return np.ascontiguousarray(a)


def seed_mask(sal: ArrayLike, fg_quantile: float = 0.95, bg_quantile: float = 0.3) -> np.ndarray:
    """GrabCut mask from one saliency map: sure foreground above the ``fg_quantile``, sure
    background below the ``bg_quantile``; between them probable foreground above the median
    and probable background below it."""
    s = np.asarray(sal, "float64")
    hi, med, lo = np.quantile(s, [fg_quantile, 0.5, bg_quantile])
    mask = np.where(s >= med, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype("uint8")
    mask[s <= lo] = cv2.GC_BGD
    mask[s >= hi] = cv2.GC_FGD
    return mask


class SaliencyGrabCut(_model.Visualizer):
    """Segments the object the class score depends on: saliency -> seeds -> GrabCut.

    Args:
      model: any Keras classifier.
      clip_min, clip_max: the model's input range.
    """

    def __init__(self, model: keras.Model, *, clip_min: float = 0.0, clip_max: float = 1.0):
        super().__init__(model, clip_min=clip_min, clip_max=clip_max)
        self._saliency = saliency.Saliency(model, clip_min=clip_min, clip_max=clip_max)

    def __call__(self, x: ArrayLike, classes: ArrayLike | None = None, fg_quantile: float = 0.95,
                 bg_quantile: float = 0.3, iterations: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Foreground masks of images ``x`` for ``classes`` (``None``: the prediction).

        Returns:
          (masks, saliency): bool (N, H, W) foreground and float32 (N, H, W) saliency maps.
        """
        x = self.images(x)
        fg = check_fraction("fg_quantile", fg_quantile, low_open=True, high_open=True)
        bg = check_fraction("bg_quantile", bg_quantile, low_open=True, high_open=True)
        if bg >= fg:
            raise invalid("bg_quantile", f"a quantile below fg_quantile={fg}", bg_quantile)
        iterations = check_positive_int("iterations", iterations)
        maps = self._saliency(x, classes)
        masks = np.zeros(maps.shape, bool)
        for i, (img, sal) in enumerate(zip(x, maps)):
            mask = seed_mask(sal, fg, bg)
            bgd, fgd = np.zeros((1, 65), "float64"), np.zeros((1, 65), "float64")
            cv2.grabCut(_to_uint8_rgb(img, self.clip_min, self.clip_max), mask, None, bgd, fgd,
                        iterations, cv2.GC_INIT_WITH_MASK)
            masks[i] = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        return masks, maps
