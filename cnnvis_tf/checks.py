"""Input checks shared by attacks, visualizers, defenses and scripts (one policy).

Every check raises :class:`~cnnvis_tf.errors.InputError` with one sentence naming the
problem and the fix. This module imports nothing of cnnvis_tf but ``errors``, so every
layer of the package can use it.

Probability outputs: a model whose rows are non-negative and sum to 1 outputs
probabilities, not logits. The policy everywhere is: *detect* (``looks_like_probabilities``),
*log* (the caller says so once) and *convert* (``probabilities_to_logits``: ``log p``, which
keeps the arg-max and the cross-entropy), unless the caller asked for logits strictly.
"""

import math

import numpy as np

from cnnvis_tf.errors import InputError

__all__ = [
    "invalid",
    "check_nonneg",
    "check_positive",
    "check_positive_int",
    "check_fraction",
    "check_images",
    "check_labels",
    "looks_like_probabilities",
    "probabilities_to_logits",
    "parse_floats",
]

PROB_TOL = 1e-4


def invalid(name, expected, value):
    """The Keras-style argument error: ``Invalid value received for argument `name` ...``."""
    return InputError(
        f"Invalid value received for argument `{name}`. Expected {expected}. "
        f"Received: {name}={value!r}"
    )


def _finite(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def check_nonneg(name, value):
    """``value`` as a float; raises unless it is a finite number >= 0."""
    if isinstance(value, bool) or not _finite(value) or float(value) < 0:
        raise invalid(name, "a finite number >= 0", value)
    return float(value)


def check_positive(name, value):
    """``value`` as a float; raises unless it is a finite number > 0."""
    if isinstance(value, bool) or not _finite(value) or float(value) <= 0:
        raise invalid(name, "a finite number > 0", value)
    return float(value)


def check_fraction(name, value, *, low_open=False, high_open=False):
    """``value`` as a float in [0, 1] (bounds open as asked); raises otherwise."""
    ok = not isinstance(value, bool) and _finite(value)
    if ok:
        v = float(value)
        ok = (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise invalid(name, f"a number in {lo}0, 1{hi}", value)
    return float(value)


def check_positive_int(name, value):
    """``value`` as an int; raises unless it is an integer >= 1."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and int(value) >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise invalid(name, "an integer >= 1", value)
    return int(value)


def _to_numpy(x):
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def check_images(x, clip_min=0.0, clip_max=1.0, *, input_shape=None, name="x"):
    """Checks an image batch: numeric, non-empty, finite, inside the clip box, and (with
    ``input_shape``, the model's input shape without the batch axis) of the right rank
    and size.

    Returns:
      ``x`` as a numpy array (not copied when already one).
    """
    clip_min, clip_max = float(clip_min), float(clip_max)
    if not (math.isfinite(clip_min) and math.isfinite(clip_max)) or clip_min > clip_max:
        raise InputError(
            f"Invalid value received for arguments `clip_min`/`clip_max`. Expected finite "
            f"clip_min <= clip_max. Received: clip_min={clip_min}, clip_max={clip_max}"
        )
    x_np = _to_numpy(x)
    if x_np.ndim < 2 or x_np.shape[0] == 0:
        raise invalid(name, "a non-empty batch, shape (batch, ...)",
                      f"array of shape {x_np.shape}")
    if not np.issubdtype(x_np.dtype, np.number) or np.issubdtype(x_np.dtype, np.complexfloating):
        raise invalid(name, "a real numeric array", f"dtype {x_np.dtype}")
    if input_shape is not None:
        want = tuple(input_shape)
        got = tuple(x_np.shape[1:])
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            want_s = "(batch, " + ", ".join("?" if w is None else str(w) for w in want) + ")"
            raise InputError(
                f"Input `{name}` has shape {x_np.shape}; the model expects {want_s}. Pass a "
                "batch of images shaped like the model's dataset (add the batch axis for one "
                "image, and the channel axis for grayscale)."
            )
    if not np.all(np.isfinite(x_np)):
        raise InputError(f"Input `{name}` contains NaN or Inf values; pass finite pixel values.")
    lo, hi = float(x_np.min()), float(x_np.max())
    if lo < clip_min or hi > clip_max:
        raise InputError(
            f"Input `{name}` has values in [{lo:g}, {hi:g}], outside [clip_min, clip_max] = "
            f"[{clip_min:g}, {clip_max:g}]; scale the images into the model's input range "
            f"(e.g. divide 0-255 pixels by 255) or pass the right clip_min/clip_max."
        )
    return x_np


def check_labels(y, n, num_classes=None, *, name="y"):
    """Class ids from ``y``: shape ``(n,)`` or ``(n, 1)`` integer ids (what
    ``keras.datasets`` returns), or one-hot ``(n, num_classes)`` with ``num_classes > 1``.

    ``None`` stays ``None``. With ``num_classes`` the ids are range-checked.

    Returns:
      int64 numpy array of shape ``(n,)``.
    """
    if y is None:
        return None
    y_np = _to_numpy(y)
    if y_np.ndim == 2 and y_np.shape[1] == 1:
        y_np = y_np[:, 0]
    elif y_np.ndim == 2 and y_np.shape[0] == n and y_np.shape[1] > 1:
        if num_classes is not None and y_np.shape[1] != num_classes:
            raise InputError(
                f"One-hot labels `{name}` have {y_np.shape[1]} columns but the model has "
                f"{num_classes} classes; pass class ids of shape ({n},)."
            )
        ok = np.all((y_np == 0) | (y_np == 1)) and np.all(y_np.sum(axis=1) == 1)
        if not ok:
            raise InputError(
                f"Labels `{name}` of shape {y_np.shape} are not one-hot (rows of 0s with one "
                f"1); pass class ids of shape ({n},) or ({n}, 1)."
            )
        y_np = y_np.argmax(axis=1)
    if y_np.shape != (n,):
        raise invalid(name, f"class ids of shape ({n},) or ({n}, 1), or one-hot (n, classes)",
                      f"array of shape {y_np.shape}")
    if np.issubdtype(y_np.dtype, np.floating):
        if not np.all(np.isfinite(y_np)) or np.any(y_np != np.round(y_np)):
            raise invalid(name, "integer class ids", f"non-integer {y_np.dtype} values")
    elif not np.issubdtype(y_np.dtype, np.integer):
        raise invalid(name, "integer class ids", f"dtype {y_np.dtype}")
    y_np = y_np.astype(np.int64)
    if num_classes is not None and (y_np.min() < 0 or y_np.max() >= num_classes):
        raise InputError(
            f"Labels `{name}` must be in [0, {num_classes - 1}] (the model has {num_classes} "
            f"classes); received values in [{y_np.min()}, {y_np.max()}]."
        )
    return y_np


def looks_like_probabilities(outputs):
    """Whether a batch of model outputs (N, C) looks like softmax probabilities: entries in
    [0, 1] and rows summing to 1 (C > 1)."""
    out = np.asarray(outputs, np.float64)
    return bool(
        out.ndim == 2
        and out.shape[1] > 1
        and np.all(out >= 0)
        and np.all(out <= 1 + PROB_TOL)
        and np.allclose(out.sum(axis=1), 1.0, atol=PROB_TOL)
    )


def probabilities_to_logits(model_fn):
    """Wraps a model that outputs probabilities into one that outputs logits (``log p``).

    ``softmax(log p) == p``, so the class decision and the cross-entropy are unchanged.
    """
    import tensorflow as tf

    def logits_fn(x):
        p = model_fn(x)
        return tf.math.log(tf.clip_by_value(tf.cast(p, tf.float32), 1e-30, 1.0))

    return logits_fn


def parse_floats(name, text, *, low=-math.inf, high=math.inf, low_open=False):
    """Parses a comma-separated list of numbers for flag ``name``, each in the given range.

    Raises:
      InputError: a non-number, an empty list or a value out of range (one line).
    """
    try:
        values = [float(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise InputError(f"--{name}={text!r} is not a comma-separated list of numbers.") from None
    lo = "(" if low_open else "["
    for v in values:
        if not math.isfinite(v) or v > high or v < low or (low_open and v == low):
            raise InputError(f"--{name}: {v:g} is outside {lo}{low:g}, {high:g}]; pass values "
                             "in that range.")
    if not values:
        raise InputError(f"--{name} needs at least one value.")
    return values
