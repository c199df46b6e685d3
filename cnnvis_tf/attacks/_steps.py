"""The one adversarial kernel: FGM, PGD and SNR steps as graph-safe TensorFlow functions.

Every function here is plain TensorFlow (and ``keras.random``) on tensors, so it runs
eagerly, inside a ``tf.function`` and inside a Keras ``train_step`` alike. Budgets
(``eps``, ``eps_iter``) are scalars or per-example tensors of shape ``(N,)``. The public
attacks (:mod:`cnnvis_tf.attacks`), adversarial training
(:class:`~cnnvis_tf.defenses.DefenseModel`) and the evaluation sweeps all call these
functions, so a budget means the same thing everywhere.

Labels ``y`` are class ids of shape ``(N,)`` or ``(N, 1)``, or one-hot ``(N, C)``
(what a Keras ``train_step`` may receive).
"""

import contextlib
import functools

import keras
import numpy as np
import tensorflow as tf
from cleverhans.tf2.utils import clip_eta as _ch_clip_eta
from cleverhans.tf2.utils import optimize_linear as _ch_optimize_linear

from cnnvis_tf import precision

__all__ = [
    "DEFAULT_NB_ITER",
    "per_example",
    "cross_entropy",
    "loss_gradient",
    "input_gradient",
    "l2_direction",
    "direction",
    "clip_eta",
    "optimize_linear",
    "fgm_step",
    "fgm",
    "default_step_size",
    "random_start",
    "pgd_start",
    "pgd_iterations",
    "pgd",
    "snr_eps",
    "snr_step",
    "jit_compile",
    "jit_enabled",
    "compiled",
]

DEFAULT_NB_ITER = 40  # PGD steps (the common setting; 20 is ~3 points weaker at eps 0.1)


def per_example(value, x):
    """``value`` (scalar or shape ``(N,)``) as a tensor of ``x``'s dtype broadcasting
    against ``x`` (shape ``(N, 1, ..., 1)`` when per example)."""
    value = tf.cast(tf.convert_to_tensor(value), x.dtype)
    if value.shape.rank == 0:
        return value
    return tf.reshape(value, [-1] + [1] * (x.shape.rank - 1))


def cross_entropy(y, logits):
    """Per-example cross-entropy of logits; ``y`` ids ``(N,)``/``(N, 1)`` or one-hot."""
    if y.shape.rank == 2 and y.shape[-1] == 1:
        y = tf.squeeze(y, -1)
    if y.shape.rank == logits.shape.rank:
        return tf.nn.softmax_cross_entropy_with_logits(labels=tf.cast(y, logits.dtype),
                                                       logits=logits)
    if not y.dtype.is_integer:
        y = tf.cast(y, tf.int64)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)


def loss_gradient(model_fn, x, y, targeted=False):
    """Gradient w.r.t. ``x`` of the cross-entropy of ``y`` (negated when ``targeted``);
    the same operations as cleverhans' ``compute_gradient``."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = model_fn(x)
        loss = cross_entropy(y, logits)
        if targeted:
            loss = -loss
    return input_gradient(tape, loss, x, model_fn, logits, y, targeted)


def input_gradient(tape, loss, x, model_fn, logits, y, targeted=False):
    """``tape.gradient(loss, x)``; for a Keras model computing in float16 (mixed
    precision) the same gradient with per-example loss scaling.

    A confident example's input gradient (~1e-7) is below float16's smallest number, so
    float16 backprop returns zeros (FGSM then does not move). Here the cotangent at the
    (float32) logits, ``d loss / d logits``, is scaled per example by the power of two that
    brings its largest entry into [1, 2), propagated through the float16 layers, and the
    input gradient divided by the same power of two in float32: exact, with no overflow
    (the scaled cotangent is that of a loss of order 1). ``loss`` is the cross-entropy of
    ``y`` over ``logits`` computed on ``tape`` (negated when ``targeted``).
    """
    if not (isinstance(model_fn, keras.Model) and precision.is_mixed(model_fn)):
        return tape.gradient(loss, x)
    logits = tf.cast(logits, tf.float32)
    with tf.GradientTape() as head:
        head.watch(logits)
        head_loss = cross_entropy(y, logits)
        if targeted:
            head_loss = -head_loss
    cot = head.gradient(head_loss, logits)
    peak = tf.reduce_max(tf.abs(cot), axis=1)
    exponent = tf.math.floor(tf.math.log(tf.where(peak > 0, peak, 1.0)) / np.log(2.0))
    scale = tf.pow(2.0, -exponent)
    grad = tape.gradient(logits, x, output_gradients=cot * scale[:, None])
    return grad / per_example(scale, grad)


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


def direction(grad, norm=np.inf):
    """The steepest-ascent direction of unit size in ``norm``: ``sign(grad)`` (L-inf) or
    :func:`l2_direction` (L2)."""
    return l2_direction(grad) if norm == 2 else tf.sign(grad)


def clip_eta(eta, norm, eps):
    """Projects ``eta`` onto the ``eps`` ball (cleverhans' ``clip_eta``, same numbers
    inside a ``tf.function``; ``eps`` may be per example, broadcasting against ``eta``).

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


