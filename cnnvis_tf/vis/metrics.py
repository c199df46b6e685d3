"""Explanation quality: fidelity, sanity checks and simplicity of attribution maps.

Every metric takes a batch of images, their (N, H, W) maps and classes and returns one
number per image; the model is called on many perturbed images at once (``batch_size``).
``model_fn`` is any function from images (B, H, W, C) to logits (B, classes), e.g.
``cnnvis_tf.vis._model.ResolvedModel(model).logits``; ``explain`` is a function
``(x, classes) -> (N, H, W) maps`` (:func:`cnnvis_tf.vis.attribution.explainer`).

- Fidelity: :func:`deletion` and :func:`insertion` (area under the class-probability curve
  as pixels are removed or inserted in the map's order), :func:`mu_fidelity` (correlation of
  attribution sums of random subsets with the output drop when they are removed).
- Sanity checks: :func:`randomization_check` (the map after re-initializing the layers one
  by one from the top; Spearman rank correlation with the original map, per layer) and
  :func:`random_logit` (the map of the true class vs that of a random other class).
- Simplicity: :func:`sparseness` (Gini index) and :func:`complexity` (entropy).

This module imports no other part of ``cnnvis_tf.vis``: it works on any model function.

References:
  Petsiuk, V., Das, A. and Saenko, K. RISE: Randomized Input Sampling for Explanation of
  Black-box Models. BMVC 2018 (deletion, insertion).
  Bhatt, U., Weller, A. and Moura, J. M. F. Evaluating and Aggregating Feature-based Model
  Explanations. IJCAI 2020 (MuFidelity, complexity).
  Adebayo, J. et al. Sanity Checks for Saliency Maps. NeurIPS 2018 (cascading
  randomization).
  Sixt, L., Granz, M. and Landgraf, T. When Explanations Lie: Why Many Modified BP
  Attributions Fail. ICML 2020 (random logit).
  Chalasani, P. et al. Concise Explanations of Neural Networks using Adversarial Training.
  ICML 2020 (Gini sparseness).
"""

import dataclasses
import math
import warnings
from typing import Callable, Optional, Sequence, Union

import keras
import numpy as np
from scipy import ndimage, stats

from cnnvis_tf.checks import check_fraction, check_positive, check_positive_int, invalid
from cnnvis_tf.errors import InputError

ModelFn = Callable[[np.ndarray], np.ndarray]
Explainer = Callable[[np.ndarray, np.ndarray], np.ndarray]
BASELINES = ("zeros", "blur", "mean")


def _check(x, maps, classes):
    x = np.asarray(x, "float32")
    if x.ndim != 4:
        raise InputError(f"Images must be a batch (N, H, W, C); received shape {x.shape}.")
    maps = np.asarray(maps, "float64")
    if maps.ndim == 4:
        maps = maps.sum(axis=-1)
    if maps.shape != x.shape[:3]:
        raise InputError(f"Maps of shape {maps.shape} do not match images of shape {x.shape}; "
                         "pass one (H, W) or (H, W, C) map per image at the image size.")
    if not np.all(np.isfinite(maps)):
        raise InputError("The attribution maps hold NaN or inf values; check the method.")
    classes = np.asarray(classes).astype("int64").reshape(-1)
    if len(classes) != len(x):
        raise InputError(f"Got {len(classes)} classes for {len(x)} images; pass one per image.")
    return x, maps, classes


def baseline_images(x: np.ndarray, baseline: Union[str, float, np.ndarray] = "zeros", *,
                    blur_sigma: Optional[float] = None) -> np.ndarray:
    """What removed pixels become, per image (N, H, W, C) float32.

    Args:
      x: images (N, H, W, C).
      baseline: ``"zeros"``; ``"blur"`` (each image Gaussian-blurred, Petsiuk et al.'s
        insertion start); ``"mean"`` (each image's per-channel mean); a number; or an
        array broadcastable to one image.
      blur_sigma: std of the blur in pixels (default: a tenth of the image side).
    """
    x = np.asarray(x, "float32")
    if isinstance(baseline, str):
        if baseline == "zeros":
            return np.zeros_like(x)
        if baseline == "mean":
            return np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape).copy()
        if baseline == "blur":
            sigma = max(x.shape[1:3]) / 10 if blur_sigma is None else check_positive(
                "blur_sigma", blur_sigma)
            return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="nearest")
        raise invalid("baseline", f"one of {', '.join(BASELINES)}, a number or an array",
                      baseline)
    try:
        base = np.broadcast_to(np.asarray(baseline, "float32"), x.shape[1:])
    except ValueError as e:
        raise invalid("baseline", f"a number or an array broadcastable to {x.shape[1:]}",
                      f"array of shape {np.shape(baseline)}") from e
    if not np.all(np.isfinite(base)):
        raise invalid("baseline", "finite values", baseline)
    return np.broadcast_to(base, x.shape).copy()


