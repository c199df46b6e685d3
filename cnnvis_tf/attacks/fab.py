"""FAB: Fast Adaptive Boundary attack (minimum-norm; L-inf and L2).

Each step linearizes the decision boundary at the iterate (all classes, or one target
class for FAB-T), projects both the iterate and the original point onto that hyperplane
intersected with the input box, and moves to a convex combination biased towards the
original point (``alpha <= alpha_max``), extrapolated by ``eta``. Once adversarial, it
steps back towards the original point by ``beta``. The projection solves
``min ||d|| s.t. <w, d> = c, box`` exactly by bisection on its one-parameter KKT family
(``d_i = clip(t u_i)``, ``u = sign(c w)`` for L-inf, ``sign(c) w`` for L2), vectorized
over the batch in one compiled loop.
"""

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from cnnvis_tf.attacks import _steps
from cnnvis_tf.attacks._common import check_norm, finish, prepare
from cnnvis_tf.checks import check_positive, check_positive_int, invalid
from cnnvis_tf.errors import InputError

__all__ = ["fab", "run_fab", "project_hyperplane_box"]

_BISECT = 30


def _norm(d, norm):
    return tf.reduce_max(tf.abs(d), 1) if norm != 2 else tf.sqrt(tf.reduce_sum(d * d, 1))


def project_hyperplane_box(w: tf.Tensor, c: tf.Tensor, lo: tf.Tensor, hi: tf.Tensor,
                           norm: float | int | str = np.inf) -> tf.Tensor:
    """The smallest ``d`` (in ``norm``) with ``<w, d> = c`` and ``lo <= d <= hi``, row by
    row (flat ``(N, D)`` tensors, ``c`` of shape ``(N,)``); where the box cannot reach the
    hyperplane, the box point closest to it."""
    s = tf.sign(c)[:, None]
    u = tf.sign(w) * s if norm != 2 else w * s
    target = tf.abs(c)

    def reach(t):
        return tf.reduce_sum(s * w * tf.clip_by_value(t[:, None] * u, lo, hi), 1)

    if norm != 2:
        low = target / (tf.reduce_sum(tf.abs(w), 1) + 1e-12)
        high = tf.reduce_max(hi - lo, 1) + low
        mid = lambda a, b: 0.5 * (a + b)  # noqa: E731
    else:
        low = target / (tf.reduce_sum(w * w, 1) + 1e-20)
        high = low * 1e8 + 1e-12
        mid = lambda a, b: tf.sqrt(a * b + 1e-30)  # noqa: E731

    def body(i, a, b):
        m = mid(a, b)
        ok = reach(m) >= target
        return i + 1, tf.where(ok, a, m), tf.where(ok, m, b)

    _, _, high = tf.while_loop(lambda i, *_: i < _BISECT, body, (tf.constant(0), low, high))
    return tf.clip_by_value(high[:, None] * u, lo, hi)


def _boundary(model_fn, z, y, target, num_classes):
    """Logits at ``z``, and the linearized boundary ``g + <w, d> = 0`` closest to ``z``
    (``g = f_y - f_j``, the class ``j`` nearest in the dual norm, or the target)."""
    n = tf.shape(z)[0]
    if target is not None:
        with tf.GradientTape() as tape:
            tape.watch(z)
            logits = tf.cast(model_fn(z), tf.float32)
            g = tf.gather(logits, y, batch_dims=1) - tf.gather(logits, target, batch_dims=1)
            total = tf.reduce_sum(g)
        return logits, g, tf.reshape(tape.gradient(total, z), [n, -1])
    with tf.GradientTape() as tape:
        tape.watch(z)
        logits = tf.cast(model_fn(z), tf.float32)
    jac = tf.reshape(tape.batch_jacobian(logits, z), [n, num_classes, -1])
    f_y = tf.gather(logits, y, batch_dims=1)
    j_y = tf.gather(jac, y, batch_dims=1)
    g = f_y[:, None] - logits  # (N, C)
    w = j_y[:, None, :] - jac
    return logits, g, w


