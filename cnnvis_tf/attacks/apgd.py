"""Auto-PGD (APGD): step-size-free PGD with momentum, CE or DLR loss, L-inf or L2.

The whole run (every iteration, the checkpoints, the step halving) is one compiled
``tf.while_loop`` over the batch; restarts and APGD-T's target classes loop in Python over
the points not yet broken. The kernel's projections (:mod:`cnnvis_tf.attacks._steps`:
``direction``, ``clip_eta``) are reused.

Schedule (Croce & Hein 2020, sec. 3): first step ``2 eps``; momentum ``alpha = 0.75``;
checkpoints ``w_j = ceil(p_j n_iter)``, ``p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``; at a checkpoint the step is halved and the
iterate restarts from the best point when (1) the loss rose in at most ``rho = 0.75`` of
the steps since the last checkpoint, or (2) neither the step nor the best loss changed
since then.
"""

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from cnnvis_tf.attacks import _steps
from cnnvis_tf.attacks._common import check_norm, finish, prepare
from cnnvis_tf.checks import check_fraction, check_positive_int, invalid
from cnnvis_tf.errors import InputError

__all__ = ["apgd", "apgd_ce", "apgd_dlr", "apgd_t", "run_apgd", "checkpoints", "dlr_loss",
           "targeted_dlr_loss", "LOSSES"]

LOSSES = ("ce", "dlr")


# Croce & Hein. Reliable evaluation of adversarial robustness with an ensemble of diverse
# parameter-free attacks. ICML 2020 (APGD, sec. 3; DLR loss, sec. 4).
def checkpoints(n_iter: int) -> list[int]:
    """Iterations (1-based counts) after which APGD checks progress: ``ceil(p_j n_iter)``
    for ``p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` below 1."""
    out, p_prev, p = [], 0.0, 0.22
    while p <= 1.0:
        w = max(1, int(np.ceil(round(p * n_iter, 6))))
        if not out or w > out[-1]:
            out.append(w)
        p_prev, p = p, p + max(p - p_prev - 0.03, 0.06)
    return out


def dlr_loss(logits: ArrayLike, y: ArrayLike) -> tf.Tensor:
    """Difference-of-logits ratio ``-(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3)`` (to
    maximize; shift- and scale-invariant in the logits)."""
    z_y = tf.gather(logits, y, batch_dims=1)
    other = tf.reduce_max(logits - 1e30 * tf.one_hot(y, tf.shape(logits)[1]), 1)
    top = tf.math.top_k(logits, k=3).values
    return -(z_y - other) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr_loss(logits: ArrayLike, y: ArrayLike, target: ArrayLike) -> tf.Tensor:
    """Targeted DLR ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (to maximize; with 3
    classes ``z_pi4`` is replaced by ``z_pi3``)."""
    z_y = tf.gather(logits, y, batch_dims=1)
    z_t = tf.gather(logits, target, batch_dims=1)
    k = min(4, logits.shape[-1])
    top = tf.math.top_k(logits, k=k).values
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, k - 1]) + 1e-12)


def _objective(logits, y, target, loss, aim_target):
    """Per-example loss to maximize: CE/DLR of ``y`` or, with ``target``, towards it."""
    if loss == "ce":
        if target is not None:
            return -_steps.cross_entropy(target, logits)
        return _steps.cross_entropy(y, logits)
    return dlr_loss(logits, y) if target is None else targeted_dlr_loss(logits, y, target)


def _success(logits, y, target, aim_target):
    pred = tf.argmax(logits, 1, output_type=y.dtype)
    return tf.equal(pred, target) if aim_target else tf.not_equal(pred, y)


