"""Projected Gradient Descent (Madry et al.) on the package's one adversarial kernel.

Unlike cleverhans, ``rand_init`` defaults to True (the attack as published) and ``nb_iter``
to 40. The start (:func:`~cnnvis_tf.attacks._steps.pgd_start`: uniform in the ball, drawn
from a ``keras.random.SeedGenerator``), the default step (``min(eps, 2.5 eps / nb_iter)``)
and the loop (:func:`~cnnvis_tf.attacks._steps.pgd_iterations`: cleverhans' PGD loop, op for
op, compiled once) are the same code that adversarial training runs inside its
``train_step``. Without the random start, L-inf results equal cleverhans' bit for bit. L2
uses an exact step normalization (cleverhans' L2 step under-steps when the gradient norm is
below 1e-6).
"""

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from cnnvis_tf import distribute
from cnnvis_tf.attacks import _steps
from cnnvis_tf.attacks._common import check_norm, check_seed, finish, prepare
from cnnvis_tf.attacks._steps import compiled
from cnnvis_tf.checks import check_nonneg, check_positive_int, invalid

__all__ = ["projected_gradient_descent", "pgd", "pgd_l2", "default_step_size"]

default_step_size = _steps.default_step_size


def projected_gradient_descent(
    model_fn: Callable,
    x: ArrayLike,
    eps: float = 0.1,
    *,
    eps_iter: float | None = None,
    nb_iter: int = _steps.DEFAULT_NB_ITER,
    norm: float | int | str = np.inf,
    rand_init: bool = True,
    seed: int | None = None,
    y: ArrayLike | None = None,
    targeted: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    from_probabilities: bool = False,
) -> np.ndarray:
    """Iterated gradient steps projected back onto the ``eps`` ball and the clip box.

    Args:
      model_fn: callable (e.g. a ``keras.Model``) mapping a batch to logits.
      x: batch of inputs in ``[clip_min, clip_max]``.
      eps: radius of the norm ball.
      eps_iter: step size; ``None`` means ``min(eps, 2.5 * eps / nb_iter)``. Must be
        ``<= eps``.
      nb_iter: number of steps (default 40).
      norm: ``np.inf`` or ``2``.
      rand_init: start from a uniform random point of the ball (default True).
      seed: integer seed of the random start (a ``keras.random.SeedGenerator``; no global
        state is touched): the same seed gives the same result, and the same start as
        ``DefenseModel(seed=seed)``'s first PGD batch. ``None``: Keras' global generator
        (set by ``keras.utils.set_random_seed``).
      y: labels (or targets); ``None`` uses the model's predictions.
      targeted: move towards ``y``.
      clip_min: lower bound of the input space.
      clip_max: upper bound of the input space.
      from_probabilities: ``model_fn`` outputs softmax probabilities instead of logits.

    Returns:
      float32 numpy array, the adversarial batch.

    Raises:
      InputError: bad arguments or inputs.

    References:
      Madry, Makelov, Schmidt, Tsipras, Vladu. Towards Deep Learning Models Resistant to
      Adversarial Attacks. ICLR 2018.
    """
    norm = check_norm(norm)
    nb_iter = check_positive_int("nb_iter", nb_iter)
    eps = check_nonneg("eps", eps)
    seed = check_seed(seed, allow_none=True)
    eps_iter = _steps.default_step_size(eps, nb_iter) if eps_iter is None else eps_iter
    eps_iter = check_nonneg("eps_iter", eps_iter)
    if eps_iter > eps:
        raise invalid("eps_iter", f"a step size <= eps={eps}", eps_iter)
    model_fn, x, y, _ = prepare(
        model_fn, x, y=y, targeted=targeted, clip_min=clip_min, clip_max=clip_max,
        from_probabilities=from_probabilities,
    )
    seed = keras.random.SeedGenerator(seed)
    # The start runs eagerly (a new SeedGenerator would retrace a compiled function).
    x_adv = _steps.pgd_start(x, eps, norm=norm, rand_init=bool(rand_init), seed=seed,
                             clip_min=clip_min, clip_max=clip_max)
    floats = [tf.constant(float(v), tf.float32) for v in (eps, eps_iter, clip_min, clip_max)]
    # Under a strategy's scope the loop runs on every replica's part of the batch.
    x_adv = distribute.split_run(_iterations_part, (x, x_adv, y), model_fn, *floats,
                                 tf.constant(nb_iter), norm, bool(targeted))
    return finish(x_adv, clip_min, clip_max)


def _iterations_part(x, x_adv, y, model_fn, *rest):
    return _iterations(model_fn, x, x_adv, y, *rest)


@compiled()  # XLA inside attacks.jit_compile()
def _iterations(model_fn, x, x_adv, y, eps, eps_iter, lo, hi, nb_iter, norm, targeted):
    """The kernel's loop, compiled; numbers are tensors, so there is no retracing."""
    return _steps.pgd_iterations(model_fn, x, x_adv, y, eps, eps_iter, nb_iter, norm=norm,
                                 clip_min=lo, clip_max=hi, targeted=targeted)


def pgd(model_fn: Callable, x: ArrayLike, eps: float = 0.1, **kwargs) -> np.ndarray:
    """L-inf PGD with random start; see :func:`projected_gradient_descent`.

    References:
      Madry et al. Towards Deep Learning Models Resistant to Adversarial Attacks. ICLR 2018.
    """
    return projected_gradient_descent(model_fn, x, eps, norm=np.inf, **kwargs)


def pgd_l2(model_fn: Callable, x: ArrayLike, eps: float = 1.0, **kwargs) -> np.ndarray:
    """L2 PGD with random start; see :func:`projected_gradient_descent`.

    References:
      Madry et al. Towards Deep Learning Models Resistant to Adversarial Attacks. ICLR 2018.
    """
    return projected_gradient_descent(model_fn, x, eps, norm=2, **kwargs)
