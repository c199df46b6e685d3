"""Universal adversarial perturbation: one image-agnostic perturbation for a whole set."""

from collections.abc import Callable

import numpy as np
import tensorflow as tf
from cleverhans.tf2.utils import clip_eta
from numpy.typing import ArrayLike

from cnnvis_tf.attacks._common import (
    check_bool,
    check_norm,
    check_positive_int,
    check_seed,
    finish,
    invalid,
    prepare,
)
from cnnvis_tf.attacks.deepfool import _deepfool, _jacobian_fn, check_deepfool_args
from cnnvis_tf.checks import check_fraction

__all__ = ["universal_perturbation", "universal"]


def universal_perturbation(
    model_fn: Callable,
    x: ArrayLike,
    eps: float = 0.1,
    *,
    norm: float | int | str = np.inf,
    target_fooling_rate: float = 0.8,
    max_passes: int = 5,
    deepfool_iter: int = 10,
    nb_candidate: int = 10,
    overshoot: float = 0.02,
    seed: int = 0,
    y: ArrayLike | None = None,
    targeted: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    from_probabilities: bool = False,
) -> np.ndarray:
    """Finds one perturbation ``v`` with ``||v|| <= eps`` that fools most of ``x``.

    Passes over ``x`` in random order; for every example still classified as its label
    under ``x + v``, adds the DeepFool step of ``x + v`` to ``v`` and projects ``v`` back
    onto the ``eps`` ball. Stops at ``target_fooling_rate`` or after ``max_passes``.

    Args:
      model_fn: callable mapping a batch to logits.
      x: the examples ``v`` is computed on, in ``[clip_min, clip_max]``.
      eps: radius of the ball ``v`` lives in.
      norm: ``np.inf`` or ``2``.
      target_fooling_rate: stop once this fraction of ``x`` is misclassified.
      max_passes: maximum passes over ``x``.
      deepfool_iter: DeepFool iterations per example.
      nb_candidate: DeepFool candidate classes.
      overshoot: DeepFool overshoot.
      seed: order of the passes.
      y: labels (default: the model's predictions).
      targeted: must be False (the perturbation is untargeted).
      clip_min: lower bound of the input space.
      clip_max: upper bound of the input space.
      from_probabilities: ``model_fn`` outputs softmax probabilities instead of logits.

    Returns:
      ``v``: float32 numpy array of shape ``x.shape[1:]``.

    Raises:
      InputError: bad arguments or inputs.

    References:
      Moosavi-Dezfooli, Fawzi, Fawzi, Frossard. Universal adversarial perturbations.
      CVPR 2017.
    """
    if check_bool("targeted", targeted):
        raise invalid("targeted", "False (universal perturbations are untargeted)", targeted)
    norm = check_norm(norm)
    max_passes = check_positive_int("max_passes", max_passes)
    rate = check_fraction("target_fooling_rate", target_fooling_rate)
    nb_candidate, overshoot, deepfool_iter = check_deepfool_args(
        nb_candidate, overshoot, deepfool_iter, "deepfool_iter")
    seed = check_seed(seed)
    model_fn, x, y, _ = prepare(
        model_fn, x, y=y, clip_min=clip_min, clip_max=clip_max,
        from_probabilities=from_probabilities, eps=eps,
    )
    x0, label = x.numpy(), y.numpy()
    v = np.zeros((1,) + x0.shape[1:], np.float32)
    rng = np.random.default_rng(seed)
    jac = _jacobian_fn(model_fn)

    def perturbed(idx):
        return np.clip(x0[idx] + v, clip_min, clip_max).astype(np.float32)

    def fooling_rate():
        pred = np.asarray(model_fn(tf.constant(perturbed(slice(None))))).argmax(axis=1)
        return float(np.mean(pred != label))

    for _ in range(max_passes):
        if fooling_rate() >= rate:
            break
        for i in rng.permutation(len(x0)):
            xi = perturbed(slice(i, i + 1))
            if np.asarray(model_fn(tf.constant(xi))).argmax(axis=1)[0] != label[i]:
                continue
            x_df = _deepfool(jac, xi, label[i : i + 1], np.asarray(model_fn(tf.constant(xi))),
                             nb_candidate, overshoot, deepfool_iter, clip_min, clip_max)
            v = clip_eta(tf.constant(v + (x_df - xi)), norm, float(eps)).numpy()
    return v[0].astype(np.float32)


def universal(model_fn: Callable, x: ArrayLike, eps: float = 0.1, *, clip_min: float = 0.0,
              clip_max: float = 1.0, **kwargs) -> np.ndarray:
    """``x + v`` (clipped) with ``v`` from :func:`universal_perturbation` computed on ``x``.

    References:
      Moosavi-Dezfooli et al. Universal adversarial perturbations. CVPR 2017.
    """
    v = universal_perturbation(model_fn, x, eps, clip_min=clip_min, clip_max=clip_max,
                               **kwargs)
    return finish(np.asarray(x) + v, clip_min, clip_max)
