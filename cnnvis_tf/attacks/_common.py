"""Input validation and small helpers shared by every attack.

Every attack takes ``model_fn`` (a callable mapping a float32 batch in
``[clip_min, clip_max]`` to **logits**), ``x`` (numpy array or tensor, batch first) and
returns a float32 numpy array of the same shape. :func:`prepare` turns user input into
checked tensors and raises :class:`~cnnvis_tf.errors.InputError` with one sentence naming
the problem and the fix.

Probability outputs follow the package's one policy (:mod:`cnnvis_tf.checks`): a model
whose rows are non-negative and sum to 1 is *detected*, *logged* once (absl warning) and
*converted* to log-probabilities; ``from_probabilities=True`` asks for the conversion
explicitly (and silently).
"""

import math
import weakref

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from cnnvis_tf import distribute
from cnnvis_tf.attacks._steps import compiled, cross_entropy, input_gradient
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


@compiled(reduce_retracing=True)  # XLA inside attacks.jit_compile()
def _compiled_forward(model_fn, x):
    return model_fn(x)


def forward(model_fn, x):
    """``model_fn(x)``, compiled (one trace per model) when ``model_fn`` is a built Keras
    model or layer.

    Other callables run eagerly: they may not be traceable (black-box attacks accept them).
    Under a distributing ``strategy.scope()`` the batch is split across its replicas
    (:func:`cnnvis_tf.distribute.split_run`).
    """
    if _compilable(model_fn):
        return distribute.split_run(_forward_part, (x,), model_fn)
    return model_fn(x)


def _forward_part(x, model_fn):
    return _compiled_forward(model_fn, x)


def _gradient_part(x, y, model_fn, targeted, transform):
    return _logits_and_gradient(model_fn, x, y, targeted, transform)


def _compilable(model_fn):
    # Built: a shared tf.function must not create a model's variables in a later trace.
    return isinstance(model_fn, keras.Layer) and model_fn.built


@compiled()  # XLA inside attacks.jit_compile()
def _logits_and_gradient(model_fn, x, y, targeted, transform):
    """Logits and cleverhans' ``compute_gradient`` (labels ``y``, or the prediction) at once;
    ``transform`` (if not None) is applied to the gradient in the same graph.

    Logits of the wrong shape give a zero gradient and labels are clipped into range, so
    bad input reaches the checks of :func:`prepare` instead of failing inside TensorFlow.
    """
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = model_fn(x)
        if not isinstance(logits, tf.Tensor):
            return logits, tf.zeros_like(x)
        shape = logits.shape
        if shape.rank != 2 or shape[0] not in (None, x.shape[0]) or shape[1] in (None, 1):
            return logits, tf.zeros_like(x)
        if y is None:
            y = tf.argmax(logits, 1)
        else:
            y = tf.clip_by_value(y, 0, tf.cast(tf.shape(logits)[1], y.dtype) - 1)
        loss = cross_entropy(y, logits)
        if targeted:
            loss = -loss
    grad = input_gradient(tape, loss, x, model_fn, logits, y, targeted)  # float16: scaled
    return logits, grad if transform is None else transform(grad)


def check_bool(name, value):
    """``value`` as a bool; raises unless it is True/False (or 0/1)."""
    if isinstance(value, (bool, np.bool_)) or (
        isinstance(value, (int, np.integer)) and value in (0, 1)
    ):
        return bool(value)
    raise invalid(name, "True or False", value)


def check_seed(value, *, allow_none=False, name="seed"):
    """``value`` as an int >= 0 (or None when allowed); raises otherwise."""
    if value is None and allow_none:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    raise invalid(name, "an integer >= 0" + (" or None" if allow_none else ""), value)


def check_number(name, value):
    """``value`` as a float; raises unless it is a finite real number (not a string)."""
    if _real(value) and math.isfinite(float(value)):
        return float(value)
    raise invalid(name, "a finite number", value)


def check_budget(name, value):
    """``value`` as a float >= 0; raises for strings and NaN/inf (``check_nonneg``)."""
    if not _real(value):
        raise invalid(name, "a finite number >= 0", value)
    return check_nonneg(name, value)


def check_box(clip_min, clip_max):
    """``(clip_min, clip_max)`` as floats; raises unless finite numbers with min <= max."""
    ok = _real(clip_min) and _real(clip_max)
    if ok:
        lo, hi = float(clip_min), float(clip_max)
        ok = math.isfinite(lo) and math.isfinite(hi) and lo <= hi
    if not ok:
        raise InputError(
            "Invalid value received for arguments `clip_min`/`clip_max`. Expected finite "
            f"numbers with clip_min <= clip_max (the model's input range, e.g. 0 and 1). "
            f"Received: clip_min={clip_min!r}, clip_max={clip_max!r}"
        )
    return lo, hi