def _value_and_grad(model_fn, x, y, target, loss, aim_target, eot_iter):
    """Mean logits, loss and gradient over ``eot_iter`` forward passes (EOT; Athalye et al.
    2018, Synthesizing Robust Adversarial Examples)."""
    def once():
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = tf.cast(model_fn(x), tf.float32)
            value = _objective(logits, y, target, loss, aim_target)
            total = tf.reduce_sum(value)
        return logits, value, tape.gradient(total, x)

    if eot_iter == 1:
        return once()

    def body(i, logits, value, grad):
        lg, v, g = once()
        return i + 1, logits + lg, value + v, grad + g

    logits, value, grad = once()
    _, logits, value, grad = tf.while_loop(lambda i, *_: i < eot_iter, body,
                                           (tf.constant(1), logits, value, grad))
    k = float(eot_iter)
    return logits / k, value / k, grad / k


@tf.function(reduce_retracing=True)
def _apgd_loop(model_fn, x, y, target, x_start, eps, check_k, lo, hi, rho, norm, loss,
               aim_target, eot_iter):
    """One APGD run from ``x_start``; returns ``(x_best_adv, found, x_best, loss_best)``."""
    n_iter = tf.shape(check_k)[0]
    eps_b = _steps.per_example(eps, x)

    def project(z):
        return tf.clip_by_value(x + _steps.clip_eta(z - x, norm, eps_b), lo, hi)

    logits, value, grad = _value_and_grad(model_fn, x_start, y, target, loss, aim_target,
                                          eot_iter)
    found = _success(logits, y, target, aim_target)
    step = 2.0 * eps * tf.ones_like(value)
    zeros = tf.zeros_like(value)
    state = dict(i=tf.constant(0), x_adv=x_start, x_old=x_start, grad=grad, x_best=x_start,
                 grad_best=grad, loss_best=value, loss_prev=value, x_best_adv=x_start,
                 found=found, step=step, n_incr=zeros, loss_last_check=value,
                 reduced_last=tf.zeros_like(found))

    def body(s):
        i, x_adv = s["i"], s["x_adv"]
        z = project(x_adv + _steps.per_example(s["step"], x) * _steps.direction(s["grad"],
                                                                                 norm))
        momentum = project(x_adv + 0.75 * (z - x_adv) + 0.25 * (x_adv - s["x_old"]))
        z = tf.cond(i > 0, lambda: momentum, lambda: z)
        logits, value, grad = _value_and_grad(model_fn, z, y, target, loss, aim_target,
                                              eot_iter)
        hit = _success(logits, y, target, aim_target)
        keep = _steps.per_example(tf.cast(hit, x.dtype), x)
        x_best_adv = keep * z + (1.0 - keep) * s["x_best_adv"]
        n_incr = s["n_incr"] + tf.cast(value > s["loss_prev"], value.dtype)
        better = value > s["loss_best"]
        b = _steps.per_example(tf.cast(better, x.dtype), x)
        x_best = b * z + (1.0 - b) * s["x_best"]
        grad_best = b * grad + (1.0 - b) * s["grad_best"]
        loss_best = tf.maximum(value, s["loss_best"])
        k = tf.cast(check_k[i], value.dtype)
        at_check = k > 0
        reduce = tf.logical_or(n_incr <= rho * k, tf.logical_and(
            tf.logical_not(s["reduced_last"]), s["loss_last_check"] >= loss_best))
        reduce = tf.logical_and(reduce, at_check)
        r = _steps.per_example(tf.cast(reduce, x.dtype), x)
        return (dict(
            i=i + 1, x_adv=r * x_best + (1.0 - r) * z, x_old=x_adv,
            grad=r * grad_best + (1.0 - r) * grad, x_best=x_best, grad_best=grad_best,
            loss_best=loss_best, loss_prev=value, x_best_adv=x_best_adv,
            found=tf.logical_or(s["found"], hit),
            step=tf.where(reduce, s["step"] / 2.0, s["step"]),
            n_incr=tf.where(at_check, zeros, n_incr),
            loss_last_check=tf.where(at_check, loss_best, s["loss_last_check"]),
            reduced_last=tf.where(at_check, reduce, s["reduced_last"])),)

    s = tf.while_loop(lambda s: s["i"] < n_iter, body, (state,))[0]
    return s["x_best_adv"], s["found"], s["x_best"], s["loss_best"]


