"""Square attack: score-based random search, no gradients (L-inf and L2).

Each iteration changes one random square window of the perturbation (its side set by the
fraction ``p`` of pixels, halved on the reference schedule) and keeps the change where the
margin loss drops. Only the model's outputs are used (``model_fn`` may be a numpy-only
callable), so gradient masking does not stop it. Every forward pass of an example counts
as one query.
"""

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from cnnvis_tf.attacks._common import check_norm, finish, forward, prepare
from cnnvis_tf.checks import check_fraction, check_positive_int, invalid

__all__ = ["square", "run_square", "p_selection"]

# Square attack's p schedule: at these fractions (x 10,000) of the query budget p halves.
_P_STEPS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


# Andriushchenko, Croce, Flammarion, Hein. Square Attack: a query-efficient black-box
# adversarial attack via random search. ECCV 2020.
def p_selection(p_init: float, it: int, n_queries: int) -> float:
    """Fraction of pixels changed at iteration ``it`` of ``n_queries`` (reference schedule:
    ``p_init`` halved at 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 per 10,000)."""
    scaled = int(it / n_queries * 10000)
    return p_init / 2 ** sum(scaled > s for s in _P_STEPS)


def _margin(logits, y, targeted):
    """Margin to minimize: ``z_y - max_{j!=y} z_j`` (targeted: ``max_{j!=t} z_j - z_t``);
    negative means success."""
    logits = np.asarray(logits, np.float64)
    z_y = logits[np.arange(len(y)), y]
    other = logits.copy()
    other[np.arange(len(y)), y] = -np.inf
    m = z_y - other.max(1)
    return -m if targeted else m


def _eta_l2(s, rng):
    """A pseudo-Gaussian square of side ``s`` (concentric rings, weight 1/(r+1)^2), its two
    halves of opposite sign, randomly transposed, unit L2 norm."""
    def rings(h, w):
        out = np.zeros((h, w))
        ch, cw = h // 2, w // 2
        for r in range(max(ch, cw) + 1):
            out[max(ch - r, 0):min(ch + r + 1, h), max(cw - r, 0):min(cw + r + 1, w)] += \
                1.0 / (r + 1) ** 2
        return out

    half = s // 2
    eta = np.zeros((s, s))
    eta[:half] = rings(half, s)
    eta[half:] = -rings(s - half, s)
    if rng.random() > 0.5:
        eta = eta.T
    return eta / np.sqrt(np.sum(eta ** 2))


