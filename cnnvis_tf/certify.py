"""Certified robustness: randomized smoothing (L2 certificates) and CLEVER scores.

:class:`Smoothed` is the smoothed classifier ``g(x) = argmax_c P(f(x + N(0, s^2 I)) = c)``
of a base model ``f``: :meth:`~Smoothed.predict` answers a class or abstains (binomial
test), :meth:`~Smoothed.certify` answers a class and an L2 radius within which ``g`` is
provably constant with probability ``1 - alpha`` (Clopper-Pearson lower bound ``p_A``,
radius ``sigma * Phi^-1(p_A)``). The noise of each image is keyed by the seed, the call and
the image's index, so a set split into shards or across replicas draws the same noise.

:func:`clever` estimates a robustness lower bound (not a certificate) from the extreme
values of local gradient norms (reverse Weibull fit).
"""

from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike
from scipy import stats

from cnnvis_tf.attacks import _steps, forward
from cnnvis_tf.checks import check_fraction, check_images, check_positive, check_positive_int

__all__ = ["ABSTAIN", "Smoothed", "clopper_pearson_lower", "certified_radius",
           "certified_accuracy", "clever"]

ABSTAIN = -1


def clopper_pearson_lower(successes: ArrayLike, trials: ArrayLike, alpha: float) -> np.ndarray:
    """One-sided ``1 - alpha`` Clopper-Pearson lower confidence bound of a binomial
    proportion: ``Beta(alpha; k, n - k + 1)`` quantile (0 when ``k = 0``)."""
    k, n = np.asarray(successes, np.float64), np.asarray(trials, np.float64)
    with np.errstate(invalid="ignore"):
        low = stats.beta.ppf(alpha, k, n - k + 1)
    return np.where(k > 0, np.nan_to_num(low), 0.0)


def certified_radius(p_lower: ArrayLike, sigma: float) -> np.ndarray:
    """``sigma * Phi^-1(p_lower)`` where ``p_lower > 1/2``, else ``ABSTAIN`` (-1)."""
    p = np.asarray(p_lower, np.float64)
    with np.errstate(divide="ignore"):
        radius = sigma * stats.norm.ppf(np.clip(p, 0.0, 1.0))
    return np.where(p > 0.5, radius, float(ABSTAIN))


