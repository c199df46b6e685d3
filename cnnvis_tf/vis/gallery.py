"""A gallery of test images with their true and predicted labels (seed 001, Fig. 2)."""

import numpy as np
from numpy.typing import ArrayLike

from cnnvis_tf.checks import check_labels
from cnnvis_tf.vis import _model


class Gallery(_model.Visualizer):
    """Predictions of the model for a handful of images.

    Args:
      model: any Keras classifier.
      clip_min, clip_max: the model's input range.
    """

    def __call__(self, x: ArrayLike, y: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Classifies images ``x``.

        Args:
          x: images (N, H, W, C).
          y: optional true labels (N,), checked against the number of classes.

        Returns:
          (pred, prob): int64 (N,) predicted classes and float32 (N,) their softmax
          probabilities.
        """
        x = self.images(x)
        if y is not None:
            check_labels(y, len(x), self.resolved.num_classes)
        p = _model.softmax(self.resolved.logits(x).astype("float64"))
        pred = p.argmax(axis=-1)
        return pred.astype("int64"), p[np.arange(len(x)), pred].astype("float32")