def _closest(g, w, y, norm):
    dual = tf.reduce_sum(tf.abs(w), 2) if norm != 2 else tf.sqrt(tf.reduce_sum(w * w, 2))
    dist = tf.abs(g) / (dual + 1e-12) + 1e30 * tf.one_hot(y, tf.shape(g)[1])
    j = tf.argmin(dist, 1, output_type=y.dtype)
    return tf.gather(g, j, batch_dims=1), tf.gather(w, j, batch_dims=1)


@tf.function(reduce_retracing=True)
def _fab_loop(model_fn, x, y, target, start, nb_iter, lo, hi, alpha_max, eta, beta, norm,
              num_classes):
    """One FAB run from ``start``; returns ``(x_best, best_norm)`` (inf: none found)."""
    shape = tf.shape(x)
    n = shape[0]
    x0 = tf.reshape(x, [n, -1])
    box_lo, box_hi = lo - x0, hi - x0
    best = tf.fill([n], tf.constant(np.inf, tf.float32))

    def body(i, z, x_best, best):
        logits, g, w = _boundary(model_fn, tf.reshape(z, shape), y, target, num_classes)
        if target is None:
            g, w = _closest(g, w, y, norm)
        d_cur = project_hyperplane_box(w, -g, lo - z, hi - z, norm)
        c0 = -(g + tf.reduce_sum(w * (x0 - z), 1))
        d_orig = project_hyperplane_box(w, c0, box_lo, box_hi, norm)
        a1, a2 = _norm(d_cur, norm), _norm(d_orig, norm)
        alpha = tf.minimum(tf.math.divide_no_nan(a1, a1 + a2), alpha_max)[:, None]
        z_new = tf.clip_by_value((1.0 - alpha) * (z + eta * d_cur)
                                 + alpha * (x0 + eta * d_orig), lo, hi)
        pred = tf.argmax(model_fn(tf.reshape(z_new, shape)), 1, output_type=y.dtype)
        adv = tf.not_equal(pred, y)
        dist = _norm(z_new - x0, norm)
        better = tf.logical_and(adv, dist < best)
        x_best = tf.where(better[:, None], z_new, x_best)
        best = tf.where(better, dist, best)
        z_new = tf.where(adv[:, None], (1.0 - beta) * x0 + beta * z_new, z_new)
        return i + 1, z_new, x_best, best

    z0 = tf.reshape(start, [n, -1])
    _, _, x_best, best = tf.while_loop(lambda i, *_: i < nb_iter, body,
                                       (tf.constant(0), z0, x0, best))
    return tf.reshape(x_best, shape), best


