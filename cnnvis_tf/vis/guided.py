"""Guided backpropagation and deconvnet projections through custom ReLU gradients.

Both replace the backward pass of every ReLU (``tf.custom_gradient``), at any nesting depth,
while the model runs (hooks of :class:`~cnnvis_tf.vis._model.ResolvedModel`; the model is
not copied):

* vanilla gradient: ``dy * [x > 0]``
* deconvnet (Zeiler & Fergus): ``relu(dy)`` -- the forward mask is ignored
* guided backprop (Springenberg et al.): ``relu(dy) * [x > 0]``

References:
  Zeiler, M. D. and Fergus, R. Visualizing and Understanding Convolutional Networks.
  ECCV 2014.
  Springenberg, J. T. et al. Striving for Simplicity: The All Convolutional Net.
  ICLR workshop 2015.
"""

import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import _model


def _guided_relu(x):
    @tf.custom_gradient
    def fn(x):
        def grad(dy):
            return tf.nn.relu(dy) * tf.cast(x > 0, dy.dtype)

        return tf.nn.relu(x), grad

    return fn(x)


def _deconv_relu(x):
    @tf.custom_gradient
    def fn(x):
        def grad(dy):
            return tf.nn.relu(dy)

        return tf.nn.relu(x), grad

    return fn(x)


_RULES = {"guided": _guided_relu, "deconvnet": _deconv_relu}


class _ReluRuleVisualizer(_model.Visualizer):
    _rule = None

    def _signal(self, x, score_fn, layer=None):
        xt = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            logits, rec, _ = self.resolved.run(xt, [layer] if layer else [], rule=_RULES[self._rule])
            score = score_fn(rec[layer] if layer else logits)
        return tape.gradient(score, xt).numpy()

    def __call__(self, x: ArrayLike, classes: ArrayLike | None = None, layer: str | None = None,
                 channel: int | None = None,
                 position: tuple[int, int] | None = None) -> np.ndarray:
        """Projects a class score, a feature map or one neuron back to the input.

        Args:
          x: images (N, H, W, C) or one image in the model's input space.
          classes: class per image when ``layer`` is None; ``None`` uses the prediction.
          layer: name of any layer to project from instead of the class score.
          channel: feature map / unit index of ``layer`` (``None``: the whole layer).
          position: (row, col) of one neuron in the feature map (``None``: the whole map).

        Returns:
          float32 (N, H, W, C) signed input-space signal.
        """
        x = self.images(x)
        if layer is None:
            classes = self.classes(x, classes)
            return self._signal(
                x, lambda out: tf.gather(out, classes, axis=1, batch_dims=1))
        self.resolved.get(layer)
        return self._signal(x, _selector(self.resolved.shapes[layer], channel, position), layer)

    def project(self, x, layer):
        """Projects each image's own activations of ``layer`` back to the input (the
        deconvnet reconstruction of a whole layer); returns (N, H, W, C)."""
        x = self.images(x)
        self.resolved.get(layer)
        return self._signal(x, lambda act: tf.reduce_sum(act * tf.stop_gradient(act)), layer)


def _selector(shape, channel, position):
    if channel is None:
        return lambda out: tf.reduce_sum(out)
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not (
            0 <= int(channel) < int(shape[-1])):
        raise InputError(f"channel={channel} is out of range; the layer has {shape[-1]} units.")
    if position is None:
        return lambda out: tf.reduce_sum(out[..., int(channel)])
    if len(shape) != 3:
        raise InputError("position=(row, col) needs a layer with spatial output (a conv layer).")
    r, c = (int(v) for v in position)
    if not (0 <= r < shape[0] and 0 <= c < shape[1]):
        raise InputError(f"position={position} is outside the {shape[0]}x{shape[1]} map.")
    return lambda out: tf.reduce_sum(out[:, r, c, int(channel)])


class GuidedBackprop(_ReluRuleVisualizer):
    """Guided backpropagation (Springenberg et al. 2015).

    Args:
      model: any Keras classifier whose ReLUs are layers or ``activation="relu"``.
      clip_min, clip_max: the model's input range.

    Raises:
      InputError: (when called) if the model has no ReLU the rule can replace.
    """

    _rule = "guided"


class Deconvnet(_ReluRuleVisualizer):
    """Deconvnet projection (Zeiler & Fergus 2014); arguments as GuidedBackprop."""

    _rule = "deconvnet"


def strongest_channel(vis, x, layer, channel=None):
    """``channel`` if given, else the feature map of ``layer`` most active on image ``x``
    (``vis`` is any :class:`~cnnvis_tf.vis._model.Visualizer`)."""
    if channel is not None:
        return int(channel)
    acts = vis.resolved.predict(vis.images(x), [layer])[0]
    return int(acts.reshape(-1, acts.shape[-1]).max(axis=0).argmax())


def to_image(signal: ArrayLike) -> np.ndarray:
    """Scales a signed (H, W, C) signal to [0, 1] for display (0 maps to 0.5)."""
    s = np.asarray(signal, dtype="float32")
    m = float(np.abs(s).max()) or 1.0
    return 0.5 + 0.5 * s / m
