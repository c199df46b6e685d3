"""Unit volatility between clean and adversarial activations, and perturbation groups: the
one home of these seed 004 concepts (used by ``vis.adversarial`` and the selective-dropout
defense).

A *unit* is a feature map of a conv layer or a neuron of a dense layer; its activity on one
image is the Frobenius norm of its map (``|a|`` for a neuron). Its volatility on a pair is
``| ||a(x_adv)||_F - ||a(x_orig)||_F |``.

Pairs (an original image of label ``y`` and its adversarial, classified ``y_adv``) fall in
*perturbation groups* by one of the :data:`GROUPINGS`: ``"both"`` (the pair of labels),
``"orig"`` (the original label) or ``"adv"`` (the adversarial label).

References:
  Seed 004 (thesis "Visualization and selective dropout for adversarial image
  classification"), §5.2 (volatility, perturbation groups), Tables 1-3.
"""

import numpy as np
from keras import ops

from cnnvis_tf.errors import InputError

__all__ = ["GROUPINGS", "unit_norms", "pair_volatility", "unit_volatility",
           "perturbation_groups", "group_indices"]

# grouping -> its name in seed 004's tables (Table 1: Both, Table 2: Orig, Table 3: Adv).
GROUPINGS = {"both": "Both", "orig": "Orig", "adv": "Adv"}


def unit_norms(activations):
    """Per-unit activity: ``(N, units)`` Frobenius norms over the spatial axes (``|a|`` for
    a dense layer's ``(N, units)`` activations). Works on tensors and numpy arrays."""
    a = ops.cast(activations, "float32")
    if len(a.shape) == 2:
        return ops.abs(a)
    return ops.sqrt(ops.sum(ops.square(a), axis=tuple(range(1, len(a.shape) - 1))))


def pair_volatility(act_orig, act_adv):
    """``(N, units)`` volatility of each unit on each pair, as numpy."""
    return np.abs(np.asarray(unit_norms(act_adv)) - np.asarray(unit_norms(act_orig)))


def unit_volatility(extractor, x_orig, x_adv, batch_size=256):
    """Mean volatility over pairs, per unit, as numpy ``(units,)``.

    Args:
      extractor: a callable mapping images to the layer's activations (e.g.
        ``models.feature_model(model, [name], logits=False)``).
      x_orig, x_adv: paired arrays of the same shape.
    """
    if len(x_orig) != len(x_adv):
        raise InputError(f"x_orig and x_adv must pair up; received {len(x_orig)} and "
                         f"{len(x_adv)} images.")
    total, n = 0.0, 0
    for i in range(0, len(x_orig), batch_size):
        a = unit_norms(extractor(x_orig[i : i + batch_size], training=False))
        b = unit_norms(extractor(x_adv[i : i + batch_size], training=False))
        total = total + np.asarray(ops.sum(ops.abs(b - a), axis=0))
        n += int(a.shape[0])
    return total / max(n, 1)


def _check_grouping(grouping):
    if grouping not in GROUPINGS:
        raise InputError(f"Unknown grouping {grouping!r}; choose one of: "
                         f"{', '.join(GROUPINGS)}.")


def perturbation_groups(y, y_adv, grouping):
    """Group id per pair, as ints: ``y`` (orig), ``y_adv`` (adv) or the pair (both)."""
    _check_grouping(grouping)
    y, y_adv = np.asarray(y, np.int64), np.asarray(y_adv, np.int64)
    if grouping == "orig":
        return y
    if grouping == "adv":
        return y_adv
    return y * (int(max(y.max(initial=0), y_adv.max(initial=0))) + 1) + y_adv


def group_indices(y, y_adv, grouping="both", successful_only=True):
    """Pair indices per perturbation group, keyed ``"3->8"`` (both), ``"3->"`` (orig) or
    ``"->8"`` (adv), sorted by key; ``successful_only`` keeps pairs with ``y_adv != y``."""
    _check_grouping(grouping)
    y, y_adv = np.asarray(y, np.int64), np.asarray(y_adv, np.int64)
    keep = np.flatnonzero(y_adv != y) if successful_only else np.arange(len(y))
    label = {"both": lambda i: f"{y[i]}->{y_adv[i]}", "orig": lambda i: f"{y[i]}->",
             "adv": lambda i: f"->{y_adv[i]}"}[grouping]
    groups = {}
    for i in keep:
        groups.setdefault(label(i), []).append(i)
    return {k: np.asarray(v, dtype="int64") for k, v in sorted(groups.items())}
