"""The one adapter between a user's Keras model and the visualizers.

:class:`ResolvedModel` accepts functional, Sequential, subclassed and nested models (a model
used as a layer of another) alike: it never rebuilds or clones the model. It *runs* the
model with hooks on its layers -- every layer, at any nesting depth -- that record
activations, swap ReLU backward rules (guided backprop, deconvnet) or skip a softmax head.
One probe pass at construction records the layers in call order, their output shapes and
which layer feeds which, so Sequential, subclassed and nested models expose the same named
layers as functional ones.

Probability outputs follow the package policy (``checks``): a softmax head that is a layer
(``Softmax``, ``Activation("softmax")`` or ``activation="softmax"``) is skipped, giving the
exact logits; any other output whose rows look like probabilities is converted to ``log p``.
Both are logged once.

:class:`Visualizer` is the base of every visualizer: it resolves the model and the layer
once in its constructor and checks images and class lists in ``__call__``.
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from cnnvis_tf import checks, models
from cnnvis_tf.errors import InputError

_LOGGED = set()


def _fn_name(fn):
    return getattr(fn, "__name__", "") if fn is not None else ""


def _is_softmax_layer(layer):
    return isinstance(layer, keras.layers.Softmax) or type(layer).__name__ == "Softmax"


def _is_plain_relu(layer):
    return isinstance(layer, keras.layers.ReLU) and not (
        layer.max_value is not None or layer.negative_slope or layer.threshold)


def _sublayers(layer):
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _walk(layer, prefix=""):
    for sub in _sublayers(layer):
        if isinstance(sub, keras.layers.InputLayer):
            continue
        path = f"{prefix}{sub.name}"
        yield path, sub
        yield from _walk(sub, path + "/")


def _output_op(model):
    """The operation producing ``model``'s output, looking inside nested models (``None``
    for a subclassed model, whose graph is hidden in ``call``)."""
    if isinstance(model, keras.Sequential):
        last = model.layers[-1] if model.layers else None
    elif getattr(model, "_is_graph_network", False) or hasattr(model, "_operations") and \
            getattr(model, "outputs", None):
        last = model.outputs[0]._keras_history.operation
    else:
        return None
    return _output_op(last) if isinstance(last, keras.Model) else last


def _input_shape(model):
    for get in (lambda: model.inputs[0].shape, lambda: model.input_shape,
                lambda: next(iter(model._build_shapes_dict.values()))):
        try:
            shape = tuple(get())
        except (AttributeError, ValueError, TypeError, StopIteration, IndexError):
            continue
        if len(shape) >= 2:
            return shape[1:]
    raise InputError(
        f"The model {model.name!r} has no known input shape. Build it first: start a "
        "Sequential model with keras.Input(shape=...), or call a subclassed model once on a "
        "batch of images.")


class ResolvedModel:
    """Any Keras classifier, run with hooks so every layer is addressable by name.

    Args:
      model: a ``keras.Model`` with one image input and one output of class scores
        (logits or probabilities).
      method: the visualizer's name, used in error messages.

    Raises:
      InputError: for non-models, unbuilt models, several inputs or outputs, or outputs
        that are not (batch, classes).
    """

    def __init__(self, model, method="This method"):
        if not isinstance(model, keras.Model):
            raise InputError(
                f"{method} expected a keras.Model, received {type(model).__name__}. Load the "
                "model with keras.models.load_model or cnnvis_tf.rundir.load_run first.")
        if len(getattr(model, "inputs", None) or [None]) > 1:
            raise InputError(f"{method} supports models with one image input; {model.name!r} "
                             f"has {len(model.inputs)}.")
        self.source, self.method = model, method
        self.input_shape = _input_shape(model)
        self.paths = dict(_walk(model))
        names = [p.rsplit("/", 1)[-1] for p in self.paths]
        self.keys = {id(layer): (p.rsplit("/", 1)[-1] if names.count(p.rsplit("/", 1)[-1]) == 1
                                 else p)
                     for p, layer in self.paths.items()}
        self.layers = {self.keys[id(layer)]: layer for layer in self.paths.values()
                       if not isinstance(layer, keras.Model)}
        self._cut = None
        head = _output_op(model)
        if head is not None and (_is_softmax_layer(head) or
                                 _fn_name(getattr(head, "activation", None)) == "softmax"):
            self._cut = head
            self._log(f"{model.name!r} ends in a softmax ({head.name}); {method} uses the "
                      "softmax input (the logits).")
        self._log_probs, self._rules_applied = False, 0
        self._trace()

    def _log(self, message):
        key = (id(self.source), message)
        if key not in _LOGGED:
            _LOGGED.add(key)
            logging.info(message)

    def _trace(self):
        shape = tuple(32 if d is None else int(d) for d in self.input_shape)
        probe = np.random.default_rng(0).uniform(size=(2,) + shape).astype("float32")
        calls = []
        out = self._forward(tf.constant(probe), trace=calls)
        if isinstance(out, (list, tuple, dict)):
            n = len(out)
            raise InputError(
                f"{self.method} needs a model with one output (the class scores); "
                f"{self.source.name!r} has {n}. Pass keras.Model(model.inputs, "
                "model.outputs[0]) instead.")
        if len(out.shape) != 2:
            raise InputError(
                f"{self.method} needs a classifier whose output is (batch, classes); "
                f"{self.source.name!r} outputs shape {tuple(out.shape)}.")
        if self._cut is None and checks.looks_like_probabilities(np.asarray(out)):
            self._log_probs = True
            self._log(f"{self.source.name!r} outputs probabilities; {self.method} uses their "
                      "logarithm as logits.")
        self.num_classes = int(out.shape[-1])
        producer = {}
        self.order, self.shapes, self.inputs_of = [], {}, {}
        for key, ins, output in calls:
            if key not in self.shapes:
                self.order.append(key)
                self.shapes[key] = tuple(output.shape[1:]) if hasattr(output, "shape") else ()
                self.inputs_of[key] = [producer.get(i) for i in ins]
            if hasattr(output, "shape"):
                producer[id(output)] = key
        heads = [k for k in self.order if not (
            _is_softmax_layer(self.layers[k]) or
            _fn_name(getattr(self.layers[k], "activation", None)) == "softmax")]
        self.head = heads[-1] if heads else None
        self._calls = calls  # keeps the traced tensors alive, so their ids stay unique

    @contextlib.contextmanager
    def _hooks(self, record=None, record_in=None, rule=None, trace=None):
        patched = []

        def hook(layer, key):
            orig = layer.call
            relu_act = rule is not None and _fn_name(getattr(layer, "activation", None)) == "relu"
            cut = layer is self._cut

            def call(*args, **kwargs):
                first = args[0] if args else next(iter(kwargs.values()))
                if cut and _is_softmax_layer(layer):
                    out = first
                elif rule is not None and _is_plain_relu(layer):
                    out = rule(first)
                    self._rules_applied += 1
                elif relu_act or cut:
                    saved = layer.activation
                    object.__setattr__(layer, "activation", rule if relu_act else None)
                    try:
                        out = orig(*args, **kwargs)
                    finally:
                        object.__setattr__(layer, "activation", saved)
                    self._rules_applied += int(relu_act)
                else:
                    out = orig(*args, **kwargs)
                if record is not None and key in record:
                    record[key] = out
                if record_in is not None and key in record_in:
                    record_in[key] = first
                if trace is not None:
                    ins = tf.nest.flatten((args, kwargs))
                    trace.append((key, [id(t) for t in ins if tf.is_tensor(t)], out))
                return out

            had = "call" in layer.__dict__
            patched.append((layer, had, layer.__dict__.get("call")))
            object.__setattr__(layer, "call", call)

        targets = set()
        if trace is not None or rule is not None:
            targets |= set(self.layers)
        targets |= set(record or ()) | set(record_in or ())
        for key in targets:
            hook(self.layers[key], key)
        if self._cut is not None and id(self._cut) not in self.keys:
            hook(self._cut, None)  # a keras op (ops.softmax) at the output
        elif self._cut is not None and self.keys[id(self._cut)] not in targets:
            hook(self._cut, self.keys[id(self._cut)])
        try:
            yield
        finally:
            for layer, had, old in reversed(patched):
                if had:
                    object.__setattr__(layer, "call", old)
                else:
                    object.__delattr__(layer, "call")

    def _forward(self, x, record=None, record_in=None, rule=None, trace=None):
        with self._hooks(record, record_in, rule, trace):
            out = self.source(x, training=False)
        if self._log_probs:
            out = checks.probabilities_to_logits(lambda t: t)(out)
        return out

    def run(self, x, layers=(), inputs_of=(), rule=None):
        """One forward pass of images ``x`` (a tensor, so a surrounding tape can watch it).

        Args:
          layers: layer names whose outputs are returned.
          inputs_of: layer names whose (first) inputs are returned.
          rule: ``None`` or a ReLU replacement with a custom gradient.

        Returns:
          (logits, {name: output}, {name: input}).
        """
        for name in list(layers) + list(inputs_of):
            self.get(name)
        record, record_in = dict.fromkeys(layers), dict.fromkeys(inputs_of)
        self._rules_applied = 0
        logits = self._forward(x, record, record_in, rule)
        if rule is not None and not self._rules_applied:
            raise InputError(
                f"{self.method} rewrites the backward pass of ReLU layers and activations, and "
                f"{self.source.name!r} has none it can reach (ReLUs applied with tf.nn.relu "
                "inside call() are hidden). Use keras.layers.ReLU or activation='relu'.")
        return logits, record, record_in

    def predict(self, x, layers=(), inputs_of=(), batch_size=256):
        """Numpy outputs of :meth:`run` over ``x`` in batches: a list ``[*layers,
        *inputs_of, logits]``."""
        outs = []
        for i in range(0, len(x), batch_size):
            logits, rec, rec_in = self.run(tf.constant(x[i : i + batch_size]), layers, inputs_of)
            outs.append([np.asarray(rec[k]) for k in layers] +
                        [np.asarray(rec_in[k]) for k in inputs_of] + [np.asarray(logits)])
        return [np.concatenate(parts) for parts in zip(*outs)]

    def logits(self, x, batch_size=256):
        """Numpy logits of images ``x``."""
        return self.predict(x, batch_size=batch_size)[-1]

    def keras_model(self, layers=(), logits=True):
        """A functional ``keras.Model``: image -> ``[*layers outputs, logits]`` (a single
        tensor when there is one output), for tf-keras-vis and ``tf.function`` callers."""
        layers = list(layers)
        for name in layers:
            self.get(name)
        src = self.source
        plain = (self._cut is None and not self._log_probs and not isinstance(
            src, keras.Sequential) and hasattr(src, "_operations") and
            all(name in [lyr.name for lyr in src.layers] for name in layers))
        if plain:
            if not layers:
                return src
            return models.feature_model(src, layers, logits=logits)
        inputs = keras.Input(self.input_shape, name="image")
        outs = _Run(self, layers, logits)(inputs)
        return keras.Model(inputs, outs, name=f"{src.name}_resolved")

    def get(self, name):
        """The layer called ``name``.

        Raises:
          InputError: naming the valid layers if there is none.
        """
        if name not in self.layers or name not in self.shapes:
            raise InputError(f"Unknown layer {name!r}. Choose one of: {', '.join(self.order)}.")
        return self.layers[name]

    def conv_layers(self):
        """Names of the 2-D convolution layers in call order."""
        return [k for k in self.order if isinstance(self.layers[k], keras.layers.Conv2D)]

    def last_conv_layer(self):
        convs = self.conv_layers()
        if not convs:
            raise InputError(f"{self.method} needs a Conv2D layer and {self.source.name!r} has "
                             "none. Use a convolutional model.")
        return convs[-1]

    def last_spatial_layer(self):
        """The last layer with a spatial (H, W, C) output at or after the last convolution:
        the rectified, pooled maps CAMs read (``pool2`` in conv2_fc500)."""
        last = self.last_conv_layer()
        best = last
        for key in self.order[self.order.index(last):]:
            if len(self.shapes[key]) == 3:
                best = key
        return best

    def activation_layer(self, name):
        """``<name>_relu`` if the model has it (the zoo's convention), else ``name``."""
        return f"{name}_relu" if f"{name}_relu" in self.shapes else name


class _Run(keras.layers.Layer):
    """Runs a :class:`ResolvedModel` inside a functional graph."""

    def __init__(self, resolved, layers, logits, **kwargs):
        super().__init__(**kwargs)
        self.resolved, self.names, self.with_logits = resolved, list(layers), logits

    def call(self, x):
        logits, rec, _ = self.resolved.run(x, self.names)
        outs = [rec[k] for k in self.names] + ([logits] if self.with_logits else [])
        return outs[0] if len(outs) == 1 else outs

    def compute_output_spec(self, x):
        shapes = [self.resolved.shapes[k] for k in self.names]
        shapes += [(self.resolved.num_classes,)] if self.with_logits else []
        outs = [keras.KerasTensor((x.shape[0],) + tuple(s)) for s in shapes]
        return outs[0] if len(outs) == 1 else outs


class Visualizer:
    """Base of every visualizer: resolves the model (and ``layer``) once.

    Args:
      model: any Keras classifier (functional, Sequential, subclassed, nested, with or
        without a softmax head).
      layer: a layer name, ``None`` for the visualizer's default.
      clip_min, clip_max: the model's input range; images outside it are rejected.

    Attributes:
      resolved: the :class:`ResolvedModel`.
      layer: the resolved layer name (or ``None``).
    """

    def __init__(self, model, layer=None, *, clip_min=0.0, clip_max=1.0):
        self.resolved = ResolvedModel(model, type(self).__name__)
        self.clip_min, self.clip_max = float(clip_min), float(clip_max)
        checks.check_images(np.zeros((1, 1)), self.clip_min, self.clip_max)  # range sanity
        self.layer = self._resolve_layer(layer)

    @property
    def model(self):
        """The user's model."""
        return self.resolved.source

    def _resolve_layer(self, layer):
        if layer is not None:
            self.resolved.get(layer)
        return layer

    def images(self, x, name="x"):
        """``x`` as a checked float32 batch (one image gets the batch axis)."""
        x = np.asarray(x.numpy() if hasattr(x, "numpy") else x)
        if x.ndim == len(self.resolved.input_shape):
            x = x[None]
        x = checks.check_images(x, self.clip_min, self.clip_max,
                                input_shape=self.resolved.input_shape, name=name)
        return x.astype("float32")

    def classes(self, x, classes, name="classes"):
        """Per-image class ids: ``None`` -> the model's prediction; one id -> repeated."""
        if classes is None:
            return self.resolved.logits(x).argmax(axis=-1)
        c = np.asarray(classes)
        if c.ndim == 0:
            c = np.full(len(x), c)
        return checks.check_labels(c, len(x), self.resolved.num_classes, name=name)


def spatial_layer(resolved, layer, method):
    """``layer`` if its output is spatial (H, W, C), else an InputError naming the choices."""
    resolved.get(layer)
    if len(resolved.shapes[layer]) != 3:
        choices = [k for k in resolved.order if len(resolved.shapes[k]) == 3]
        raise InputError(f"Layer {layer!r} has no spatial output; {method} needs one such as: "
                         f"{', '.join(choices)}.")
    return layer


def softmax(logits):
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
