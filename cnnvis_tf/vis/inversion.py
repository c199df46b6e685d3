"""Feature inversion with a total-variation prior, and DeepDream.

References:
  Mahendran, A. and Vedaldi, A. Understanding Deep Image Representations by Inverting
  Them. CVPR 2015.
  Mordvintsev, A., Olah, C. and Tyka, M. Inceptionism: Going Deeper into Neural Networks.
  Google Research blog, 2015 (DeepDream).
"""

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from cnnvis_tf.checks import check_positive_int, invalid
from cnnvis_tf.vis import _model


def total_variation(x: tf.Tensor, beta: float = 2.0) -> tf.Tensor:
    """Mean over pixels of (dx^2 + dy^2)^(beta/2) per image (Mahendran & Vedaldi Eq. 6)."""
    dx = x[:, :-1, :-1, :] - x[:, :-1, 1:, :]
    dy = x[:, :-1, :-1, :] - x[:, 1:, :-1, :]
    return tf.reduce_mean(tf.pow(dx**2 + dy**2 + 1e-8, beta / 2.0), axis=[1, 2, 3])


class FeatureInversion(_model.Visualizer):
    """Reconstructs an image from its features at ``layer``.

    Minimizes ||phi(x) - phi(x0)||^2 / ||phi(x0)||^2 + tv_weight * TV_beta(x) over x in the
    input range, starting from noise (Adam).

    Args:
      model: any Keras classifier.
      layer: name of the layer whose features are inverted.
      clip_min, clip_max: the model's input range.
    """

    def __init__(self, model: keras.Model, layer: str, clip_min: float = 0.0,
                 clip_max: float = 1.0):
        if layer is None:
            raise invalid("layer", "the name of a layer of the model", layer)
        super().__init__(model, layer, clip_min=clip_min, clip_max=clip_max)
        self.features = self.resolved.keras_model([layer], logits=False)

    def losses(self, x, target, tv_weight, beta=2.0):
        """(feature loss, total loss) per image for candidate images ``x``."""
        phi = self.features(x, training=False)
        axes = list(range(1, len(phi.shape)))
        feat = tf.reduce_sum((phi - target) ** 2, axis=axes) / (
            tf.reduce_sum(target**2, axis=axes) + 1e-8
        )
        return feat, feat + tv_weight * total_variation(x, beta)

    def __call__(self, x: ArrayLike, steps: int = 200, tv_weight: float = 0.05, beta: float = 2.0,
                 learning_rate: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Inverts the features of images ``x``.

        Returns:
          (images, history): float32 (N, H, W, C) reconstructions and (steps + 1, 2) mean
          feature loss and total loss, first row at the starting image.
        """
        x = self.images(x)
        steps = check_positive_int("steps", steps)
        target = self.features(x, training=False)
        rng = np.random.default_rng(seed)
        mid = 0.5 * (self.clip_min + self.clip_max)
        init = mid + 0.05 * (self.clip_max - self.clip_min) * rng.standard_normal(x.shape)
        var = tf.Variable(init.astype("float32"))
        opt = keras.optimizers.Adam(learning_rate)
        history = []
        for _ in range(steps):
            with tf.GradientTape() as tape:
                feat, total = self.losses(var, target, tv_weight, beta)
                loss = tf.reduce_sum(total)
            history.append([float(tf.reduce_mean(feat)), float(tf.reduce_mean(total))])
            opt.apply_gradients([(tape.gradient(loss, var), var)])
            var.assign(tf.clip_by_value(var, self.clip_min, self.clip_max))
        feat, total = self.losses(var, target, tv_weight, beta)
        history.append([float(tf.reduce_mean(feat)), float(tf.reduce_mean(total))])
        return var.numpy(), np.asarray(history, dtype="float32")


class DeepDream(_model.Visualizer):
    """Amplifies whatever ``layer`` sees: gradient ascent on mean(activation^2) / 2.

    Args:
      model: any Keras classifier.
      layer: name of the layer to amplify.
      clip_min, clip_max: the model's input range.
    """

    def __init__(self, model: keras.Model, layer: str, clip_min: float = 0.0,
                 clip_max: float = 1.0):
        if layer is None:
            raise invalid("layer", "the name of a layer of the model", layer)
        super().__init__(model, layer, clip_min=clip_min, clip_max=clip_max)
        self.features = self.resolved.keras_model([layer], logits=False)

    def objective(self, x):
        """mean(activation^2) / 2 per image."""
        phi = self.features(tf.convert_to_tensor(x), training=False)
        return 0.5 * tf.reduce_mean(tf.square(phi), axis=list(range(1, len(phi.shape))))

    def __call__(self, x: ArrayLike, steps: int = 20, step_size: float = 0.01, jitter: int = 1,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Dreams on images ``x`` with normalized gradient steps and random jitter.

        Returns:
          (images, objective): float32 (N, H, W, C) and (steps + 1,) mean objective.
        """
        x = tf.convert_to_tensor(self.images(x))
        steps = check_positive_int("steps", steps)
        rng = np.random.default_rng(seed)
        history = [float(tf.reduce_mean(self.objective(x)))]
        for _ in range(steps):
            dy, dx = (rng.integers(-jitter, jitter + 1, 2) if jitter else (0, 0))
            shifted = tf.roll(x, shift=[int(dy), int(dx)], axis=[1, 2])
            with tf.GradientTape() as tape:
                tape.watch(shifted)
                obj = tf.reduce_sum(self.objective(shifted))
            g = tape.gradient(obj, shifted)
            g = g / (tf.reduce_mean(tf.abs(g), axis=[1, 2, 3], keepdims=True) + 1e-8)
            x = tf.roll(shifted + step_size * g, shift=[-int(dy), -int(dx)], axis=[1, 2])
            x = tf.clip_by_value(x, self.clip_min, self.clip_max)
            history.append(float(tf.reduce_mean(self.objective(x))))
        return x.numpy(), np.asarray(history, dtype="float32")
