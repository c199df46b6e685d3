"""Laplacian smoothness regularization of intermediate representations.

For a batch, each chosen layer's representations define a similarity graph (cosine
adjacency); the smoothness of the label indicator signal on that graph measures how
strongly examples of different classes are connected. Penalizing large changes of this
smoothness between consecutive layers makes class boundaries evolve gradually through the
network, which improves robustness to small input perturbations.

References:
  Lassance, Gripon and Ortega. "Laplacian networks: bounding indicator function smoothness
  for neural networks robustness." arXiv:1805.10133, 2018 (APSIPA Trans. SIP 2021).
"""

import numbers

from keras import ops

from cnnvis_tf.checks import check_nonneg, check_positive_int, invalid
from cnnvis_tf.errors import InputError
from cnnvis_tf.models import feature_model  # noqa: F401  (re-exported: one helper)

__all__ = [
    "cosine_adjacency",
    "label_smoothness",
    "laplacian_smoothness_penalty",
    "feature_model",
    "default_smooth_layers",
]


def cosine_adjacency(representation, mask=None, epsilon=1e-12):
    """``W[i, j] = cos(x_i, x_j)`` over the flattened batch representations.

    Args:
      representation: tensor of shape ``(batch, ...)``.
      mask: optional ``(batch,)`` boolean/0-1 tensor; masked-out examples lose all edges,
        so they do not enter the graph signal.
      epsilon: guards the division for all-zero representations.

    Returns:
      ``(batch, batch)`` float tensor.
    """
    x = ops.reshape(representation, (ops.shape(representation)[0], -1))
    x = ops.cast(x, "float32")
    x = x / ops.maximum(ops.norm(x, axis=1, keepdims=True), epsilon)
    w = ops.matmul(x, ops.transpose(x))
    if mask is not None:
        m = ops.cast(ops.reshape(mask, (-1, 1)), w.dtype)
        w = w * m * ops.transpose(m)
    return w


def label_smoothness(representation, labels, power=1, mask=None):
    """Smoothness ``trace(Y^T L^m Y)`` of the one-hot label signal ``Y`` on the batch graph.

    ``L = D - W`` is the combinatorial Laplacian of :func:`cosine_adjacency`. Using
    ``Y Y^T = [y_i == y_j]`` the trace is ``sum_ij (L^m)_ij [y_i == y_j]``; for ``m = 1`` it
    equals ``sum_{i,j: y_i != y_j} W_ij``, zero exactly when different classes are
    orthogonal.

    Args:
      representation: ``(batch, ...)`` activations of one layer (non-negative, e.g. after
        ReLU, as in the paper).
      labels: ``(batch,)`` or ``(batch, 1)`` integer labels, or ``(batch, classes)`` one-hot
        labels.
      power: the Laplacian power ``m`` >= 1.
      mask: optional ``(batch,)`` selection of the examples that enter the graph.

    Returns:
      A scalar float tensor.

    Raises:
      InputError: ``power`` is not an integer >= 1.
    """
    power = _check_power(power)
    w = cosine_adjacency(representation, mask)
    lap = ops.diag(ops.sum(w, axis=1)) - w
    lap_m = lap
    for _ in range(int(power) - 1):
        lap_m = ops.matmul(lap_m, lap)
    same = _same_class(labels)
    return ops.sum(lap_m * same)


def laplacian_smoothness_penalty(representations, labels, gamma, power=1, mask=None):
    """``gamma * mean_l |sigma_{l+1} - sigma_l|`` over consecutive chosen layers.

    ``sigma_l`` is :func:`label_smoothness` of layer ``l``. This is the regularizer of
    Lassance et al. (sum of absolute smoothness differences), averaged over the
    ``len(representations) - 1`` layer pairs as in the authors' code. The seed-002 code
    multiplies by ``gamma ** power`` instead of ``gamma``; pass that value to reproduce it.

    Args:
      representations: list of at least two ``(batch, ...)`` tensors, in network order.
      labels: ``(batch,)`` or ``(batch, 1)`` integer labels, or one-hot ``(batch, classes)``.
      gamma: weight >= 0 (a finite number, or a scalar tensor).
      power: Laplacian power ``m`` >= 1.
      mask: optional ``(batch,)`` boolean; only these examples enter the graphs (use it to
        keep adversarial/augmented examples out, seed 002 section 4.2.2).

    Returns:
      A scalar float tensor (differentiable w.r.t. the representations).

    Raises:
      InputError: for fewer than two representations, ``gamma < 0`` or ``power < 1``.
    """
    if len(representations) < 2:
        raise InputError(
            "Invalid value received for argument `representations`. Expected at least two "
            f"layers. Received: {len(representations)} layer(s); pass more layer names."
        )
    if isinstance(gamma, (numbers.Number, str, bytes)) or gamma is None:  # not a tensor
        if isinstance(gamma, (bool, str, bytes)) or gamma is None:
            raise invalid("gamma", "a finite number >= 0", gamma)
        gamma = check_nonneg("gamma", gamma)
    power = _check_power(power)
    sigmas = [label_smoothness(r, labels, power, mask) for r in representations]
    diffs = [ops.abs(b - a) for a, b in zip(sigmas[:-1], sigmas[1:])]
    return gamma * ops.sum(ops.stack(diffs)) / float(len(diffs))


def default_smooth_layers(model):
    """Names of the ReLU / residual-block outputs (``*_relu``, ``*_out``) of a zoo model."""
    return [
        layer.name
        for layer in model.layers
        if layer.name.endswith("_relu") or layer.name.endswith("_out")
    ]


def _check_power(power):
    return check_positive_int("power", power)


def _same_class(labels):
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 2 and labels.shape[1] == 1:  # class ids (batch, 1), keras.datasets
        labels = labels[:, 0]
    if len(labels.shape) == 2:
        y = ops.cast(labels, "float32")
        return ops.matmul(y, ops.transpose(y))
    labels = ops.reshape(labels, (-1, 1))
    return ops.cast(ops.equal(labels, ops.transpose(labels)), "float32")
