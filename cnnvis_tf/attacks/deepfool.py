"""DeepFool: the smallest L2 step across the linearized nearest decision boundary."""

import functools
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from cnnvis_tf.attacks._common import (
    check_bool,
    check_budget,
    check_positive_int,
    finish,
    invalid,
    prepare,
)

__all__ = ["deepfool"]


@tf.function(reduce_retracing=True)
def _jacobian(model_fn, x):
    """Logits and their Jacobian w.r.t. ``x``; one trace per model (not per call)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = tf.cast(model_fn(x), tf.float32)
    return logits, tape.batch_jacobian(logits, x)


def _jacobian_fn(model_fn):
    return functools.partial(_jacobian, model_fn)


def deepfool(
    model_fn: Callable,
    x: ArrayLike,
    *,
    nb_candidate: int = 10,
    overshoot: float = 0.02,
    max_iter: int = 50,
    y: ArrayLike | None = None,
    targeted: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    from_probabilities: bool = False,
) -> np.ndarray:
    """Iteratively steps to the nearest linearized boundary among the top candidates.

    Untargeted only. Each step moves every not-yet-fooled example by
    ``(|f_k| / ||w_k||_2 + 1e-4) * w_k / ||w_k||_2`` towards its closest class ``k``
    (``f_k``, ``w_k``: logit and gradient differences to the original class); the total is
    scaled by ``1 + overshoot`` and clipped to the box.

    Args:
      model_fn: callable mapping a batch to logits.
      x: batch of inputs in ``[clip_min, clip_max]``.
      nb_candidate: how many top classes (by clean logit) are candidates.
      overshoot: relative overshoot so the boundary is crossed.
      max_iter: maximum number of linearization steps.
      y: the classes to leave (default: the model's predictions).
      targeted: must be False.
      clip_min: lower bound of the input space.
      clip_max: upper bound of the input space.
      from_probabilities: ``model_fn`` outputs softmax probabilities instead of logits.

    Returns:
      float32 numpy array, the adversarial batch.

    Raises:
      InputError: bad arguments or inputs (including ``targeted=True``).

    References:
      Moosavi-Dezfooli, Fawzi, Frossard. DeepFool: a simple and accurate method to fool
      deep neural networks. CVPR 2016.
    """
    if check_bool("targeted", targeted):
        raise invalid("targeted", "False (DeepFool is untargeted)", targeted)
    nb_candidate, overshoot, max_iter = check_deepfool_args(nb_candidate, overshoot, max_iter)
    model_fn, x, y, logits = prepare(
        model_fn, x, y=y, clip_min=clip_min, clip_max=clip_max,
        from_probabilities=from_probabilities,
    )
    x_adv = _deepfool(_jacobian_fn(model_fn), x.numpy(), y.numpy(), logits, nb_candidate,
                      overshoot, max_iter, clip_min, clip_max)
    return finish(x_adv, clip_min, clip_max)


def check_deepfool_args(nb_candidate: int, overshoot: float, max_iter: int,
                        max_iter_name: str = "max_iter") -> tuple[int, float, int]:
    """``(nb_candidate, overshoot, max_iter)`` checked: the candidates are the label and at
    least one other class."""
    if check_positive_int("nb_candidate", nb_candidate) < 2:
        raise invalid("nb_candidate", "an integer >= 2 (the label and another class)",
                      nb_candidate)
    return (int(nb_candidate), check_budget("overshoot", overshoot),
            check_positive_int(max_iter_name, max_iter))


def _deepfool(jac, x0, label, logits, nb_candidate, overshoot, max_iter, clip_min, clip_max):
    """DeepFool on numpy arrays with a compiled ``jac`` (shared by universal perturbations)."""
    n, k = x0.shape[0], min(nb_candidate, logits.shape[1])
    order = np.argsort(-logits, axis=1)
    # Candidate classes: the label first, then the other top-scoring classes.
    cand = np.stack([np.concatenate([[label[i]], [c for c in order[i] if c != label[i]][: k - 1]])
                     for i in range(n)])
    r_tot = np.zeros_like(x0)
    x_adv = x0.copy()
    rows, idx = np.arange(n)[:, None], np.arange(n)
    for _ in range(max_iter):
        z, j = jac(tf.constant(x_adv))
        z, j = z.numpy(), j.numpy().reshape(n, z.shape[1], -1)
        active = z.argmax(axis=1) == label
        if not active.any():
            break
        zc, jc = z[rows, cand], j[rows, cand]  # (n, k), (n, k, d)
        f = zc[:, 1:] - zc[:, :1]
        w = jc[:, 1:] - jc[:, :1]
        wn = np.linalg.norm(w, axis=2) + 1e-12
        dist = np.abs(f) / wn
        best = dist.argmin(axis=1)
        step = ((dist[idx, best] + 1e-4) / wn[idx, best])[:, None] * w[idx, best]
        step[~active] = 0.0
        r_tot += step.reshape(x0.shape)
        x_adv = np.clip(x0 + (1.0 + overshoot) * r_tot, clip_min, clip_max).astype(np.float32)
    return x_adv