def _start(x, eps, norm, seed):
    """Reference start: L-inf ``x + eps t / max|t|`` (t uniform), L2 ``x + eps g / ||g||``."""
    if norm == 2:
        t = _steps.l2_direction(keras.random.normal(tf.shape(x), seed=seed))
    else:
        t = keras.random.uniform(tf.shape(x), -1.0, 1.0, seed=seed)
        axes = list(range(1, x.shape.rank))
        t = t / tf.reduce_max(tf.abs(t), axes, keepdims=True)
    return _steps.per_example(eps, x) * t


def run_apgd(model_fn: Callable, x: ArrayLike, y: ArrayLike, eps: float, *, nb_iter: int = 100,
             norm: float | int | str = np.inf, loss: str = "ce", n_restarts: int = 1,
             rho: float = 0.75, eot_iter: int = 1, target: ArrayLike | None = None,
             aim_target: bool = False, seed: int | keras.random.SeedGenerator | None = None,
             clip_min: float = 0.0, clip_max: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """APGD on checked tensors (no validation); restarts run on the points not yet broken.

    Args:
      target: optional target classes (targeted loss); ``aim_target``: success means
        "classified as ``target``" (else: "not classified as ``y``").
      seed: a ``keras.random.SeedGenerator``, an int or None.

    Returns:
      ``(x_adv, found)`` as numpy: the first successful point per example (else the point
      of highest loss) and whether one was found.
    """
    if not isinstance(seed, keras.random.SeedGenerator):
        seed = keras.random.SeedGenerator(seed)
    x = tf.convert_to_tensor(x, tf.float32)
    x_np = x.numpy()
    x_adv, found = x_np.copy(), np.zeros(len(x_np), bool)
    best = np.full(len(x_np), -np.inf, np.float32)
    marks = checkpoints(nb_iter)
    check_k = np.zeros(nb_iter, np.int32)
    for prev, w in zip([0] + marks[:-1], marks):
        check_k[w - 1] = w - prev
    consts = [tf.constant(v, tf.float32) for v in (eps, clip_min, clip_max, rho)]
    for _ in range(n_restarts):
        idx = np.flatnonzero(~found)
        if not len(idx):
            break
        xs = tf.gather(x, idx)
        start = tf.clip_by_value(xs + _start(xs, eps, norm, seed), clip_min, clip_max)
        tg = None if target is None else tf.gather(target, idx)
        adv, hit, x_best, loss_best = _apgd_loop(
            model_fn, xs, tf.gather(y, idx), tg, start, consts[0], tf.constant(check_k),
            consts[1], consts[2], consts[3], norm, loss, bool(aim_target), int(eot_iter))
        adv, hit, x_best, loss_best = (t.numpy() for t in (adv, hit, x_best, loss_best))
        x_adv[idx[hit]] = adv[hit]
        found[idx[hit]] = True
        better = ~hit & (loss_best > best[idx])
        x_adv[idx[better]] = x_best[better]
        best[idx[better]] = loss_best[better]
    return x_adv, found


def apgd(model_fn: Callable, x: ArrayLike, eps: float = 0.3, *, nb_iter: int = 100,
         norm: float | int | str = np.inf, loss: str = "ce", n_restarts: int = 1,
         rho: float = 0.75, eot_iter: int = 1, seed: int | None = None, y: ArrayLike | None = None,
         targeted: bool = False, clip_min: float = 0.0, clip_max: float = 1.0,
         from_probabilities: bool = False) -> np.ndarray:
    """Auto-PGD with the reference step-size schedule.

    Args:
      model_fn: callable (e.g. a ``keras.Model``) mapping a batch to logits; traced into a
        ``tf.function`` (randomized models: their random ops run on every call).
      x: batch of inputs in ``[clip_min, clip_max]``.
      eps: radius of the norm ball.
      nb_iter: iterations per restart (100 in AutoAttack).
      norm: ``np.inf`` or ``2``.
      loss: ``"ce"`` (cross-entropy) or ``"dlr"`` (difference of logits ratio; needs at
        least 3 classes, 4 when targeted).
      n_restarts: random restarts (each on the points not yet broken).
      rho: the checkpoint condition's fraction of loss-increasing steps.
      eot_iter: gradients averaged over this many forward passes (Expectation over
        Transformation, for randomized defenses).
      seed: integer seed of the random starts (``keras.random.SeedGenerator``).
      y: labels (or targets); ``None`` uses the model's predictions.
      targeted: move towards ``y`` (the targeted CE or DLR loss).
      clip_min: lower bound of the input space.
      clip_max: upper bound of the input space.
      from_probabilities: ``model_fn`` outputs softmax probabilities instead of logits.

    Returns:
      float32 numpy array: per example the first adversarial point found, else the point
      of highest loss.

    Raises:
      InputError: bad arguments or inputs.

    References:
      Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of
      diverse parameter-free attacks. ICML 2020.
    """
    norm, loss, kw = _check(norm, loss, nb_iter, n_restarts, rho, eot_iter)
    model_fn, x, y, logits = prepare(model_fn, x, y=y, targeted=targeted, clip_min=clip_min,
                                     clip_max=clip_max, from_probabilities=from_probabilities,
                                     eps=eps)
    _check_classes(loss, logits.shape[1])
    if targeted:
        args = dict(y=tf.constant(logits.argmax(1), tf.int64), target=y, aim_target=True)
    else:
        args = dict(y=y)
    x_adv, _ = run_apgd(model_fn, x, eps=float(eps), norm=norm, loss=loss, seed=seed,
                        clip_min=clip_min, clip_max=clip_max, **kw, **args)
    return finish(x_adv, clip_min, clip_max)


def _check(norm, loss, nb_iter, n_restarts, rho, eot_iter):
    norm = check_norm(norm)
    if loss not in LOSSES:
        raise invalid("loss", "one of " + ", ".join(map(repr, LOSSES)), loss)
    kw = dict(nb_iter=check_positive_int("nb_iter", nb_iter),
              n_restarts=check_positive_int("n_restarts", n_restarts),
              rho=check_fraction("rho", rho), eot_iter=check_positive_int("eot_iter", eot_iter))
    return norm, loss, kw


def _check_classes(loss, num_classes):
    if loss == "dlr" and num_classes < 3:
        raise invalid("loss", "'ce' for a model with 2 classes (DLR needs 3)", loss)


def apgd_ce(model_fn: Callable, x: ArrayLike, eps: float = 0.3, *, nb_iter: int = 100,
            norm: float | int | str = np.inf, n_restarts: int = 1, rho: float = 0.75,
            eot_iter: int = 1, seed: int | None = None, y: ArrayLike | None = None,
            targeted: bool = False, clip_min: float = 0.0, clip_max: float = 1.0,
            from_probabilities: bool = False) -> np.ndarray:
    """APGD with the cross-entropy loss (AutoAttack's first attack); see :func:`apgd`."""
    return apgd(model_fn, x, eps, loss="ce", nb_iter=nb_iter, norm=norm,
                n_restarts=n_restarts, rho=rho, eot_iter=eot_iter, seed=seed, y=y,
                targeted=targeted, clip_min=clip_min, clip_max=clip_max,
                from_probabilities=from_probabilities)


def apgd_dlr(model_fn: Callable, x: ArrayLike, eps: float = 0.3, *, nb_iter: int = 100,
             norm: float | int | str = np.inf, n_restarts: int = 1, rho: float = 0.75,
             eot_iter: int = 1, seed: int | None = None, y: ArrayLike | None = None,
             targeted: bool = False, clip_min: float = 0.0, clip_max: float = 1.0,
             from_probabilities: bool = False) -> np.ndarray:
    """APGD with the DLR loss (targeted: the targeted DLR); see :func:`apgd`."""
    return apgd(model_fn, x, eps, loss="dlr", nb_iter=nb_iter, norm=norm,
                n_restarts=n_restarts, rho=rho, eot_iter=eot_iter, seed=seed, y=y,
                targeted=targeted, clip_min=clip_min, clip_max=clip_max,
                from_probabilities=from_probabilities)


def apgd_t(model_fn: Callable, x: ArrayLike, eps: float = 0.3, *, n_target_classes: int = 9,
           nb_iter: int = 100, norm: float | int | str = np.inf, n_restarts: int = 1,
           rho: float = 0.75, eot_iter: int = 1, seed: int | None = None,
           y: ArrayLike | None = None, targeted: bool = False, clip_min: float = 0.0,
           clip_max: float = 1.0, from_probabilities: bool = False) -> np.ndarray:
    """APGD-T: untargeted robustness by the targeted DLR loss towards each of the
    ``n_target_classes`` highest-scoring other classes in turn (on the points not yet
    broken).

    Args:
      n_target_classes: classes ranked 2nd, 3rd, ... by the clean logits (at most
        ``num_classes - 1``; 9 in AutoAttack).
      targeted: must be False (the targets are chosen as above).
      Others: as :func:`apgd`; ``y`` are the true labels (``None``: predictions).

    Returns:
      float32 numpy array, the adversarial batch.

    References:
      Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of
      diverse parameter-free attacks. ICML 2020 (sec. 4, APGD-T).
    """
    norm, _, kw = _check(norm, "dlr", nb_iter, n_restarts, rho, eot_iter)
    n_target_classes = check_positive_int("n_target_classes", n_target_classes)
    model_fn, x, y, logits = prepare(model_fn, x, y=y, targeted=targeted, clip_min=clip_min,
                                     clip_max=clip_max, from_probabilities=from_probabilities,
                                     eps=eps)
    _check_classes("dlr", logits.shape[1])
    if targeted:
        raise InputError("APGD-T is untargeted (it picks its own target classes); drop "
                         "targeted=True, or use apgd_ce/apgd_dlr with targeted=True.")
    x_adv, _ = run_apgd_t(model_fn, x, y, logits, float(eps), norm=norm, seed=seed,
                          n_target_classes=n_target_classes, clip_min=clip_min,
                          clip_max=clip_max, **kw)
    return finish(x_adv, clip_min, clip_max)


def run_apgd_t(model_fn: Callable, x: ArrayLike, y: ArrayLike, logits: ArrayLike, eps: float, *,
               n_target_classes: int = 9, seed: int | keras.random.SeedGenerator | None = None,
               **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """APGD-T on checked tensors; ``logits`` are the clean logits (they rank the targets).

    Returns ``(x_adv, found)`` as numpy."""
    if not isinstance(seed, keras.random.SeedGenerator):
        seed = keras.random.SeedGenerator(seed)
    logits = np.asarray(logits)
    order = np.argsort(-logits, axis=1)
    x_np = np.asarray(x)
    x_adv, found = x_np.copy(), np.zeros(len(x_np), bool)
    for rank in range(1, min(n_target_classes, logits.shape[1] - 1) + 1):
        idx = np.flatnonzero(~found)
        if not len(idx):
            break
        target = tf.constant(order[idx, rank], tf.int64)
        adv, hit = run_apgd(model_fn, tf.gather(x, idx), tf.gather(y, idx), eps, loss="dlr",
                            target=target, seed=seed, **kwargs)
        x_adv[idx[hit]] = adv[hit]
        found[idx[hit]] = True
        if rank == 1:
            x_adv[idx[~hit]] = adv[~hit]
    return x_adv, found
