"""Loss landscapes: 1-D interpolation between two weight vectors and 2-D filter-normalized
random-direction surfaces.

References:
  Goodfellow, I. J., Vinyals, O. and Saxe, A. M. Qualitatively Characterizing Neural
  Network Optimization Problems. ICLR 2015 (1-D linear interpolation).
  Li, H. et al. Visualizing the Loss Landscape of Neural Nets. NeurIPS 2018.
"""

import contextlib
import os
import warnings
from collections.abc import Sequence

import keras
import numpy as np
from numpy.typing import ArrayLike

from cnnvis_tf.checks import check_labels, check_positive, check_positive_int, invalid
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import _model


@contextlib.contextmanager
def _restored(model):
    """Restores ``model``'s weights on exit (the landscape moves them temporarily)."""
    saved = model.get_weights()
    try:
        yield
    finally:
        model.set_weights(saved)


def initial_weights(model: keras.Model, path: str | None) -> list[np.ndarray]:
    """The weights stored at ``path`` (e.g. a run's ``initial.weights.h5``) as a list in
    ``model.get_weights()`` order; ``model`` itself is not changed."""
    if not path or not os.path.exists(path):
        raise InputError(f"The initial weights {path!r} are missing. Use a run directory "
                         "written by experiments.train (it saves initial.weights.h5).")
    _model.ResolvedModel(model, "initial_weights")
    with _restored(model):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optimizer variables are not needed
                model.load_weights(path)
        except (OSError, ValueError) as e:
            raise InputError(f"Cannot load initial weights from {path!r} ({e}). Rerun "
                             "experiments.train, which writes initial.weights.h5.") from e
        return model.get_weights()


def evaluate(model, x, y, batch_size=256):
    """(mean cross-entropy from logits, accuracy) of ``model`` (any Keras classifier or a
    ResolvedModel) on ``(x, y)``."""
    r = model if isinstance(model, _model.ResolvedModel) else _model.ResolvedModel(
        model, "evaluate")
    logits = r.logits(x, batch_size).astype("float64")
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    y = np.asarray(y, dtype="int64")
    return float(-logp[np.arange(len(y)), y].mean()), float((logits.argmax(-1) == y).mean())


class _Evaluator(_model.Visualizer):
    """Loss and accuracy of the model with other weights (set temporarily, see
    :func:`_restored`)."""

    def __init__(self, model, x, y, batch_size, clip_min=0.0, clip_max=1.0):
        super().__init__(model, clip_min=clip_min, clip_max=clip_max)
        self.theta = [np.asarray(w) for w in self.model.get_weights()]
        self.x = self.images(x)
        self.y = check_labels(y, len(self.x), self.resolved.num_classes)
        self.batch_size = check_positive_int("batch_size", batch_size)

    def __call__(self, weights):
        self.model.set_weights(weights)
        return evaluate(self.resolved, self.x, self.y, self.batch_size)


def loss_1d(model: keras.Model, start_weights: Sequence[np.ndarray], x: ArrayLike, y: ArrayLike,
            alphas: ArrayLike | None = None, batch_size: int = 256, *, clip_min: float = 0.0,
            clip_max: float = 1.0) -> dict:
    """Loss and accuracy along theta(alpha) = (1 - alpha) * start + alpha * theta_model.

    Args:
      model: the trained model (theta at alpha = 1); it is not modified.
      start_weights: weights at alpha = 0 (list like ``model.get_weights()``).
      x, y: evaluation data.
      alphas: interpolation coefficients (default 25 points on [-0.25, 1.25]).

    Returns:
      dict with ``alpha``, ``loss`` and ``accuracy`` arrays (data loss, no penalties).
    """
    alphas = np.linspace(-0.25, 1.25, 25) if alphas is None else np.asarray(alphas, "float64")
    ev = _Evaluator(model, x, y, batch_size, clip_min, clip_max)
    if not np.all(np.isfinite(alphas)) or alphas.ndim != 1 or not len(alphas):
        raise invalid("alphas", "a non-empty list of finite numbers", alphas)
    if len(start_weights) != len(ev.theta) or any(
        np.shape(a) != np.shape(b) for a, b in zip(start_weights, ev.theta)
    ):
        raise InputError("The start weights do not match the model's weights. Pass the "
                         "initial.weights.h5 of the same run.")
    with _restored(ev.model):
        res = [ev([(1 - a) * w0 + a * w1 for w0, w1 in zip(start_weights, ev.theta)])
               for a in alphas]
    return {"alpha": alphas.astype("float32"), "loss": np.array([r[0] for r in res], "float32"),
            "accuracy": np.array([r[1] for r in res], "float32")}