def fgm_step(x, step_direction, eps, clip_min=0.0, clip_max=1.0):
    """``clip(x + eps * direction)`` to the box; ``eps`` scalar or per example."""
    x = tf.convert_to_tensor(x)
    step = per_example(eps, x) * tf.cast(step_direction, x.dtype)
    return tf.clip_by_value(x + step, tf.cast(clip_min, x.dtype), tf.cast(clip_max, x.dtype))


# Goodfellow, Shlens, Szegedy. Explaining and Harnessing Adversarial Examples. ICLR 2015.
def fgm(model_fn, x, y, eps, *, norm=np.inf, clip_min=0.0, clip_max=1.0, targeted=False):
    """One fast-gradient step: :func:`fgm_step` along :func:`direction` of the loss
    gradient."""
    grad = loss_gradient(model_fn, x, y, targeted)
    return fgm_step(x, direction(grad, norm), eps, clip_min, clip_max)


def default_step_size(eps, nb_iter):
    """PGD's step ``min(eps, 2.5 * eps / nb_iter)`` (Madry et al.; "the step cap").

    Python numbers give a Python float; tensors (per-example ``eps``) a tensor.
    """
    if isinstance(eps, (int, float)) and isinstance(nb_iter, int):
        return min(float(eps), 2.5 * float(eps) / nb_iter)
    eps = tf.convert_to_tensor(eps)
    return tf.minimum(eps, 2.5 * eps / tf.cast(nb_iter, eps.dtype))


def random_start(x, eps, norm=np.inf, seed=None):
    """A uniform random point of the ``eps`` ball around 0, one per example.

    L-inf: ``eps * U(-1, 1)`` per entry. L2: a uniform direction (normalized Gaussian)
    times the radius ``eps * U(0, 1)^(1/d)`` (uniform in the ball's volume).

    Args:
      seed: a ``keras.random.SeedGenerator`` (advanced by each draw), an int or None.
    """
    shape, dtype = tf.shape(x), x.dtype
    if norm != 2:
        return per_example(eps, x) * keras.random.uniform(shape, -1.0, 1.0, dtype, seed=seed)
    g = l2_direction(keras.random.normal(shape, dtype=dtype, seed=seed))
    d = tf.cast(tf.reduce_prod(shape[1:]), dtype)
    ones = tf.ones([x.shape.rank - 1], tf.int32)
    u = keras.random.uniform(tf.concat([shape[:1], ones], 0), 0.0, 1.0, dtype, seed=seed)
    return per_example(eps, x) * tf.pow(u, 1.0 / d) * g


def pgd_start(x, eps, *, norm=np.inf, rand_init=True, seed=None, clip_min=0.0, clip_max=1.0):
    """PGD's starting point: ``x`` plus :func:`random_start` (or ``x``), in the box."""
    x = tf.convert_to_tensor(x)
    if not rand_init:
        return x
    eta = clip_eta(random_start(x, eps, norm, seed), norm, per_example(eps, x))
    return tf.clip_by_value(x + eta, tf.cast(clip_min, x.dtype), tf.cast(clip_max, x.dtype))


