"""Basic Iterative Method (iterated FGSM, no random start), wrapping cleverhans 4.

cleverhans' ``basic_iterative_method`` is its PGD without the random start; so is this one
(:func:`~cnnvis_tf.attacks.projected_gradient_descent.projected_gradient_descent` with
``rand_init=False``, the package's one PGD kernel, whose L-inf results then equal
cleverhans' bit for bit).
"""

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from cnnvis_tf.attacks.projected_gradient_descent import projected_gradient_descent
from cnnvis_tf.checks import check_nonneg, check_positive_int

__all__ = ["basic_iterative_method", "bim"]


def basic_iterative_method(
    model_fn: Callable,
    x: ArrayLike,
    eps: float = 0.1,
    *,
    eps_iter: float | None = None,
    nb_iter: int = 10,
    norm: float | int | str = np.inf,
    y: ArrayLike | None = None,
    targeted: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    from_probabilities: bool = False,
) -> np.ndarray:
    """Iterated fast-gradient steps of size ``eps_iter``, clipped to the ``eps`` ball.

    Args:
      model_fn: callable mapping a batch to logits.
      x: batch of inputs in ``[clip_min, clip_max]``.
      eps: radius of the norm ball.
      eps_iter: step size; ``None`` means ``eps / nb_iter`` (Kurakin et al. use 1/255).
      nb_iter: number of steps.
      norm: ``np.inf`` or ``2``.
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
      Kurakin, Goodfellow, Bengio. Adversarial examples in the physical world. ICLR 2017
      workshop (arXiv:1607.02533).
    """
    if eps_iter is None:  # Kurakin's default step; PGD validates every argument
        eps_iter = check_nonneg("eps", eps) / check_positive_int("nb_iter", nb_iter)
    return projected_gradient_descent(
        model_fn, x, eps, eps_iter=eps_iter, nb_iter=nb_iter, norm=norm, rand_init=False,
        y=y, targeted=targeted, clip_min=clip_min, clip_max=clip_max,
        from_probabilities=from_probabilities,
    )


bim = basic_iterative_method