def _real(value):
    if isinstance(value, (bool, np.bool_, str, bytes)):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return np.ndim(value) == 0


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
      model_fn: callable returning logits, shape ``(batch, num_classes)``. A model returning
        probabilities is detected, logged once and used as log-probabilities.
      x: input batch (numpy array or tensor), values in ``[clip_min, clip_max]``; when
        ``model_fn`` is a built ``keras.Model``, shaped like its input.
      y: optional labels (true labels, or targets when ``targeted``): class ids of shape
        ``(batch,)`` or ``(batch, 1)``, or one-hot ``(batch, num_classes)``.
      targeted: whether ``y`` holds target classes (then ``y`` is required).
      clip_min: lower bound of the input space.
      clip_max: upper bound of the input space.
      from_probabilities: ``model_fn`` ends in a softmax: use log p as logits, without the
        warning (an error if its outputs are not probabilities).
      gradient: also return the gradient of the cross-entropy of ``y`` (negated when
        ``targeted``) w.r.t. ``x``, computed in the same compiled pass as the logits; or a
        function of the gradient to return instead, also applied in that pass (e.g.
        :func:`l2_direction`).
      **budgets: non-negative numbers to check by name (``eps=0.3``).

    Returns:
      ``(model_fn, x, y, logits)``: the (possibly wrapped) model, ``x`` as a float32
      tensor, ``y`` as an int64 tensor of class ids (the model's prediction when ``y`` was
      None) and the clean logits as numpy; with ``gradient``, the gradient tensor is
      appended.

    Raises:
      InputError: for any unusable input.
    """
    for name, value in budgets.items():
        check_budget(name, value)
    targeted = check_bool("targeted", targeted)
    from_probabilities = check_bool("from_probabilities", from_probabilities)
    clip_min, clip_max = check_box(clip_min, clip_max)
    input_shape = _check_model(model_fn)
    x_np = check_images(x, clip_min, clip_max, input_shape=input_shape)
    n = x_np.shape[0]
    x_t = tf.convert_to_tensor(x_np, dtype=tf.float32)
    y_np = _check_y(y, targeted, n)
    grad, transform = None, None if gradient is True else gradient or None
    try:
        if gradient and _compilable(model_fn):  # logits and gradient in one pass
            y_t = None if y_np is None else tf.convert_to_tensor(y_np, dtype=tf.int64)
            logits, grad = distribute.split_run(_gradient_part, (x_t, y_t), model_fn,
                                                targeted, transform)
        else:  # other callables: checked eagerly first, as they may not be traceable
            logits = forward(model_fn, x_t)
    except InputError:
        raise
    except (ValueError, TypeError, tf.errors.OpError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise InputError(
            f"`model_fn` failed on `x` of shape {x_np.shape} ({first}); pass a batch shaped "
            "like the model's input, and a model mapping it to logits."
        ) from err
    logits = _check_logits(logits, n)
    probabilities = looks_like_probabilities(logits)
    if from_probabilities and not probabilities:
        raise InputError(
            "from_probabilities=True, but `model_fn` does not return probabilities (rows "
            "non-negative and summing to 1); drop from_probabilities for a model that "
            "returns logits."
        )
    if probabilities:
        if not from_probabilities:
            _warn_probabilities(model_fn)
        model_fn, grad = wrap_probabilities(model_fn), None
        logits = wrap_probabilities(tf.identity)(logits).numpy()
    num_classes = logits.shape[1]
    if y_np is None:
        y_np = logits.argmax(axis=1)
    else:  # now the one-hot width and the range can be checked
        y_np = check_labels(y, n, num_classes)
    y_t = tf.convert_to_tensor(y_np, dtype=tf.int64)
    if not gradient:
        return model_fn, x_t, y_t, logits
    if grad is None:
        grad = distribute.split_run(_gradient_part, (x_t, y_t), model_fn, targeted,
                                    transform)[1]
    return model_fn, x_t, y_t, logits, grad


def _check_model(model_fn):
    """Checks ``model_fn`` before it is called; returns a built Keras model's input shape
    (without the batch axis), else None."""
    if not callable(model_fn):
        raise invalid("model_fn", "a callable (e.g. a keras.Model) returning logits", model_fn)
    if not (isinstance(model_fn, keras.Model) and model_fn.built):
        return None
    try:
        inputs, outputs = model_fn.inputs, model_fn.outputs
    except (AttributeError, ValueError):  # a subclassed model: no symbolic inputs
        return None
    if outputs is not None and len(outputs) != 1:
        raise InputError(
            f"`model_fn` {model_fn.name!r} has {len(outputs)} outputs; attacks need one (the "
            "logits). Pass keras.Model(model.inputs, model.outputs[0]) instead."
        )
    if inputs is None or len(inputs) != 1:
        return None
    return tuple(inputs[0].shape[1:])


def _check_logits(logits, n):
    """The model's outputs as a finite ``(n, num_classes >= 2)`` numpy array."""
    if isinstance(logits, (list, tuple, dict)):
        raise InputError(
            f"`model_fn` returned {len(logits)} outputs ({type(logits).__name__}); attacks "
            "need one tensor of logits, shape (batch, num_classes). Return only the logits."
        )
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] != n:
        raise InputError(
            f"`model_fn` must return one row of logits per example, shape "
            f"({n}, num_classes); it returned shape {logits.shape}."
        )
    if logits.shape[1] < 2:
        raise InputError(
            f"`model_fn` returns {logits.shape[1]} score(s) per example; attacks need one logit "
            "per class (at least 2). For a one-logit binary classifier z, return the logits "
            "[0, z]."
        )
    if not np.issubdtype(logits.dtype, np.number) or not np.all(np.isfinite(logits)):
        raise InputError(
            "`model_fn` returned NaN or Inf logits on the clean input; check the model's "
            "weights and that `x` is in the range it was trained on."
        )
    return logits


_WARNED = weakref.WeakSet()


def _warn_probabilities(model_fn):
    """Logs the probability conversion once per model."""
    try:
        if model_fn in _WARNED:
            return
        _WARNED.add(model_fn)
    except TypeError:  # not weak-referenceable: warn every time
        pass
    name = getattr(model_fn, "name", None) or getattr(model_fn, "__name__", "model_fn")
    logging.warning(
        "%r returns probabilities (rows are non-negative and sum to 1); the attacks treat "
        "them as probabilities and use their log (log-probabilities) as logits. A saturated "
        "softmax can mask gradients: pass the model without its final softmax if you can "
        "(from_probabilities=True does the conversion silently).", name)


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