def pgd_iterations(model_fn, x, x_adv, y, eps, eps_iter, nb_iter, *, norm=np.inf,
                   clip_min=0.0, clip_max=1.0, targeted=False):
    """``nb_iter`` projected gradient steps from ``x_adv`` (cleverhans' PGD loop, op for op:
    step, clip to the box, project onto the ``eps`` ball around ``x``, clip to the box).

    L2 steps use the exact :func:`l2_direction`. ``nb_iter`` may be a tensor (a
    ``tf.while_loop``, so one trace serves every count).
    """
    x = tf.convert_to_tensor(x)
    eps, eps_iter = per_example(eps, x), per_example(eps_iter, x)
    lo, hi = tf.cast(clip_min, x.dtype), tf.cast(clip_max, x.dtype)

    def body(i, x_adv):
        grad = loss_gradient(model_fn, x_adv, y, targeted)
        if norm == 2:  # exact normalization; see l2_direction
            step = eps_iter * l2_direction(grad)
        else:
            step = optimize_linear(grad, eps_iter, norm)
        x_adv = tf.clip_by_value(x_adv + step, lo, hi)
        return i + 1, tf.clip_by_value(x + clip_eta(x_adv - x, norm, eps), lo, hi)

    _, x_adv = tf.while_loop(lambda i, _: i < nb_iter, body, (tf.constant(0), x_adv))
    return x_adv


# Madry, Makelov, Schmidt, Tsipras, Vladu. Towards Deep Learning Models Resistant to
# Adversarial Attacks. ICLR 2018.
def pgd(model_fn, x, y, eps, *, nb_iter=DEFAULT_NB_ITER, eps_iter=None, norm=np.inf,
        rand_init=True, seed=None, clip_min=0.0, clip_max=1.0, targeted=False):
    """PGD: :func:`pgd_start` then :func:`pgd_iterations`; ``eps_iter`` defaults to
    :func:`default_step_size`."""
    eps_iter = default_step_size(eps, nb_iter) if eps_iter is None else eps_iter
    box = {"clip_min": clip_min, "clip_max": clip_max}
    x_adv = pgd_start(x, eps, norm=norm, rand_init=rand_init, seed=seed, **box)
    return pgd_iterations(model_fn, x, x_adv, y, eps, eps_iter, nb_iter, norm=norm,
                          targeted=targeted, **box)