# Cohen, Rosenfeld, Kolter. Certified Adversarial Robustness via Randomized Smoothing.
# ICML 2019.
class Smoothed:
    """The Gaussian-smoothed version of ``model_fn``.

    Args:
      model_fn: callable mapping a batch to logits (its arg-max is the base decision).
      num_classes: number of classes.
      sigma: standard deviation of the noise (input units).
      batch_size: noisy copies per forward pass.
      seed: seed of the noise (stateless draws keyed by seed, call number and image index).
    """

    def __init__(self, model_fn: Callable, num_classes: int, sigma: float = 0.25, *,
                 batch_size: int = 1000, seed: int = 0):
        self.model_fn = model_fn
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.sigma = check_positive("sigma", sigma)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.seed = seed
        self._calls = 0

    def counts(self, x: ArrayLike, num: int, *, start: int = 0) -> np.ndarray:
        """Class counts, shape ``(N, num_classes)``, of the base decisions on ``num``
        noisy copies of each image of ``x`` (copies of several images share a batch).

        ``start`` is the index of ``x[0]`` in the whole set: image ``start + i`` of the
        k-th call gets the same noise however the set is split (shards, replicas)."""
        x = np.asarray(x, np.float32)
        num = check_positive_int("num", num)
        call, self._calls = self._calls, self._calls + 1
        out = np.zeros((len(x), self.num_classes), np.int64)
        per_batch = max(1, self.batch_size // num)  # whole images per batch when num small
        if per_batch > 1:
            for s in range(0, len(x), per_batch):
                xs = x[s:s + per_batch]
                noise = tf.concat([self._noise(call, start + s + i, 0, (num, *x.shape[1:]))
                                   for i in range(len(xs))], 0)
                pred = self._predict(tf.repeat(tf.constant(xs), num, axis=0), noise)
                pred = pred.reshape(len(xs), num)
                for i in range(len(xs)):
                    out[s + i] = np.bincount(pred[i], minlength=self.num_classes)
            return out
        for i in range(len(x)):
            remaining, chunk = num, 0
            while remaining:
                b = min(self.batch_size, remaining)
                rep = tf.repeat(tf.constant(x[i:i + 1]), b, axis=0)
                noise = self._noise(call, start + i, chunk, (b, *x.shape[1:]))
                out[i] += np.bincount(self._predict(rep, noise), minlength=self.num_classes)
                remaining, chunk = remaining - b, chunk + 1
        return out

    def _noise(self, call, index, chunk, shape):
        key = tf.constant([int(self.seed or 0), 0], tf.int64)
        for data in (call, index, chunk):
            key = tf.random.experimental.stateless_fold_in(key, data)
        return tf.random.stateless_normal(shape, key)

    def _predict(self, batch, noise):
        return np.asarray(forward(self.model_fn, batch + self.sigma * noise)).argmax(1)

    def predict(self, x: ArrayLike, n: int = 1000, alpha: float = 0.001, *,
                start: int = 0) -> np.ndarray:
        """Smoothed prediction: the top class if a two-sided binomial test of its count
        against the runner-up's rejects equality at level ``alpha``, else ``ABSTAIN``.

        Returns:
          int64 array of classes (``ABSTAIN`` = -1 where abstaining).
        """
        alpha = check_fraction("alpha", alpha, low_open=True, high_open=True)
        counts = self.counts(x, n, start=start)
        order = np.argsort(-counts, axis=1)
        top, second = order[:, 0], order[:, 1]
        rows = np.arange(len(counts))
        n_a, n_b = counts[rows, top], counts[rows, second]
        pvalues = np.array([stats.binomtest(int(a), int(a + b), 0.5).pvalue
                            for a, b in zip(n_a, n_b)])
        return np.where(pvalues <= alpha, top, ABSTAIN).astype(np.int64)

    def certify(self, x: ArrayLike, n0: int = 100, n: int = 100_000, alpha: float = 0.001, *,
                start: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CERTIFY of Cohen et al.: the class guessed from ``n0`` draws, its probability
        bounded below from ``n`` fresh draws (Clopper-Pearson, level ``1 - alpha``);
        ``start`` as in :meth:`counts`.

        Returns:
          ``(prediction, radius, p_lower)`` numpy arrays; ``prediction`` is ``ABSTAIN``
          and ``radius`` -1 where ``p_lower <= 1/2``.
        """
        alpha = check_fraction("alpha", alpha, low_open=True, high_open=True)
        guess = self.counts(x, n0, start=start).argmax(1)
        counts = self.counts(x, n, start=start)
        n_a = counts[np.arange(len(counts)), guess]
        p_lower = clopper_pearson_lower(n_a, n, alpha)
        radius = certified_radius(p_lower, self.sigma)
        pred = np.where(radius >= 0, guess, ABSTAIN).astype(np.int64)
        return pred, radius, p_lower


def certified_accuracy(prediction: ArrayLike, radius: ArrayLike, y: ArrayLike,
                       radii: Sequence[float]) -> list[float]:
    """Fraction of examples predicted correctly with a certified radius ``>= r``, for each
    ``r`` in ``radii`` (abstentions count as wrong). Non-increasing in ``r``."""
    prediction, radius, y = (np.asarray(a) for a in (prediction, radius, y))
    ok = (prediction == y) & (prediction != ABSTAIN)
    return [float(np.mean(ok & (radius >= r))) for r in radii]


@tf.function(reduce_retracing=True)
def _margin_grad_norm(model_fn, z, label, target, q):
    with tf.GradientTape() as tape:
        tape.watch(z)
        logits = tf.cast(model_fn(z), tf.float32)
        g = tf.gather(logits, label, batch_dims=1) - tf.gather(logits, target, batch_dims=1)
        total = tf.reduce_sum(g)
    grad = tf.reshape(tape.gradient(total, z), [tf.shape(z)[0], -1])
    if q == 1:
        return g, tf.reduce_sum(tf.abs(grad), 1)
    return g, tf.sqrt(tf.reduce_sum(grad * grad, 1))


# Weng, Zhang, Chen, Yi, Su, Gao, Hsieh, Daniel. Evaluating the Robustness of Neural
# Networks: An Extreme Value Theory Approach (CLEVER). ICLR 2018.
def clever(model_fn: Callable, x: ArrayLike, *, norm: float | int = 2, radius: float | None = None,
           nb_batch: int = 50, batch_size: int = 100, targets: str = "top2", seed: int = 0,
           clip_min: float = 0.0, clip_max: float = 1.0) -> np.ndarray:
    """CLEVER score of each image: ``min_j min(g_j(x) / L_j, radius)``, ``g_j = f_c - f_j``
    and ``L_j`` the location of a reverse Weibull fitted to ``nb_batch`` maxima of
    ``||grad g_j||_q`` over ``batch_size`` points drawn uniformly in the ``norm`` ball
    of ``radius`` (``q`` the dual norm).

    Args:
      norm: 2 or ``np.inf``.
      radius: sampling radius (default 2.0 for L2, 0.3 for L-inf, times the box span).
      targets: ``"top2"`` (the runner-up class) or ``"all"`` (every other class).

    Returns:
      float numpy array of scores (an estimated lower bound of the minimal adversarial
      distortion; not a certificate).
    """
    norm = 2 if norm == 2 else np.inf
    x = check_images(x, clip_min, clip_max)
    span = float(clip_max) - float(clip_min)
    radius = check_positive("radius", radius if radius is not None
                            else (2.0 if norm == 2 else 0.3) * span)
    nb_batch = check_positive_int("nb_batch", nb_batch)
    batch_size = check_positive_int("batch_size", batch_size)
    logits = np.asarray(forward(model_fn, tf.constant(x, tf.float32)))
    seed_gen = keras.random.SeedGenerator(seed)
    q = 1 if norm == np.inf else 2
    scores = np.zeros(len(x))
    for i in range(len(x)):
        label = int(logits[i].argmax())
        others = np.argsort(-logits[i])[1:]
        best = radius
        for j in (others[:1] if targets == "top2" else others):
            xi = tf.repeat(tf.constant(x[i:i + 1], tf.float32), batch_size, axis=0)
            lab = tf.fill([batch_size], tf.constant(label, tf.int64))
            tgt = tf.fill([batch_size], tf.constant(int(j), tf.int64))
            maxima = []
            for _ in range(nb_batch):
                z = xi + _steps.random_start(xi, radius, norm, seed_gen)
                z = tf.clip_by_value(z, clip_min, clip_max)
                _, gnorm = _margin_grad_norm(model_fn, z, lab, tgt, q)
                maxima.append(float(tf.reduce_max(gnorm)))
            g0 = float(logits[i, label] - logits[i, j])
            lip = _weibull_location(np.asarray(maxima))
            best = min(best, g0 / lip if lip > 0 else radius)
        scores[i] = best
    return scores


def _weibull_location(maxima):
    """Location of a reverse Weibull fitted to batch maxima (at least their maximum)."""
    top = float(np.max(maxima))
    if np.allclose(maxima, top):
        return top
    try:
        _, loc, _ = stats.weibull_max.fit(maxima, loc=top * 1.01)
    except Exception:  # a failed fit falls back on the sample maximum
        return top
    return float(loc) if np.isfinite(loc) and loc >= top else top