def _scores(model_fn, images, classes, score):
    logits = np.asarray(model_fn(images), "float64")
    if score == "logit":
        return logits[np.arange(len(images)), classes]
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    return p[np.arange(len(images)), classes]


def _check_score(score):
    if score not in ("probability", "logit"):
        raise invalid("score", "'probability' or 'logit'", score)
    return score


def _ranks(maps, seed):
    """Rank of each pixel in decreasing map order (0 = most important), (N, H, W); ties are
    broken in a seeded random order so that flat regions are not read top-left first."""
    n, h, w = maps.shape
    flat = maps.reshape(n, -1)
    tie = np.random.default_rng(seed).random(flat.shape[1])
    order = np.stack([np.lexsort((tie, -m)) for m in flat])
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None].repeat(n, 0), axis=1)
    return ranks.reshape(n, h, w)


@dataclasses.dataclass
class CurveResult:
    """A deletion or insertion curve per image.

    Attributes:
      fractions: (S + 1,) fraction of pixels removed (deletion) or inserted (insertion).
      scores: (N, S + 1) class score at each fraction.
      auc: (N,) area under each curve (trapezoidal rule over ``fractions`` in [0, 1]).
    """

    fractions: np.ndarray
    scores: np.ndarray
    auc: np.ndarray


def _curve(model_fn, x, maps, classes, insert, step, baseline, score, batch_size, blur_sigma,
           seed):
    x, maps, classes = _check(x, maps, classes)
    score = _check_score(score)
    batch_size = check_positive_int("batch_size", batch_size)
    n, h, w = maps.shape
    pixels = h * w
    step = w if step is None else check_positive_int("step", step)
    counts = np.minimum(np.arange(math.ceil(pixels / step) + 1) * step, pixels)
    base = baseline_images(x, baseline, blur_sigma=blur_sigma)
    ranks = _ranks(maps, seed)
    pairs = [(i, k) for i in range(n) for k in range(len(counts))]
    out = np.zeros((n, len(counts)))
    for start in range(0, len(pairs), batch_size):
        part = np.array(pairs[start : start + batch_size])
        i, k = part[:, 0], part[:, 1]
        moved = (ranks[i] < counts[k][:, None, None])[..., None]
        images = np.where(moved, x[i], base[i]) if insert else np.where(moved, base[i], x[i])
        out[i, k] = _scores(model_fn, images.astype("float32"), classes[i], score)
    fractions = counts / pixels
    return CurveResult(fractions, out, np.trapezoid(out, fractions, axis=1))


def deletion(model_fn: ModelFn, x: np.ndarray, maps: np.ndarray, classes: Sequence[int], *,
             step: Optional[int] = None, baseline: Union[str, float, np.ndarray] = "zeros",
             score: str = "probability", batch_size: int = 256, blur_sigma: Optional[float] = None,
             seed: int = 0) -> CurveResult:
    """Deletion (Petsiuk et al. 2018): remove pixels from the most important down, ``step``
    at a time, and record the class score; a faithful map makes it fall fast (low AUC).

    Args:
      model_fn: images -> logits.
      x: images (N, H, W, C); maps: (N, H, W) or (N, H, W, C) (summed over channels);
        classes: (N,) explained classes.
      step: pixels removed per step (default: the image width, i.e. H steps).
      baseline: what removed pixels become (see :func:`baseline_images`).
      score: ``"probability"`` (softmax of the logits, as the paper) or ``"logit"``.
      batch_size: perturbed images per model call (across images and steps).
      blur_sigma: for ``baseline="blur"``.
      seed: order of pixels with equal map values.

    Returns:
      :class:`CurveResult`.
    """
    return _curve(model_fn, x, maps, classes, False, step, baseline, score, batch_size,
                  blur_sigma, seed)


