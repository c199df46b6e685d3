"""Model plumbing shared by the visualizers: any Keras model -> functional logits model.

tf-keras-vis 0.8.7 needs functional models (it reads ``model.output_names`` and
``layer.output``) and its ``ReplaceToLinear`` modifier breaks on Keras 3, so every
visualizer first passes the user's model through :func:`logits_model`.
"""

import keras
import numpy as np
import tensorflow as tf
from keras.src.models.functional import Functional

from cnnvis_tf.errors import InputError

_SOFTMAX_NAMES = ("softmax",)


def _is_softmax(fn):
    return fn is not None and getattr(fn, "__name__", "") in _SOFTMAX_NAMES


def as_functional(model):
    """Returns a functional model computing the same function as ``model``.

    Sequential models are rebuilt from copies of their layers (same weights) so every layer
    is addressable; subclassed models are wrapped whole (their inner layers are then not
    addressable).

    Raises:
      InputError: if ``model`` is not a Keras model with one known input shape.
    """
    if not isinstance(model, keras.Model):
        raise InputError(
            f"Expected a keras.Model, received {type(model).__name__}. Load the model with "
            "keras.models.load_model or cnnvis_tf.rundir.load_run first."
        )
    if isinstance(model, keras.Sequential):
        try:
            shape = model.input_shape[1:]
        except (AttributeError, ValueError) as e:
            raise InputError(
                "The Sequential model has no input shape. Build it with keras.Input(shape=...) "
                "as its first layer."
            ) from e
        # Fresh copies of the layers (weights copied) so every layer has exactly one node in
        # the new graph and its `.output` is addressable by tf-keras-vis.
        inputs = keras.Input(shape=shape, name="image")
        x = inputs
        for layer in model.layers:
            copy = layer.__class__.from_config(layer.get_config())
            x = copy(x)
            copy.set_weights(layer.get_weights())
        return keras.Model(inputs, x, name=model.name)
    if _is_functional(model):
        return model
    shape = getattr(model, "_build_shapes_dict", None) or {}
    try:
        in_shape = model.input_shape[1:]
    except (AttributeError, ValueError):
        in_shape = next(iter(shape.values()), None)
        in_shape = tuple(in_shape)[1:] if in_shape else None
    if not in_shape:
        raise InputError(
            "The subclassed model has not been built. Call it once on a batch of images "
            "before visualizing it."
        )
    inputs = keras.Input(shape=in_shape, name="image")
    return keras.Model(inputs, model(inputs), name=model.name)


def _is_functional(model):
    return isinstance(model, Functional) and not isinstance(model, keras.Sequential)


def logits_model(model):
    """A functional model with the same weights that outputs pre-softmax scores.

    A model ending in a ``softmax`` activation (a ``Softmax``/``Activation`` layer or a
    ``Dense``/``Conv`` layer with ``activation="softmax"``) is cut before the softmax; a
    layer with a built-in softmax is rebuilt linear with the same weights.
    """
    model = as_functional(model)
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and _is_softmax(last.activation)
    ):
        return keras.Model(model.inputs[0], penultimate_output(model),
                           name=f"{model.name}_logits")
    if _is_softmax(getattr(last, "activation", None)):
        cfg = last.get_config()
        cfg.update(activation="linear", name=f"{last.name}_linear")
        linear = last.__class__.from_config(cfg)
        out = linear(penultimate_output(model))
        linear.set_weights(last.get_weights())
        return keras.Model(model.inputs[0], out, name=f"{model.name}_logits")
    return model


def get_layer(model, name):
    """The layer called ``name``.

    Raises:
      InputError: naming the valid layers if there is none.
    """
    names = [layer.name for layer in model.layers]
    if name not in names:
        raise InputError(
            f"Unknown layer {name!r}. Choose one of: {', '.join(names)}."
        )
    return model.get_layer(name)


def conv_layers(model):
    """Names of the 2-D convolution layers, input to output."""
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def activation_layer(model, name):
    """``<name>_relu`` if the model has it (the zoo's convention), else ``name``."""
    names = {layer.name for layer in model.layers}
    return f"{name}_relu" if f"{name}_relu" in names else name


def last_conv_layer(model):
    """The last 2-D convolution layer's name.

    Raises:
      InputError: if the model has none.
    """
    convs = conv_layers(model)
    if not convs:
        raise InputError(
            "The model has no Conv2D layer, which this method needs. Use a convolutional model."
        )
    return convs[-1]


def last_spatial_layer(model):
    """The last layer with a 4-D (spatial) output at or after the last convolution: the
    rectified, pooled feature maps CAMs are computed on (``pool2`` in conv2_fc500,
    ``stage4_block2_out`` in ResNet-18).

    Raises:
      InputError: if the model has no Conv2D layer.
    """
    last = last_conv_layer(model)
    names = [layer.name for layer in model.layers]
    best = last
    for layer in model.layers[names.index(last):]:
        if len(layer.output.shape) == 4:
            best = layer.name
    return best


def feature_model(model, layers):
    """A functional model returning the outputs of ``layers`` (names) as a list."""
    outs = [get_layer(model, name).output for name in layers]
    return keras.Model(model.inputs[0], outs)


def penultimate_output(model):
    """The tensor feeding the model's output layer in this model's graph."""
    history = getattr(model.outputs[0], "_keras_history", None)
    if history is not None:
        node = history.operation._inbound_nodes[history.node_index]
        inp = node.input_tensors
    else:
        inp = model.layers[-1].input
    return inp[0] if isinstance(inp, (list, tuple)) else inp


def predict(model, x, batch_size=256):
    """Runs ``model`` in inference mode over ``x`` in batches; returns numpy (or a list)."""
    outs = []
    for i in range(0, len(x), batch_size):
        out = model(tf.convert_to_tensor(x[i : i + batch_size]), training=False)
        outs.append([np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else
                    np.asarray(out))
    if outs and isinstance(outs[0], list):
        return [np.concatenate(parts) for parts in zip(*outs)]
    return np.concatenate(outs)


def softmax(logits):
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def as_batch(x, model):
    """``x`` as a float32 NHWC batch matching the model input (a single image gets N=1).

    Raises:
      InputError: if the shape does not match the model's input.
    """
    x = np.asarray(x, dtype="float32")
    want = tuple(model.inputs[0].shape[1:])
    if x.ndim == len(want):
        x = x[None]
    if tuple(x.shape[1:]) != tuple(d if d is not None else s for d, s in zip(want, x.shape[1:])):
        raise InputError(
            f"Images of shape {x.shape[1:]} do not match the model input {want}. Pass images "
            "from the model's own dataset."
        )
    return x


def resolve_classes(model, x, classes):
    """Per-image class indices: ``None`` -> the model's prediction; an int -> repeated."""
    if classes is None:
        return predict(model, x).argmax(axis=-1)
    classes = np.broadcast_to(np.asarray(classes, dtype="int64"), (len(x),)).copy()
    n = int(model.outputs[0].shape[-1])
    if classes.min() < 0 or classes.max() >= n:
        raise InputError(f"Class index out of range: {classes.tolist()}. Use 0..{n - 1}.")
    return classes