def snr_eps(x, step_direction, snr_db, *, clip_min=0.0, clip_max=1.0, match_clipped=True):
    """Per-example step ``eps``, shape ``(N,)``, giving ``eps * direction`` the SNR
    ``20 log10(||x||_2 / ||delta||_2) = snr_db``.

    ``match_clipped=True`` (the package's convention): ``delta`` is the perturbation *after
    clipping* to the box, for a sign direction. Each entry then moves by
    ``min(eps, cap_i)``, ``cap_i`` being its room to the box in its direction (0 where
    ``d_i = 0``), so ``||delta||^2 = g(eps) = S(eps) + eps^2 n(eps)`` with ``S`` the sum of
    the squared caps below ``eps`` and ``n`` the number of the others: piecewise quadratic
    and increasing. The exact root is found segment by segment without sorting:
    ``eps <- sqrt((target^2 - S(eps)) / n(eps))`` from the unclipped ``eps`` (a lower bound)
    increases monotonically, never passes the root, and stops exactly on it once ``eps`` is
    in the root's segment (2-4 steps on MNIST/CIFAR-like images; each step is one pass over
    the caps, far cheaper than ``tf.sort``). Where even ``eps = max cap`` cannot reach the
    target, that ``eps`` is returned (the achieved SNR is then higher).

    ``match_clipped=False``: seed 002's unclipped formula ``||x|| / (10^(snr/20) ||d||)``
    (clipping then raises the achieved SNR).

    Zero directions give ``eps = 0``.

    References:
      Seed document 002 (IMT Atlantique internship report), section 3, eq. (2).
    """
    x = tf.convert_to_tensor(x)
    dtype = x.dtype
    n = tf.shape(x)[0]
    flat_x = tf.reshape(x, [n, -1])
    flat_d = tf.reshape(tf.cast(step_direction, dtype), [n, -1])
    target2 = tf.reduce_sum(tf.square(flat_x), 1) / tf.pow(tf.cast(10.0, dtype),
                                                            tf.cast(snr_db, dtype) / 10.0)
    unclipped = tf.sqrt(tf.math.divide_no_nan(target2, tf.reduce_sum(tf.square(flat_d), 1)))
    if not match_clipped:
        return unclipped
    lo, hi = tf.cast(clip_min, dtype), tf.cast(clip_max, dtype)
    zero = tf.zeros_like(flat_x)
    caps = tf.where(flat_d > 0, hi - flat_x, tf.where(flat_d < 0, flat_x - lo, zero))
    caps = tf.maximum(caps, 0.0)
    squares = tf.square(caps)

    def next_eps(eps):
        below = caps < eps[:, None]
        saturated = tf.reduce_sum(tf.where(below, squares, zero), 1)
        free = tf.reduce_sum(tf.cast(tf.logical_not(below), dtype), 1)
        new = tf.sqrt(tf.math.divide_no_nan(tf.maximum(target2 - saturated, 0.0), free))
        return tf.where(free > 0, tf.maximum(eps, new), eps)  # monotone; stays when done

    def body(i, eps, _):
        new = next_eps(eps)
        return i + 1, new, tf.reduce_any(new > eps)

    _, eps, _ = tf.while_loop(lambda i, eps, moving: tf.logical_and(moving, i < _MAX_SEGMENTS),
                              body, (tf.constant(0), unclipped, tf.constant(True)))
    reachable = tf.reduce_sum(squares, 1) >= target2
    return tf.where(reachable, eps, tf.reduce_max(caps, 1))


_MAX_SEGMENTS = 256  # a safety bound on the loop above; it stops after a few steps


# Seed document 002, section 3 (SNR-bounded FGSM); Goodfellow et al. ICLR 2015.
def snr_step(x, step_direction, snr_db, *, clip_min=0.0, clip_max=1.0, match_clipped=True):
    """:func:`fgm_step` with the per-example budget of :func:`snr_eps`."""
    x = tf.convert_to_tensor(x)
    eps = snr_eps(x, step_direction, snr_db, clip_min=clip_min, clip_max=clip_max,
                  match_clipped=match_clipped)
    return fgm_step(x, step_direction, eps, clip_min, clip_max)


# ----------------------------------------------------------------------------- XLA

_JIT = {"enabled": False}


def jit_enabled() -> bool:
    """Whether the attack kernels are compiled with XLA here (see :func:`jit_compile`)."""
    return _JIT["enabled"]


@contextlib.contextmanager
def jit_compile(enabled: bool = True):
    """Inside the block the compiled attack kernels (the functions made with
    :func:`compiled`: the logits-and-gradient pass of FGSM/FGM and of every attack built on
    ``prepare(gradient=...)``, the compiled forward pass and the PGD/BIM loop) run as
    ``tf.function(jit_compile=True)``; the previous setting is restored after it. Each
    variant is traced once per input signature, so switching back and forth is cheap."""
    previous = _JIT["enabled"]
    _JIT["enabled"] = bool(enabled)
    try:
        yield
    finally:
        _JIT["enabled"] = previous


class _Compiled:
    """A plain and an XLA ``tf.function`` of one Python function; a call runs the one
    :func:`jit_compile` selects."""

    def __init__(self, fn, kwargs):
        functools.update_wrapper(self, fn)
        self._plain = tf.function(fn, **kwargs)
        self._xla = tf.function(fn, jit_compile=True, **kwargs)

    def __call__(self, *args, **kwargs):
        return (self._xla if _JIT["enabled"] else self._plain)(*args, **kwargs)


def compiled(**kwargs):
    """Decorator: ``tf.function(fn, **kwargs)``, or with ``jit_compile=True`` inside a
    :func:`jit_compile` block."""
    return lambda fn: _Compiled(fn, kwargs)