def filter_normalized_direction(model: keras.Model, rng: np.random.Generator) -> list[np.ndarray]:
    """A Gaussian direction with each filter scaled to the norm of the matching filter of
    the weights (Li et al. 2018, Sec. 4); biases, BN parameters and non-trainable weights
    get a zero direction."""
    out = []
    for var in model.weights:
        w = np.asarray(var)
        if w.ndim <= 1 or not var.trainable:
            out.append(np.zeros_like(w))
            continue
        d = rng.standard_normal(w.shape).astype(w.dtype)
        axes = tuple(range(w.ndim - 1))  # Keras kernels: last axis = output filter
        d *= np.sqrt((w**2).sum(axis=axes, keepdims=True)) / (
            np.sqrt((d**2).sum(axis=axes, keepdims=True)) + 1e-10)
        out.append(d)
    return out


def loss_2d(model: keras.Model, x: ArrayLike, y: ArrayLike, span: float = 1.0,
            resolution: int = 11, seed: int = 0, batch_size: int = 256, *, clip_min: float = 0.0,
            clip_max: float = 1.0) -> dict:
    """Loss surface f(a, b) = L(theta + a * d1 + b * d2) on a square grid.

    Args:
      model: the trained model; it is not modified.
      x, y: evaluation data.
      span: the grid covers [-span, span] in both directions.
      resolution: points per axis.
      seed: seed of the two random directions.

    Returns:
      dict with ``a``, ``b`` (resolution,), ``loss`` and ``accuracy`` (resolution,
      resolution) indexed [b, a].
    """
    resolution = check_positive_int("resolution", resolution)
    if resolution < 2:
        raise invalid("resolution", "an integer >= 2", resolution)
    span = check_positive("span", span)
    ev = _Evaluator(model, x, y, batch_size, clip_min, clip_max)
    rng = np.random.default_rng(seed)
    d1 = filter_normalized_direction(ev.model, rng)
    d2 = filter_normalized_direction(ev.model, rng)
    grid = np.linspace(-span, span, resolution)
    loss = np.zeros((len(grid), len(grid)), "float32")
    acc = np.zeros_like(loss)
    with _restored(ev.model):
        for i, b in enumerate(grid):
            for j, a in enumerate(grid):
                w = [t + a * u + b * v for t, u, v in zip(ev.theta, d1, d2)]
                loss[i, j], acc[i, j] = ev(w)
    return {"a": grid.astype("float32"), "b": grid.astype("float32"), "loss": loss,
            "accuracy": acc}


def interpolate_models(model_a: keras.Model, model_b: keras.Model, x: ArrayLike, y: ArrayLike,
                       alphas: ArrayLike | None = None, batch_size: int = 256, *,
                       clip_min: float = 0.0, clip_max: float = 1.0) -> dict:
    """Loss and accuracy along theta(alpha) = (1 - alpha) theta_A + alpha theta_B between two
    trained solutions of the same architecture (Goodfellow et al. 2015, Sec. 3).

    Args:
      model_a, model_b: the two models (alpha = 0 and alpha = 1); neither is modified.
      x, y: evaluation data.
      alphas: interpolation coefficients (default 25 points on [-0.25, 1.25]).

    Returns:
      dict as :func:`loss_1d` (``alpha``, ``loss``, ``accuracy``).

    Raises:
      InputError: if the two models' weights differ in number or shapes.
    """
    _model.ResolvedModel(model_a, "interpolate_models")
    wa, wb = model_a.get_weights(), model_b.get_weights()
    if len(wa) != len(wb) or any(np.shape(a) != np.shape(b) for a, b in zip(wa, wb)):
        raise InputError(f"The two models have different architectures ({model_a.name!r}: "
                         f"{len(wa)} weight arrays, {model_b.name!r}: {len(wb)}). Interpolate "
                         "between runs of the same model and dataset.")
    return loss_1d(model_b, wa, x, y, alphas, batch_size, clip_min=clip_min, clip_max=clip_max)
