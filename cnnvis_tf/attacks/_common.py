"""Input validation and small helpers shared by every attack.

Every attack takes ``model_fn`` (a callable mapping a float32 batch in
``[clip_min, clip_max]`` to **logits**), ``x`` (numpy array or tensor, batch first) and
returns a float32 numpy array of the same shape. :func:`prepare` turns user input into
checked tensors and raises :class:`~cnnvis_tf.errors.InputError` with one sentence naming
the problem and the fix.
"""

import keras
import numpy as np
import tensorflow as tf

from cnnvis_tf.attacks._steps import cross_entropy
from cnnvis_tf.checks import (  # noqa: F401
    check_images,
    check_labels,
    check_nonneg,
    check_positive_int,
    invalid,
    looks_like_probabilities,
)
from cnnvis_tf.checks import probabilities_to_logits as wrap_probabilities
from cnnvis_tf.errors import InputError


def check_norm(norm, allowed=(np.inf, 2)):
    """Accepts ``np.inf``/``"inf"``/``"linf"``/``2``/``"l2"`` and returns ``np.inf`` or 2."""
    aliases = {"inf": np.inf, "linf": np.inf, "l2": 2, "2": 2}
    norm = aliases.get(str(norm).lower(), norm)
    if norm not in allowed:
        raise invalid("norm", "one of " + ", ".join(str(a) for a in allowed), norm)
    return np.inf if norm == np.inf else int(norm)


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
        loss = cross_entropy(y, logits)
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
    if not from_probabilities and looks_like_probabilities(logits):
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
    return check_images(x, clip_min, clip_max)


def _check_y(y, targeted, n):
    """``y`` as integer numpy labels (None stays None), before any model call."""
    if y is None and targeted:
        raise InputError("A targeted attack needs target labels: pass y=<target classes>.")
    return check_labels(y, n)


def finish(x_adv, clip_min, clip_max):
    """Returns ``x_adv`` as float32 numpy clipped to the box (guards float round-off)."""
    x_adv = np.asarray(x_adv.numpy() if hasattr(x_adv, "numpy") else x_adv, dtype=np.float32)
    return np.clip(x_adv, np.float32(clip_min), np.float32(clip_max))
