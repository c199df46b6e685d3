"""An inversion network: a small decoder trained to map a layer's features back to images.

W* = argmin_W sum_i ||x_i - f(phi(x_i), W)||^2 over training images, the classifier phi
frozen; reconstruction is then one forward pass (no optimization at test time).

References:
  Dosovitskiy, A. and Brox, T. Inverting Visual Representations with Convolutional
  Networks. CVPR 2016.
"""

import keras
import numpy as np
from numpy.typing import ArrayLike

from cnnvis_tf.checks import check_positive, check_positive_int
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import _model, embedding


def _decoder(feature_dim, image_shape, lo, hi, seed):
    """Dense -> (h/4, w/4, 32) -> two stride-2 transposed convs -> resize -> image."""
    h, w, c = image_shape
    h4, w4 = -(-h // 4), -(-w // 4)
    init = keras.initializers.GlorotUniform(seed=seed)
    inp = keras.Input((feature_dim,), name="features")
    z = keras.layers.Dense(256, activation="relu", kernel_initializer=init)(inp)
    z = keras.layers.Dense(h4 * w4 * 32, activation="relu", kernel_initializer=init)(z)
    z = keras.layers.Reshape((h4, w4, 32))(z)
    for filters in (32, 16):
        z = keras.layers.Conv2DTranspose(filters, 4, strides=2, padding="same",
                                         activation="relu", kernel_initializer=init)(z)
    if (4 * h4, 4 * w4) != (h, w):
        z = keras.layers.Resizing(h, w)(z)
    z = keras.layers.Conv2D(c, 3, padding="same", activation="sigmoid",
                            kernel_initializer=init)(z)
    out = keras.layers.Rescaling(hi - lo, offset=lo)(z)
    return keras.Model(inp, out, name="inversion_decoder")


class InversionNetwork(_model.Visualizer):
    """Learns to invert the features of ``layer`` (penultimate features by default).

    Args:
      model: any Keras classifier (frozen: only the decoder is trained).
      layer: the layer whose (flattened) output is inverted; ``None``: the penultimate.
      clip_min, clip_max: the model's input range (the decoder's output range).
      seed: seed of the decoder's initial weights and batch order.
    """

    def __init__(self, model: keras.Model, layer: str | None = None, *, clip_min: float = 0.0,
                 clip_max: float = 1.0, seed: int = 0):
        super().__init__(model, layer, clip_min=clip_min, clip_max=clip_max)
        self._features = embedding.Features(model, layer, clip_min=clip_min, clip_max=clip_max)
        self.seed, self.decoder = int(seed), None

    def fit(self, x: ArrayLike, epochs: int = 30, batch_size: int = 32,
            learning_rate: float = 2e-3) -> np.ndarray:
        """Trains the decoder on images ``x`` (mean squared error); returns the loss per
        epoch (float32)."""
        x = self.images(x)
        epochs = check_positive_int("epochs", epochs)
        batch_size = check_positive_int("batch_size", batch_size)
        feats = self._features(x)
        keras.utils.set_random_seed(self.seed)
        self.decoder = _decoder(feats.shape[1], x.shape[1:], self.clip_min, self.clip_max,
                                self.seed)
        self.decoder.compile(keras.optimizers.Adam(check_positive("learning_rate",
                                                                  learning_rate)), "mse")
        h = self.decoder.fit(feats, x, batch_size=batch_size, epochs=epochs, verbose=0)
        return np.asarray(h.history["loss"], "float32")

    def __call__(self, x: ArrayLike) -> np.ndarray:
        """Reconstructions (N, H, W, C) of images ``x`` from their features."""
        if self.decoder is None:
            raise InputError("The inversion network is not trained yet: call fit(x_train).")
        x = self.images(x)
        return np.asarray(self.decoder.predict(self._features(x), verbose=0), "float32")
