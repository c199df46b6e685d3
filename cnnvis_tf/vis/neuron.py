"""The gradient of one intermediate neuron w.r.t. the image, and the slides' L2 class model.

References:
  Zeiler, M. D. and Fergus, R. Visualizing and Understanding Convolutional Networks.
  ECCV 2014 (one neuron's gradient: all upstream gradients zero except a single 1).
  Simonyan, K., Vedaldi, A. and Zisserman, A. Deep Inside Convolutional Networks:
  Visualising Image Classification Models and Saliency Maps. ICLR workshop 2014
  (class model: argmax_x S_c(x) - lambda ||x||_2^2 from the zero image).
"""

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from cnnvis_tf.checks import (
    check_labels,
    check_nonneg,
    check_positive,
    check_positive_int,
    invalid,
)
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import _model


class NeuronGradient(_model.Visualizer):
    """d a / d x for one neuron ``a`` of ``layer``: a channel at one (row, col) position of a
    spatial layer, or one unit of a flat layer.

    Args:
      model: any Keras classifier.
      layer: the layer holding the neuron (``None``: the last convolution's activation).
      clip_min, clip_max: the model's input range.
    """

    def __init__(self, model: keras.Model, layer: str | None = None, *, clip_min: float = 0.0,
                 clip_max: float = 1.0):
        super().__init__(model, layer, clip_min=clip_min, clip_max=clip_max)
        r = self.resolved
        self.layer = layer or r.activation_layer(r.last_conv_layer())
        self.shape = r.shapes[self.layer]

    def activations(self, x: ArrayLike) -> np.ndarray:
        """The numpy output of ``layer`` for images ``x``."""
        return self.resolved.predict(self.images(x), [self.layer])[0]

    def locate(self, x: ArrayLike,
               channel: int | None = None) -> tuple[int, tuple[int, ...] | None]:
        """(channel, position) of the default neuron for the first image of ``x``: the
        channel with the largest activation (unless given), at its maximum (``None`` for a
        flat layer)."""
        a = self.activations(x)[0]
        if channel is None:
            flat = a.reshape(-1, a.shape[-1]).max(axis=0)
            channel = int(np.argmax(flat))
        channel = self._channel(channel)
        if a.ndim == 1:
            return channel, None
        return channel, tuple(int(v) for v in np.unravel_index(np.argmax(a[..., channel]),
                                                               a.shape[:-1]))

    def _channel(self, channel):
        n = int(self.shape[-1])
        if not isinstance(channel, (int, np.integer)) or not 0 <= channel < n:
            raise InputError(f"Invalid value received for argument `channel`. Expected an "
                             f"integer in [0, {n - 1}] ({self.layer} has {n} channels). "
                             f"Received: channel={channel!r}")
        return int(channel)

    def _position(self, position):
        spatial = self.shape[:-1]
        if not spatial:
            if position is not None:
                raise InputError(f"Layer {self.layer!r} is flat: pass no position.")
            return ()
        pos = tuple(position or ())
        if len(pos) != len(spatial) or any(
                not 0 <= int(p) < s for p, s in zip(pos, spatial)):
            raise InputError(f"Invalid value received for argument `position`. Expected "
                             f"(row, col) inside {tuple(spatial)} of {self.layer!r}. "
                             f"Received: position={position!r}")
        return tuple(int(p) for p in pos)

    def __call__(self, x: ArrayLike, channel: int,
                 position: tuple[int, int] | None = None) -> np.ndarray:
        """Gradients of the neuron (``channel`` at ``position``) w.r.t. images ``x``.

        Args:
          x: images (N, H, W, C) or one image.
          channel: channel (unit) index of ``layer``.
          position: (row, col) in the layer's output grid; required for spatial layers.

        Returns:
          float32 (N, H, W, C) gradients (one per image).
        """
        xt = tf.convert_to_tensor(self.images(x))
        onehot = np.zeros((1,) + tuple(self.shape), "float32")  # the upstream gradient: a 1
        onehot[(0,) + self._position(position) + (self._channel(channel),)] = 1.0
        with tf.GradientTape() as tape:
            tape.watch(xt)
            _, rec, _ = self.resolved.run(xt, [self.layer])
            neuron = tf.reduce_sum(rec[self.layer] * onehot)
        return tape.gradient(neuron, xt).numpy().astype("float32")


class L2ClassModel(_model.Visualizer):
    """Class models from the zero image by gradient ascent on S_c(x) - lambda ||x||^2.

    ``S_c`` is the class logit (softmax skipped), ``x`` is kept in the input range.

    Args:
      model: any Keras classifier.
      clip_min, clip_max: the model's input range (zero is clipped into it).
    """

    def __init__(self, model: keras.Model, *, clip_min: float = 0.0, clip_max: float = 1.0):
        super().__init__(model, clip_min=clip_min, clip_max=clip_max)
        self.net = self.resolved.keras_model()

    def objective(self, x, classes, l2_weight):
        """(S_c(x), S_c(x) - l2_weight * ||x||^2) per image."""
        logits = self.net(tf.convert_to_tensor(x), training=False)
        s = tf.gather(logits, classes, axis=1, batch_dims=1)
        norm = tf.reduce_sum(tf.reshape(tf.square(x), (tf.shape(x)[0], -1)), axis=1)
        return s, s - l2_weight * norm

    def __call__(self, classes: Sequence[int], steps: int = 100, l2_weight: float = 0.01,
                 learning_rate: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """Optimizes one image per class (Adam, all in one batch).

        Args:
          classes: class indices.
          steps: gradient steps.
          l2_weight: lambda of the L2 penalty.
          learning_rate: Adam step size in input units.

        Returns:
          (images, history): float32 (N, H, W, C) and (steps + 1, N) regularized objective
          per image, the first row at the zero image.
        """
        c = np.atleast_1d(np.asarray(classes))
        if c.ndim != 1 or not len(c):
            raise invalid("classes", "a non-empty list of class indices", classes)
        c = check_labels(c, len(c), self.resolved.num_classes, name="classes")
        steps = check_positive_int("steps", steps)
        l2_weight = check_nonneg("l2_weight", l2_weight)
        learning_rate = check_positive("learning_rate", learning_rate)
        shape = (len(c),) + tuple(self.resolved.input_shape)
        zero = np.clip(np.zeros(shape, "float32"), self.clip_min, self.clip_max)
        var = tf.Variable(zero)
        ct = tf.constant(c, tf.int64)
        opt = keras.optimizers.Adam(learning_rate)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                _, obj = self.objective(var, ct, l2_weight)
                loss = -tf.reduce_sum(obj)
            opt.apply_gradients([(tape.gradient(loss, var), var)])
            var.assign(tf.clip_by_value(var, self.clip_min, self.clip_max))
            return obj

        history = [step().numpy() for _ in range(steps)]
        history.append(self.objective(var, ct, l2_weight)[1].numpy())
        return var.numpy(), np.asarray(history, dtype="float32")