def run_fab(model_fn: Callable, x: ArrayLike, y: ArrayLike, logits: ArrayLike, eps: float | None,
            *, nb_iter: int = 100, norm: float | int | str = np.inf, n_restarts: int = 1,
            n_target_classes: int = 0, alpha_max: float = 0.1, eta: float = 1.05,
            beta: float = 0.9, seed: int | None = None, clip_min: float = 0.0,
            clip_max: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """FAB on checked tensors (``n_target_classes=0``: untargeted; k: FAB-T over the k
    highest-scoring other classes of the clean ``logits``).

    Returns:
      ``(x_adv, found)`` numpy: the smallest adversarial point found per example and
      whether its norm is at most ``eps`` (``eps=None``: whether one was found).
    """
    rng = keras.random.SeedGenerator(seed)
    x = tf.convert_to_tensor(x, tf.float32)
    logits = np.asarray(logits)
    num_classes = int(logits.shape[1])
    order = np.argsort(-logits, axis=1)
    x_best, best = x.numpy().copy(), np.full(len(logits), np.inf, np.float32)
    targets = [None] if not n_target_classes else \
        [order[:, k] for k in range(1, min(n_target_classes, num_classes - 1) + 1)]
    consts = [tf.constant(float(v), tf.float32) for v in (clip_min, clip_max, alpha_max, eta,
                                                            beta)]
    bound = np.inf if eps is None else float(eps)
    for target in targets:
        for r in range(n_restarts):
            idx = np.flatnonzero(best > bound) if eps is not None else np.arange(len(best))
            if not len(idx):
                break
            xs = tf.gather(x, idx)
            start = xs
            if r > 0:  # a random start inside the best ball found so far (or eps)
                radius = np.minimum(best[idx], bound if np.isfinite(bound) else 1.0)
                radius = np.where(np.isfinite(radius), radius, 1.0) * 0.5
                eta_r = _steps.clip_eta(_steps.random_start(xs, radius, norm, rng), norm,
                                        _steps.per_example(radius, xs))
                start = tf.clip_by_value(xs + eta_r, clip_min, clip_max)
            tg = None if target is None else tf.constant(target[idx], tf.int64)
            adv, dist = _fab_loop(model_fn, xs, tf.gather(y, idx), tg, start,
                                  tf.constant(nb_iter), *consts, norm, num_classes)
            adv, dist = adv.numpy(), dist.numpy()
            better = dist < best[idx]
            x_best[idx[better]] = adv[better]
            best[idx[better]] = dist[better]
    found = best <= bound * (1 + 1e-5) if eps is not None else np.isfinite(best)
    x_adv = np.where(found.reshape((-1,) + (1,) * (x_best.ndim - 1)), x_best, x.numpy())
    return x_adv, found


# Croce, Hein. Minimally distorted Adversarial Examples with a Fast Adaptive Boundary
# Attack. ICML 2020.
def fab(model_fn: Callable, x: ArrayLike, eps: float = 0.3, *, nb_iter: int = 100,
        norm: float | int | str = np.inf, n_restarts: int = 1, n_target_classes: int = 0,
        alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, seed: int | None = None,
        y: ArrayLike | None = None, targeted: bool = False, clip_min: float = 0.0,
        clip_max: float = 1.0, from_probabilities: bool = False) -> np.ndarray:
    """FAB (untargeted) or FAB-T (``n_target_classes > 0``).

    Args:
      model_fn: callable mapping a batch to logits.
      x: batch of inputs in ``[clip_min, clip_max]``.
      eps: budget; a point is changed only if FAB finds an adversarial point within
        ``eps`` (``None``: the smallest adversarial point found, any norm).
      nb_iter: iterations per restart (and per target).
      norm: ``np.inf`` or ``2``.
      n_restarts: restarts (random starts inside the best ball found).
      n_target_classes: 0 for FAB over all classes (one Jacobian per step); k for FAB-T
        over the k highest-scoring other classes (one gradient per step).
      alpha_max, eta, beta: the reference's step parameters (0.1, 1.05, 0.9).
      seed: integer seed of the random restarts.
      y: true labels (``None``: predictions).
      targeted: must be False (FAB-T picks its own targets; see ``n_target_classes``).
      clip_min, clip_max: the input box.
      from_probabilities: ``model_fn`` outputs softmax probabilities instead of logits.

    Returns:
      float32 numpy array, the adversarial batch (the original where none was found).

    References:
      Croce, Hein. Minimally distorted Adversarial Examples with a Fast Adaptive Boundary
      Attack. ICML 2020.
    """
    norm = check_norm(norm)
    nb_iter = check_positive_int("nb_iter", nb_iter)
    n_restarts = check_positive_int("n_restarts", n_restarts)
    if isinstance(n_target_classes, bool) or int(n_target_classes) != n_target_classes or \
            n_target_classes < 0:
        raise invalid("n_target_classes", "an integer >= 0", n_target_classes)
    for name, value in (("alpha_max", alpha_max), ("eta", eta), ("beta", beta)):
        check_positive(name, value)
    budget = {} if eps is None else {"eps": eps}
    model_fn, x, y, logits = prepare(model_fn, x, y=y, targeted=targeted, clip_min=clip_min,
                                     clip_max=clip_max, from_probabilities=from_probabilities,
                                     **budget)
    if targeted:
        raise InputError("FAB is untargeted (FAB-T picks its own targets: n_target_classes=k);"
                         " drop targeted=True.")
    x_adv, _ = run_fab(model_fn, x, y, logits, None if eps is None else float(eps),
                       nb_iter=nb_iter, norm=norm, n_restarts=n_restarts,
                       n_target_classes=int(n_target_classes), alpha_max=alpha_max, eta=eta,
                       beta=beta, seed=seed, clip_min=clip_min, clip_max=clip_max)
    return finish(x_adv, clip_min, clip_max)