def insertion(model_fn: ModelFn, x: np.ndarray, maps: np.ndarray, classes: Sequence[int], *,
              step: Optional[int] = None, baseline: Union[str, float, np.ndarray] = "blur",
              score: str = "probability", batch_size: int = 256,
              blur_sigma: Optional[float] = None, seed: int = 0) -> CurveResult:
    """Insertion (Petsiuk et al. 2018): start from ``baseline`` (default a blurred image) and
    put the original pixels back from the most important down; a faithful map makes the
    score rise fast (high AUC). Arguments as :func:`deletion`."""
    return _curve(model_fn, x, maps, classes, True, step, baseline, score, batch_size,
                  blur_sigma, seed)


def _pearson_rows(a, b):
    """Pearson correlation of each row of ``a`` with the same row of ``b``; a constant row
    gives 0."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.where(den > 1e-12, (a * b).sum(axis=1) / np.where(den > 1e-12, den, 1.0), 0.0)


def subset_masks(shape: Sequence[int], num_samples: int = 128, subset_fraction: float = 0.2,
                 grid_size: Optional[int] = 7, seed: int = 0) -> np.ndarray:
    """(num_samples, H, W) bool masks, each a random set of ``subset_fraction`` of the cells
    of a ``grid_size`` x ``grid_size`` grid (``None``: of the pixels)."""
    h, w = (int(s) for s in shape)
    num_samples = check_positive_int("num_samples", num_samples)
    frac = check_fraction("subset_fraction", subset_fraction, low_open=True)
    rows, cols = (h, w) if grid_size is None else (check_positive_int("grid_size", grid_size),) * 2
    cells = rows * cols
    k = max(1, round(frac * cells))
    rng = np.random.default_rng(seed)
    chosen = np.zeros((num_samples, cells), bool)
    for s in range(num_samples):
        chosen[s, rng.choice(cells, k, replace=False)] = True
    r = np.minimum(np.arange(h) * rows // h, rows - 1)
    c = np.minimum(np.arange(w) * cols // w, cols - 1)
    return chosen.reshape(num_samples, rows, cols)[:, r][:, :, c]


def mu_fidelity(model_fn: ModelFn, x: np.ndarray, maps: np.ndarray, classes: Sequence[int], *,
                num_samples: int = 128, subset_fraction: float = 0.2, grid_size: Optional[int] = 7,
                baseline: Union[str, float, np.ndarray] = "zeros", score: str = "logit",
                batch_size: int = 256, blur_sigma: Optional[float] = None,
                seed: int = 0) -> np.ndarray:
    """MuFidelity (Bhatt et al. 2020): Pearson correlation, over random subsets S of the
    image, between sum_{i in S} map_i and f_c(x) - f_c(x with S set to the baseline).

    Args:
      num_samples, subset_fraction, grid_size: the subsets (see :func:`subset_masks`; the
        same subsets for every image and method).
      baseline, score, batch_size, blur_sigma: as :func:`deletion` (score default logit:
        the drop of a saturated probability says little).

    Returns:
      (N,) correlations in [-1, 1] (0 for a constant map).
    """
    x, maps, classes = _check(x, maps, classes)
    score = _check_score(score)
    batch_size = check_positive_int("batch_size", batch_size)
    masks = subset_masks(x.shape[1:3], num_samples, subset_fraction, grid_size, seed)
    base = baseline_images(x, baseline, blur_sigma=blur_sigma)
    full = _scores(model_fn, x, classes, score)
    t = len(masks)
    pairs = [(i, s) for i in range(len(x)) for s in range(t)]
    drop = np.zeros((len(x), t))
    for start in range(0, len(pairs), batch_size):
        part = np.array(pairs[start : start + batch_size])
        i, s = part[:, 0], part[:, 1]
        images = np.where(masks[s][..., None], base[i], x[i]).astype("float32")
        drop[i, s] = full[i] - _scores(model_fn, images, classes[i], score)
    sums = np.einsum("nhw,thw->nt", maps, masks.astype("float64"))
    return _pearson_rows(sums, drop)


def spearman(a: np.ndarray, b: np.ndarray, absolute: bool = True) -> np.ndarray:
    """Spearman rank correlation (``scipy.stats.spearmanr``) of each map of ``a`` with the
    same map of ``b`` ((N, ...) each); with ``absolute`` the absolute values are compared
    (Adebayo et al.). Equal maps give exactly 1, a constant and a varying one 0."""
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    if a.shape != b.shape:
        raise InputError(f"Maps to compare differ in shape: {a.shape} vs {b.shape}.")
    if absolute:
        a, b = np.abs(a), np.abs(b)
    out = np.zeros(len(a))
    for i, (u, v) in enumerate(zip(a.reshape(len(a), -1), b.reshape(len(b), -1))):
        if np.array_equal(u, v) or np.ptp(u) == 0 or np.ptp(v) == 0:
            out[i] = 1.0 if np.array_equal(u, v) else 0.0
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[i] = stats.spearmanr(u, v).statistic
    return out


def weighted_layers(model: keras.Model) -> list:
    """``[(name, layer)]`` of the layers with trainable weights, bottom to top (nested
    models are entered)."""
    out = []

    def walk(layer, prefix):
        for sub in layer.layers if isinstance(layer, keras.Model) else []:
            if isinstance(sub, keras.Model):
                walk(sub, f"{prefix}{sub.name}/")
            elif sub.trainable_weights:
                out.append((f"{prefix}{sub.name}", sub))

    walk(model, "")
    return out


def reinitialize(layer: keras.layers.Layer, rng: np.random.Generator) -> None:
    """Draws new weights for ``layer`` from its own initializers (``kernel_initializer``,
    ``bias_initializer``, ...) with fresh seeds; a weight without one is permuted."""
    for v in layer.weights:
        short = v.name.split("/")[-1]
        init = getattr(layer, f"{short}_initializer", None)
        if init is not None:
            cfg = init.get_config()
            if "seed" in cfg:
                cfg["seed"] = int(rng.integers(2**31 - 1))
            value = type(init).from_config(cfg)(tuple(v.shape), dtype=v.dtype)
        else:
            value = rng.permutation(np.asarray(v).ravel()).reshape(tuple(v.shape))
        v.assign(value)


@dataclasses.dataclass
class RandomizationResult:
    """The model-parameter randomization check.

    Attributes:
      layers: names of the randomized layers, top first; stage ``l`` has layers[:l+1]
        re-initialized (cascading) or only layers[l] (independent).
      spearman: (L, N) rank correlation of each stage's map with the original map.
      maps: (L + 1, N, H, W) the original maps, then each stage's.
    """

    layers: list
    spearman: np.ndarray
    maps: np.ndarray


def randomization_check(model: keras.Model, explain: Explainer, x: np.ndarray,
                        classes: Sequence[int], *, layers: Optional[Sequence[str]] = None,
                        mode: str = "cascading", absolute: bool = True, seed: int = 0,
                        maps: Optional[np.ndarray] = None) -> RandomizationResult:
    """Model-parameter randomization (Adebayo et al. 2018): re-initialize the layers one by
    one from the top and compare each map with the original (Spearman rank correlation). A
    map that explains the model changes; one that stays (correlation near 1) does not
    depend on what the model learned. The weights are restored afterwards.

    Args:
      model: the ``keras.Model`` that ``explain`` reads (changed in place, then restored).
      explain: ``(x, classes) -> (N, H, W)`` maps of ``model``.
      x, classes: images and explained classes (kept fixed).
      layers: layer names to randomize (default: every layer with weights), bottom to top.
      mode: ``"cascading"`` (randomize cumulatively from the top) or ``"independent"``
        (one layer at a time).
      absolute: compare absolute values.
      seed: seed of the new weights.
      maps: the original maps if already computed.

    Returns:
      :class:`RandomizationResult`.
    """
    if mode not in ("cascading", "independent"):
        raise invalid("mode", "'cascading' or 'independent'", mode)
    found = dict(weighted_layers(model))
    names = list(found) if layers is None else list(layers)
    bad = [n for n in names if n not in found]
    if bad or not names:
        raise InputError(f"Cannot randomize layers {bad or names}: choose layers with weights "
                         f"from {', '.join(found) or '(none: the model has no weights)'}.")
    x = np.asarray(x, "float32")
    classes = np.asarray(classes)
    orig = np.asarray(explain(x, classes) if maps is None else maps, "float64")
    saved = [np.array(v) for v in model.weights]
    rng = np.random.default_rng(seed)
    top_down = names[::-1]
    stages, rho = [orig], []
    try:
        for name in top_down:
            if mode == "independent":
                for v, value in zip(model.weights, saved):
                    v.assign(value)
            reinitialize(found[name], rng)
            stages.append(np.asarray(explain(x, classes), "float64"))
            rho.append(spearman(orig, stages[-1], absolute))
    finally:
        for v, value in zip(model.weights, saved):
            v.assign(value)
    return RandomizationResult(top_down, np.array(rho), np.array(stages, "float32"))


def other_classes(classes: Sequence[int], num_classes: int, seed: int = 0) -> np.ndarray:
    """A random class other than each of ``classes`` (uniform over the others, seeded)."""
    num_classes = check_positive_int("num_classes", num_classes)
    if num_classes < 2:
        raise invalid("num_classes", "at least 2", num_classes)
    classes = np.asarray(classes).astype("int64")
    rng = np.random.default_rng(seed)
    return (classes + rng.integers(1, num_classes, len(classes))) % num_classes


def random_logit(explain: Explainer, x: np.ndarray, classes: Sequence[int], num_classes: int,
                 *, maps: Optional[np.ndarray] = None, absolute: bool = True, seed: int = 0,
                 other: Optional[np.ndarray] = None) -> tuple:
    """Random-logit check (Sixt et al. 2020; Adebayo et al. 2018): Spearman correlation of
    the map of each image's class with the map of a random other class. A class-sensitive
    method gives low values.

    Args:
      explain, x, classes: the method, images and their classes.
      num_classes: classes of the model.
      maps: the maps of ``classes`` if already computed.
      absolute: compare absolute values.
      seed: seed of the other classes (see :func:`other_classes`).
      other: the other classes to use instead.

    Returns:
      ``(similarity (N,), other classes (N,))``.
    """
    classes = np.asarray(classes).astype("int64")
    other = other_classes(classes, num_classes, seed) if other is None else np.asarray(other)
    if other.shape != classes.shape or np.any(other == classes):
        raise InputError("`other` must hold one class per image, each different from the "
                         "image's class.")
    x = np.asarray(x, "float32")
    maps = explain(x, classes) if maps is None else maps
    return spearman(maps, explain(x, other), absolute), other


def _abs_flat(maps):
    m = np.abs(np.asarray(maps, "float64"))
    if m.ndim == 4:
        m = m.sum(axis=-1)
    return m.reshape(len(m), -1)


def sparseness(maps: np.ndarray) -> np.ndarray:
    """Gini index of |map| per image (Chalasani et al. 2020): 0 for a flat map, near 1 when
    one pixel holds all the mass. (N,) values; an all-zero map counts as flat."""
    a = np.sort(_abs_flat(maps), axis=1)
    n = a.shape[1]
    k = np.arange(1, n + 1)
    total = a.sum(axis=1)
    gini = ((2 * k - n - 1) * a).sum(axis=1) / (n * np.where(total > 0, total, 1.0))
    return np.where(total > 0, gini, 0.0)


def complexity(maps: np.ndarray) -> np.ndarray:
    """Entropy (nats) of the fractional contributions |map_i| / sum |map| per image (Bhatt
    et al. 2020): low for a concentrated map, log(H*W) for a flat one (also for an
    all-zero map). (N,) values."""
    a = _abs_flat(maps)
    total = a.sum(axis=1, keepdims=True)
    p = np.where(total > 0, a / np.where(total > 0, total, 1.0), 1.0 / a.shape[1])
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
