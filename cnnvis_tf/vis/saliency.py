"""Gradient attributions: vanilla saliency, SmoothGrad (tf-keras-vis) and integrated gradients.

References:
  Simonyan, K., Vedaldi, A. and Zisserman, A. Deep Inside Convolutional Networks:
  Visualising Image Classification Models and Saliency Maps. ICLR workshop 2014.
  Smilkov, D. et al. SmoothGrad: removing noise by adding noise. arXiv:1706.03825, 2017.
  Sundararajan, M., Taly, A. and Yan, Q. Axiomatic Attribution for Deep Networks. ICML 2017.
"""

import warnings

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike
from tf_keras_vis.saliency import Saliency as _TkvSaliency
from tf_keras_vis.utils.scores import CategoricalScore

from cnnvis_tf.checks import check_nonneg, check_positive_int, invalid
from cnnvis_tf.vis import _model


class Saliency(_model.Visualizer):
    """Vanilla saliency: max over channels of |d score_c / d x| (tf-keras-vis ``Saliency``).

    Args:
      model: any Keras classifier (see :class:`~cnnvis_tf.vis._model.Visualizer`).
      clip_min, clip_max: the model's input range.
    """

    smooth_samples = 0

    def __init__(self, model: keras.Model, *, clip_min: float = 0.0, clip_max: float = 1.0):
        super().__init__(model, clip_min=clip_min, clip_max=clip_max)
        self._vis = _TkvSaliency(self.resolved.keras_model(), clone=False)

    def __call__(self, x: ArrayLike, classes: ArrayLike | None = None,
                 smooth_samples: int | None = None, noise: float = 0.2,
                 seed: int = 0) -> np.ndarray:
        """Saliency maps.

        Args:
          x: images (N, H, W, C) or one image in the model's input space.
          classes: class per image; ``None`` uses the model's prediction.
          smooth_samples: noisy copies averaged (SmoothGrad); 0 is vanilla saliency.
          noise: SmoothGrad noise std as a fraction of each image's value range.
          seed: seed of the SmoothGrad noise (the global NumPy state is restored after).

        Returns:
          float32 (N, H, W) maps, not normalized.
        """
        x = self.images(x)
        classes = self.classes(x, classes)
        samples = self.smooth_samples if smooth_samples is None else smooth_samples
        samples = 0 if samples == 0 else check_positive_int("smooth_samples", samples)
        noise = check_nonneg("noise", noise)
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                maps = self._vis(
                    CategoricalScore(classes.tolist()),
                    x,
                    smooth_samples=samples,
                    smooth_noise=noise,
                    normalize_map=False,
                )
        finally:
            np.random.set_state(state)
        return np.asarray(maps, dtype="float32")


class SmoothGrad(Saliency):
    """SmoothGrad: saliency averaged over noisy copies (default 20 samples, noise 0.2)."""

    smooth_samples = 20


def gradients(resolved, x, classes):
    """d logit_c / d x for each image (N, H, W, C); the maths behind all gradient maps."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = resolved.run(x)[0]
        score = tf.gather(logits, classes, axis=1, batch_dims=1)
    return tape.gradient(score, x).numpy()


class IntegratedGradients(_model.Visualizer):
    """Integrated gradients along the straight path from a baseline, batched over steps.

    Args:
      model: any Keras classifier.
      steps: interpolation steps (trapezoidal rule over ``steps + 1`` points).
      batch_size: interpolated images per forward/backward pass.
      clip_min, clip_max: the model's input range.
    """

    def __init__(self, model: keras.Model, steps: int = 32, batch_size: int = 128, *,
                 clip_min: float = 0.0, clip_max: float = 1.0):
        self.steps = check_positive_int("steps", steps)
        self.batch_size = check_positive_int("batch_size", batch_size)
        super().__init__(model, clip_min=clip_min, clip_max=clip_max)

    def __call__(self, x: ArrayLike, classes: ArrayLike | None = None,
                 baseline: float | ArrayLike = 0.0) -> np.ndarray:
        """Attributions (x - x') * mean gradient on the path.

        Args:
          x: images (N, H, W, C) or one image.
          classes: class per image; ``None`` uses the model's prediction.
          baseline: scalar or array broadcastable to one image (default black).

        Returns:
          float32 (N, H, W, C) attributions; their sum approximates
          ``logit_c(x) - logit_c(baseline)`` (completeness).
        """
        x = self.images(x)
        classes = self.classes(x, classes)
        try:
            base = np.broadcast_to(np.asarray(baseline, "float32"), x.shape[1:])
        except ValueError as e:
            raise invalid("baseline", f"a number or an array broadcastable to {x.shape[1:]}",
                          f"array of shape {np.shape(baseline)}") from e
        if not np.all(np.isfinite(base)):
            raise invalid("baseline", "finite values", baseline)
        alphas = np.linspace(0.0, 1.0, self.steps + 1, dtype="float32")
        weights = np.full(self.steps + 1, 1.0 / self.steps, dtype="float32")
        weights[[0, -1]] *= 0.5
        out = np.zeros_like(x)
        for i, (img, c) in enumerate(zip(x, classes)):
            path = base[None] + alphas[:, None, None, None] * (img - base)[None]
            grads = np.concatenate([
                gradients(self.resolved, path[j : j + self.batch_size],
                          np.full(len(path[j : j + self.batch_size]), c))
                for j in range(0, len(path), self.batch_size)
            ])
            out[i] = (img - base) * np.tensordot(weights, grads, axes=1)
        return out
