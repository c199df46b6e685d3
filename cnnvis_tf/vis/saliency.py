"""Gradient attributions: vanilla saliency, SmoothGrad (tf-keras-vis) and integrated gradients.

References:
  Simonyan, K., Vedaldi, A. and Zisserman, A. Deep Inside Convolutional Networks:
  Visualising Image Classification Models and Saliency Maps. ICLR workshop 2014.
  Smilkov, D. et al. SmoothGrad: removing noise by adding noise. arXiv:1706.03825, 2017.
  Sundararajan, M., Taly, A. and Yan, Q. Axiomatic Attribution for Deep Networks. ICML 2017.
"""

import warnings

import numpy as np
import tensorflow as tf
from tf_keras_vis.saliency import Saliency as _TkvSaliency
from tf_keras_vis.utils.scores import CategoricalScore

from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import _model


class Saliency:
    """Vanilla saliency: max over channels of |d score_c / d x| (tf-keras-vis ``Saliency``).

    Args:
      model: any Keras model (Sequential and softmax-headed models are converted).
    """

    smooth_samples = 0

    def __init__(self, model):
        self.model = _model.logits_model(model)
        self._vis = _TkvSaliency(self.model, clone=False)

    def __call__(self, x, classes=None, smooth_samples=None, noise=0.2, seed=0):
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
        x = _model.as_batch(x, self.model)
        classes = _model.resolve_classes(self.model, x, classes)
        samples = self.smooth_samples if smooth_samples is None else int(smooth_samples)
        if samples < 0:
            raise InputError(f"smooth_samples must be >= 0. Received: {samples}")
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


def gradients(model, x, classes):
    """d logit_c / d x for each image (N, H, W, C); the maths behind all gradient maps."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = model(x, training=False)
        score = tf.gather(logits, classes, axis=1, batch_dims=1)
    return tape.gradient(score, x).numpy()


class IntegratedGradients:
    """Integrated gradients along the straight path from a baseline, batched over steps.

    Args:
      model: any Keras model.
      steps: interpolation steps (trapezoidal rule over ``steps + 1`` points).
      batch_size: interpolated images per forward/backward pass.
    """

    def __init__(self, model, steps=32, batch_size=128):
        if int(steps) < 1:
            raise InputError(f"Invalid value received for argument `steps`. Expected >= 1. "
                             f"Received: steps={steps}")
        self.model = _model.logits_model(model)
        self.steps = int(steps)
        self.batch_size = int(batch_size)

    def __call__(self, x, classes=None, baseline=0.0):
        """Attributions (x - x') * mean gradient on the path.

        Args:
          x: images (N, H, W, C) or one image.
          classes: class per image; ``None`` uses the model's prediction.
          baseline: scalar or array broadcastable to one image (default black).

        Returns:
          float32 (N, H, W, C) attributions; their sum approximates
          ``logit_c(x) - logit_c(baseline)`` (completeness).
        """
        x = _model.as_batch(x, self.model)
        classes = _model.resolve_classes(self.model, x, classes)
        alphas = np.linspace(0.0, 1.0, self.steps + 1, dtype="float32")
        weights = np.full(self.steps + 1, 1.0 / self.steps, dtype="float32")
        weights[[0, -1]] *= 0.5
        out = np.zeros_like(x)
        for i, (img, c) in enumerate(zip(x, classes)):
            base = np.broadcast_to(np.asarray(baseline, "float32"), img.shape)
            path = base[None] + alphas[:, None, None, None] * (img - base)[None]
            grads = np.concatenate([
                gradients(self.model, path[j : j + self.batch_size],
                          np.full(len(path[j : j + self.batch_size]), c))
                for j in range(0, len(path), self.batch_size)
            ])
            out[i] = (img - base) * np.tensordot(weights, grads, axes=1)
        return out
