"""Input validation and small helpers shared by every attack.

Every attack takes ``model_fn`` (a callable mapping a float32 batch in
``[clip_min, clip_max]`` to **logits**), ``x`` (numpy array or tensor, batch first) and
returns a float32 numpy array of the same shape. :func:`prepare` turns user input into
checked tensors and raises :class:`~cnnvis_tf.errors.InputError` with one sentence naming
the problem and the fix.
"""

import math

import keras
import numpy as np
import tensorflow as tf
from cleverhans.tf2.utils import clip_eta as _ch_clip_eta
from cleverhans.tf2.utils import optimize_linear as _ch_optimize_linear

from cnnvis_tf.errors import InputError

_PROB_TOL = 1e-4


def invalid(name, expected, value):
    """Builds the Keras-style argument error message."""
    return InputError(
        f"Invalid value received for argument `{name}`. Expected {expected}. "
        f"Received: {name}={value!r}"
    )


def check_nonneg(name, value):
    """Raises unless ``value`` is a finite number >= 0."""
    try:
        ok = math.isfinite(float(value)) and float(value) >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise invalid(name, "a finite number >= 0", value)
    return float(value)


def check_positive_int(name, value):
    """Raises unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise invalid(name, "an integer >= 1", value)
    return int(value)


def check_norm(norm, allowed=(np.inf, 2)):
    """Accepts ``np.inf``/``"inf"``/``"linf"``/``2``/``"l2"`` and returns ``np.inf`` or 2."""
    aliases = {"inf": np.inf, "linf": np.inf, "l2": 2, "2": 2}
    norm = aliases.get(str(norm).lower(), norm)
    if norm not in allowed:
        raise invalid("norm", "one of " + ", ".join(str(a) for a in allowed), norm)
    return np.inf if norm == np.inf else int(norm)


def wrap_probabilities(model_fn):
    """Turns a model that outputs probabilities into one that outputs logits (log p).

    ``softmax(log p) == p``, so the class decision and the cross-entropy are unchanged.
    """

    def logits_fn(x):
        p = model_fn(x)
        return tf.math.log(tf.clip_by_value(tf.cast(p, tf.float32), 1e-30, 1.0))

    return logits_fn


def _looks_like_probabilities(logits):
    return bool(
        np.all(logits >= 0)
        and np.all(logits <= 1 + _PROB_TOL)
        and np.allclose(logits.sum(axis=1), 1.0, atol=_PROB_TOL)
    )


@tf.function(reduce_retracing=True)
def _compiled_forward(model_fn, x):
    return model_fn(x)


def forward(model_fn, x):
    """``model_fn(x)``, compiled (one trace per model) when ``model_fn`` is a built Keras
    model or layer.

    Other callables run eagerly: they may not be traceable (black-box attacks accept them).
    """
    if _compilable(model_fn):
        return _compiled_forward(model_fn, x)
    return model_fn(x)


def _compilable(model_fn):
    # Built: a shared tf.function must not create a model's variables in a later trace.
    return isinstance(model_fn, keras.Layer) and model_fn.built


@tf.function
def _logits_and_gradient(model_fn, x, y, targeted, transform):
    """Logits and cleverhans' ``compute_gradient`` (labels ``y``, or the prediction) at once;
    ``transform`` (if not None) is applied to the gradient in the same graph.

    Logits of the wrong shape give a zero gradient and labels are clipped into range, so
    bad input reaches the checks of :func:`prepare` instead of failing inside TensorFlow.
    """
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = model_fn(x)
        shape = logits.shape
        if shape.rank != 2 or shape[0] not in (None, x.shape[0]):
            return logits, tf.zeros_like(x)
        if y is None:
            y = tf.argmax(logits, 1)
        else:
            y = tf.clip_by_value(y, 0, tf.cast(tf.shape(logits)[1], y.dtype) - 1)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        if targeted:
            loss = -loss
    grad = tape.gradient(loss, x)
    return logits, grad if transform is None else transform(grad)


def prepare(
    model_fn,
    x,
    *,
    y=None,
    targeted=False,
    clip_min=0.0,
    clip_max=1.0,
    from_probabilities=False,
    gradient=False,
    **budgets,
):
    """Validates an attack's inputs.

    Args:
      model_fn: callable returning logits, shape ``(batch, num_classes)``.
      x: input batch (numpy array or tensor), values in ``[clip_min, clip_max]``.
      y: optional integer labels (true labels, or targets when ``targeted``).
      targeted: whether ``y`` holds target classes (then ``y`` is required).
      clip_min: lower bound of the input space.
      clip_max: upper bound of the input space.
      from_probabilities: set when ``model_fn`` ends in a softmax; it is wrapped as log p.
      gradient: also return the gradient of the cross-entropy of ``y`` (negated when
        ``targeted``) w.r.t. ``x``, computed in the same compiled pass as the logits; or a
        function of the gradient to return instead, also applied in that pass (e.g.
        :func:`l2_direction`).
      **budgets: non-negative numbers to check by name (``eps=0.3``).

    Returns:
      ``(model_fn, x, y, logits)``: the (possibly wrapped) model, ``x`` as a float32
      tensor, ``y`` as an int64 tensor (the model's prediction when ``y`` was None) and
      the clean logits as numpy; with ``gradient``, the gradient tensor is appended.

    Raises:
      InputError: for any unusable input.
    """
    for name, value in budgets.items():
        check_nonneg(name, value)
    if not callable(model_fn):
        raise invalid("model_fn", "a callable (e.g. a keras.Model) returning logits", model_fn)
    x_np = _check_x(x, clip_min, clip_max)
    x_t = tf.convert_to_tensor(x_np, dtype=tf.float32)
    if from_probabilities:
        model_fn = wrap_probabilities(model_fn)
    y_np = _check_y(y, targeted, len(x_np))
    grad, transform = None, None if gradient is True else gradient or None
    if gradient and _compilable(model_fn):  # logits and gradient in one pass
        y_t = None if y_np is None else tf.convert_to_tensor(y_np, dtype=tf.int64)
        logits, grad = _logits_and_gradient(model_fn, x_t, y_t, bool(targeted), transform)
    else:  # other callables: checked eagerly first, as they may not be traceable
        logits = forward(model_fn, x_t)
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] != x_np.shape[0]:
        raise InputError(
            f"`model_fn` must return one row of logits per example, shape "
            f"({x_np.shape[0]}, num_classes); it returned shape {logits.shape}."
        )
    if not from_probabilities and _looks_like_probabilities(logits):
        raise InputError(
            "`model_fn` returns probabilities (rows are non-negative and sum to 1); attacks "
            "need logits: pass the model without its final softmax, or from_probabilities=True."
        )
    num_classes = logits.shape[1]
    if y_np is None:
        y_np = logits.argmax(axis=1)
    elif y_np.min() < 0 or y_np.max() >= num_classes:
        raise InputError(
            f"Labels `y` must be in [0, {num_classes - 1}] (the model has {num_classes} "
            f"classes); received values in [{y_np.min()}, {y_np.max()}]."
        )
    y_t = tf.convert_to_tensor(y_np, dtype=tf.int64)
    if not gradient:
        return model_fn, x_t, y_t, logits
    if grad is None:
        grad = _logits_and_gradient(model_fn, x_t, y_t, bool(targeted), transform)[1]
    return model_fn, x_t, y_t, logits, grad


def _check_x(x, clip_min, clip_max):
    clip_min, clip_max = float(clip_min), float(clip_max)
    if not (math.isfinite(clip_min) and math.isfinite(clip_max)) or clip_min > clip_max:
        raise InputError(
            f"Invalid value received for arguments `clip_min`/`clip_max`. Expected finite "
            f"clip_min <= clip_max. Received: clip_min={clip_min}, clip_max={clip_max}"
        )
    x_np = np.asarray(x.numpy() if hasattr(x, "numpy") else x)
    if x_np.ndim < 2 or x_np.shape[0] == 0:
        raise invalid("x", "a non-empty batch, shape (batch, ...)", f"array of shape {x_np.shape}")
    if not np.issubdtype(x_np.dtype, np.number):
        raise invalid("x", "a numeric array", f"dtype {x_np.dtype}")
    if not np.all(np.isfinite(x_np)):
        raise InputError("Input `x` contains NaN or Inf values; pass finite pixel values.")
    lo, hi = float(x_np.min()), float(x_np.max())
    if lo < clip_min or hi > clip_max:
        raise InputError(
            f"Input `x` has values in [{lo:g}, {hi:g}], outside [clip_min, clip_max] = "
            f"[{clip_min:g}, {clip_max:g}]; scale the images into the model's input range "
            f"or pass the right clip_min/clip_max."
        )
    return x_np


def _check_y(y, targeted, n):
    """``y`` as integer numpy labels (None stays None), before any model call."""
    if y is None:
        if targeted:
            raise InputError("A targeted attack needs target labels: pass y=<target classes>.")
        return None
    y_np = np.asarray(y.numpy() if hasattr(y, "numpy") else y)
    if y_np.ndim == 2:  # one-hot
        y_np = y_np.argmax(axis=1)
    if y_np.shape != (n,) or not np.issubdtype(y_np.dtype, np.integer):
        raise invalid("y", f"integer labels of shape ({n},)", f"{y_np.dtype} "
                      f"array of shape {y_np.shape}")
    return y_np


def finish(x_adv, clip_min, clip_max):
    """Returns ``x_adv`` as float32 numpy clipped to the box (guards float round-off)."""
    x_adv = np.asarray(x_adv.numpy() if hasattr(x_adv, "numpy") else x_adv, dtype=np.float32)
    return np.clip(x_adv, np.float32(clip_min), np.float32(clip_max))


def clip_eta(eta, norm, eps):
    """cleverhans' ``clip_eta``, with the same numbers inside a ``tf.function``.

    Grappler rewrites ``eps / sqrt(s)`` (L2) in a graph, changing the last bit; the L2 case
    divides with ``divide_no_nan`` instead, equal here since the norm is at least 1e-6.
    """
    if norm != 2:
        return _ch_clip_eta(eta, norm, eps)
    axes = list(range(1, len(eta.shape)))
    norm = tf.sqrt(tf.maximum(1e-12, tf.reduce_sum(tf.square(eta), axes, keepdims=True)))
    return eta * tf.minimum(1.0, tf.math.divide_no_nan(eps, norm))


def optimize_linear(grad, eps, norm):
    """cleverhans' ``optimize_linear`` (L-inf, L2), with the same numbers inside a
    ``tf.function`` (see :func:`clip_eta`)."""
    if norm != 2:
        return _ch_optimize_linear(grad, eps, norm)
    axes = list(range(1, len(grad.shape)))
    square = tf.maximum(1e-12, tf.reduce_sum(tf.square(grad), axes, keepdims=True))
    return tf.multiply(eps, tf.math.divide_no_nan(grad, tf.sqrt(square)))


def l2_direction(grad):
    """Unit-L2 direction of each example's gradient (zero where the gradient is zero).

    cleverhans' ``optimize_linear`` divides by ``sqrt(max(1e-12, ||g||^2))``, so gradients
    with norm below 1e-6 (a confident model) give steps far shorter than ``eps``. Scaling by
    the max-abs entry first keeps the normalization exact for any non-zero gradient.
    """
    axes = list(range(1, len(grad.shape)))
    grad = tf.math.divide_no_nan(grad, tf.reduce_max(tf.abs(grad), axes, keepdims=True))
    norm = tf.sqrt(tf.reduce_sum(tf.square(grad), axes, keepdims=True))
    return tf.math.divide_no_nan(grad, norm)