def run_square(model_fn: Callable, x: ArrayLike, y: ArrayLike, eps: float, *,
               n_queries: int = 5000, p_init: float = 0.8, norm: float | int | str = np.inf,
               targeted: bool = False, seed: int | None = None, clip_min: float = 0.0,
               clip_max: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Square attack on numpy inputs (no validation); images are ``(N, H, W, C)``.

    Returns:
      ``(x_adv, found, queries)``: numpy arrays; ``queries`` counts each example's forward
      passes (until success, or the budget).
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    n, h, w, c = x.shape
    lo, hi = np.float32(clip_min), np.float32(clip_max)

    def query(xs, ys):
        return _margin(forward(model_fn, xs.astype(np.float32)), ys, targeted)

    if norm == 2:
        delta = np.zeros_like(x)
        s = max(h // 5, 1)
        for i in range(0, h - s + 1, s):
            for j in range(0, w - s + 1, s):
                signs = rng.choice([-1.0, 1.0], size=(n, 1, 1, c))
                delta[:, i:i + s, j:j + s, :] += _eta_l2(s, rng)[None, :, :, None] * signs
        delta *= eps / np.sqrt(np.sum(delta ** 2, axis=(1, 2, 3), keepdims=True) + 1e-12)
        x_best = np.clip(x + delta, lo, hi)
    else:
        stripes = rng.choice([-eps, eps], size=(n, 1, w, c)).astype(np.float32)
        x_best = np.clip(x + stripes, lo, hi)
    margin = query(x_best, y)
    queries = np.ones(n, np.int64)
    for it in range(1, n_queries):
        idx = np.flatnonzero(margin >= 0)
        if not len(idx):
            break
        xc, xb = x[idx], x_best[idx]
        delta = xb - xc
        p = p_selection(p_init, it, n_queries)
        if norm == 2:
            cand = _l2_step(xc, delta, eps, p, rng, lo, hi)
        else:
            s = int(min(max(round(np.sqrt(p * h * w)), 1), h - 1))
            r, q = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            window = (slice(None), slice(r, r + s), slice(q, q + s), slice(None))
            new = rng.choice([-eps, eps], size=(len(idx), 1, 1, c)).astype(np.float32)
            cand = xb.copy()
            cand[window] = np.clip(xc[window] + new, lo, hi)
            same = np.all(np.abs(cand[window] - xb[window]) < 1e-7, axis=(1, 2, 3))
            if same.any():
                flipped = xb[same].copy()
                flipped[window] = np.clip(xc[same][window] - new[same], lo, hi)
                cand[same] = flipped
        m = query(cand, y[idx])
        queries[idx] += 1
        better = m < margin[idx]
        x_best[idx[better]] = cand[better]
        margin[idx[better]] = m[better]
    return x_best, margin < 0, queries


def _l2_step(xc, delta, eps, p, rng, lo, hi):
    """Moves the perturbation mass of two random windows into the first, plus a new
    pseudo-Gaussian square and the unused budget, keeping ``||delta||_2 <= eps``."""
    n, h, w, c = xc.shape
    s = int(min(max(round(np.sqrt(p * h * w)), 3), h - 1))
    r1, q1 = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
    r2, q2 = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
    w1 = (slice(None), slice(r1, r1 + s), slice(q1, q1 + s), slice(None))
    w2 = (slice(None), slice(r2, r2 + s), slice(q2, q2 + s), slice(None))
    mask = np.zeros((1, h, w, 1), np.float32)
    mask[w1] = 1.0
    mask[w2] = 1.0
    total = np.sum(delta ** 2, axis=(1, 2, 3))
    in_windows = np.sqrt(np.sum((delta * mask) ** 2, axis=(1, 2)))  # (n, c) per channel
    unused = np.sqrt(np.maximum(eps ** 2 - total, 0.0))
    budget = np.sqrt(in_windows ** 2 + unused[:, None] ** 2 / c)
    new = delta.copy()
    new[w2] = 0.0
    signs = rng.choice([-1.0, 1.0], size=(n, 1, 1, c))
    window = new[w1] + _eta_l2(s, rng)[None, :, :, None] * signs
    norm = np.sqrt(np.sum(window ** 2, axis=(1, 2), keepdims=True)) + 1e-12
    new[w1] = window / norm * budget[:, None, None, :]
    x_new = np.clip(xc + new, lo, hi)
    d = x_new - xc
    scale = np.minimum(1.0, eps / (np.sqrt(np.sum(d ** 2, axis=(1, 2, 3))) + 1e-12))
    return np.clip(xc + d * scale[:, None, None, None], lo, hi).astype(np.float32)


def square(model_fn: Callable, x: ArrayLike, eps: float = 0.3, *, n_queries: int = 5000,
           p_init: float = 0.8, norm: float | int | str = np.inf, seed: int | None = None,
           y: ArrayLike | None = None, targeted: bool = False, clip_min: float = 0.0,
           clip_max: float = 1.0, from_probabilities: bool = False,
           return_queries: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Square attack (score-based: model outputs only, no gradients).

    Args:
      model_fn: callable mapping an ``(N, H, W, C)`` batch to logits (any callable; a
        built Keras model is compiled).
      x: batch of images in ``[clip_min, clip_max]``.
      eps: radius of the norm ball.
      n_queries: query budget per example (5000 in AutoAttack).
      p_init: initial fraction of pixels per square (0.8 for L-inf and L2 as in
        AutoAttack).
      norm: ``np.inf`` or ``2``.
      seed: integer seed (numpy generator).
      y: labels (or targets); ``None`` uses the model's predictions.
      targeted: move towards ``y``.
      clip_min: lower bound of the input space.
      clip_max: upper bound of the input space.
      from_probabilities: ``model_fn`` outputs softmax probabilities instead of logits.
      return_queries: also return the per-example query counts.

    Returns:
      float32 numpy array, the adversarial batch (and the int64 query counts).

    References:
      Andriushchenko, Croce, Flammarion, Hein. Square Attack: a query-efficient black-box
      adversarial attack via random search. ECCV 2020.
    """
    norm = check_norm(norm)
    n_queries = check_positive_int("n_queries", n_queries)
    p_init = check_fraction("p_init", p_init, low_open=True)
    model_fn, x, y, _ = prepare(model_fn, x, y=y, targeted=targeted, clip_min=clip_min,
                                clip_max=clip_max, from_probabilities=from_probabilities,
                                eps=eps)
    x_np = _nhwc(x.numpy())
    x_adv, _, queries = run_square(model_fn, x_np, y.numpy(), float(eps), n_queries=n_queries,
                                   p_init=p_init, norm=norm, targeted=bool(targeted),
                                   seed=seed, clip_min=clip_min, clip_max=clip_max)
    x_adv = finish(x_adv, clip_min, clip_max)
    return (x_adv, queries) if return_queries else x_adv


def _nhwc(x):
    if x.ndim != 4:
        raise invalid("x", "images of shape (N, H, W, C)", f"array of shape {x.shape}")
    return x
