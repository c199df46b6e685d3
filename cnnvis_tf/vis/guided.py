"""Guided backpropagation and deconvnet projections through custom ReLU gradients.

Both replace the backward pass of every ReLU (``tf.custom_gradient``) in a weight-sharing
copy of the model:

* vanilla gradient: ``dy * [x > 0]``
* deconvnet (Zeiler & Fergus): ``relu(dy)`` -- the forward mask is ignored
* guided backprop (Springenberg et al.): ``relu(dy) * [x > 0]``

References:
  Zeiler, M. D. and Fergus, R. Visualizing and Understanding Convolutional Networks.
  ECCV 2014.
  Springenberg, J. T. et al. Striving for Simplicity: The All Convolutional Net.
  ICLR workshop 2015.
"""

import keras
import numpy as np
import tensorflow as tf

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


def _is_relu(fn):
    return fn is not None and getattr(fn, "__name__", "") == "relu"


def _plain_relu_layer(layer):
    return isinstance(layer, keras.layers.ReLU) and not (
        layer.max_value is not None or layer.negative_slope or layer.threshold
    )


def with_relu_rule(model, rule):
    """A copy of functional ``model`` whose ReLUs back-propagate with ``rule``.

    The copy has the model's weights (copied once); its forward pass is unchanged.
    """
    relu = _RULES[rule]

    def clone(layer):
        if _plain_relu_layer(layer) or (
            isinstance(layer, keras.layers.Activation) and _is_relu(layer.activation)
        ):
            return keras.layers.Activation(relu, name=layer.name)
        new = layer.__class__.from_config(layer.get_config())
        if _is_relu(getattr(new, "activation", None)):
            new.activation = relu
        return new

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


class _ReluRuleVisualizer:
    _rule = None

    def __init__(self, model):
        self.model = _model.logits_model(model)
        self._copy = with_relu_rule(self.model, self._rule)

    def __call__(self, x, classes=None, layer=None, channel=None, position=None):
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
        x = _model.as_batch(x, self.model)
        if layer is None:
            classes = _model.resolve_classes(self.model, x, classes)
            target = self._copy
            select = lambda out: tf.gather(out, classes, axis=1, batch_dims=1)  # noqa: E731
        else:
            target = keras.Model(self._copy.inputs[0], _model.get_layer(self._copy, layer).output)
            select = _selector(target.outputs[0].shape, channel, position)
        xt = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            score = select(target(xt, training=False))
        return tape.gradient(score, xt).numpy()

    def project(self, x, layer):
        """Projects each image's own activations of ``layer`` back to the input (the
        deconvnet reconstruction of a whole layer); returns (N, H, W, C)."""
        x = _model.as_batch(x, self.model)
        target = keras.Model(self._copy.inputs[0], _model.get_layer(self._copy, layer).output)
        xt = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            act = target(xt, training=False)
            score = tf.reduce_sum(act * tf.stop_gradient(act))
        return tape.gradient(score, xt).numpy()


def _selector(shape, channel, position):
    if channel is None:
        return lambda out: tf.reduce_sum(out)
    if not 0 <= int(channel) < int(shape[-1]):
        raise InputError(f"channel={channel} is out of range; the layer has {shape[-1]} units.")
    if position is None:
        return lambda out: tf.reduce_sum(out[..., int(channel)])
    if len(shape) != 4:
        raise InputError("position=(row, col) needs a layer with spatial output (a conv layer).")
    r, c = (int(v) for v in position)
    if not (0 <= r < shape[1] and 0 <= c < shape[2]):
        raise InputError(f"position={position} is outside the {shape[1]}x{shape[2]} map.")
    return lambda out: tf.reduce_sum(out[:, r, c, int(channel)])


class GuidedBackprop(_ReluRuleVisualizer):
    """Guided backpropagation (Springenberg et al. 2015).

    Args:
      model: any Keras model.
    """

    _rule = "guided"


class Deconvnet(_ReluRuleVisualizer):
    """Deconvnet projection (Zeiler & Fergus 2014).

    Args:
      model: any Keras model.
    """

    _rule = "deconvnet"


def strongest_channel(model, x, layer, channel=None):
    """``channel`` if given, else the feature map of ``layer`` most active on image ``x``."""
    if channel is not None:
        return int(channel)
    acts = _model.predict(_model.feature_model(model, [layer]), _model.as_batch(x, model))
    return int(acts.reshape(-1, acts.shape[-1]).max(axis=0).argmax())


def to_image(signal):
    """Scales a signed (H, W, C) signal to [0, 1] for display (0 maps to 0.5)."""
    s = np.asarray(signal, dtype="float32")
    m = float(np.abs(s).max()) or 1.0
    return 0.5 + 0.5 * s / m
