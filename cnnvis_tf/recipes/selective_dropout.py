"""Seed 004's selective-dropout experiment: perturbation groups, splits, control vs SD_p.

Original/adversarial pairs (targeted L-BFGS) are grouped by *perturbation group* -- the
source label, the adversarial (spoofed) label, or both (seed 004 §5.2). For each grouping
one random pair per group is held out for validation, including groups of size 1, so some
validation groups are never trained on (§5.4). Starting each time from the same network, the
control ``C`` (p = 1: plain hard-negative training) and ``SD_p`` (only the ``ceil(p * width)``
most volatile units of one layer trained) are fine-tuned with SGD (momentum 0.9) on the
training pairs, alternating adversarial and original batches, and scored by their accuracy
on the held-out adversarial images (Tables 1-3) and on original images. How often each unit
is selected gives Fig. 13.

References:
  Seed 004 (thesis "Visualization and selective dropout for adversarial image
  classification"), §5.1-5.5, Tables 1-3, Fig. 13.
  Szegedy et al. "Intriguing properties of neural networks." ICLR 2014 (L-BFGS pairs).
"""

import keras
import numpy as np

from cnnvis_tf import datasets, evaluation
from cnnvis_tf.defenses.selective_dropout import SelectiveDropout
from cnnvis_tf.errors import InputError
from cnnvis_tf.volatility import GROUPINGS, perturbation_groups

__all__ = [
    "GROUPINGS",
    "perturbation_groups",
    "split_pairs",
    "pairs_from_arrays",
    "make_lbfgs_pairs",
    "hard_negative_train",
    "check_layers",
    "run_protocol",
    "protocol_tables",
]

def split_pairs(groups, seed=0):
    """Holds out one random pair per group (seed 004 §5.4); returns (train_idx, val_idx)."""
    rng = np.random.default_rng(seed)
    groups = np.asarray(groups)
    val = np.array(sorted(rng.choice(np.flatnonzero(groups == g)) for g in np.unique(groups)),
                   np.int64)
    train = np.setdiff1d(np.arange(len(groups)), val)
    return train, val


def pairs_from_arrays(x, x_adv, y, pred_clean, pred_adv):
    """Keeps the pairs of a correctly classified image and an adversarial that fools it.

    Returns:
      ``{"x", "x_adv", "y", "y_adv"}`` where ``y_adv`` is the adversarial prediction.

    Raises:
      InputError: fewer than two usable pairs.
    """
    y, pred_clean, pred_adv = (np.asarray(a, np.int64) for a in (y, pred_clean, pred_adv))
    keep = (pred_clean == y) & (pred_adv != y)
    if keep.sum() < 2:
        raise InputError(f"Only {int(keep.sum())} of {len(y)} pairs are usable (a correctly "
                         "classified image whose adversarial is misclassified); attack more "
                         "images, e.g. with a larger --num_pairs.")
    return {"x": np.asarray(x, np.float32)[keep], "x_adv": np.asarray(x_adv, np.float32)[keep],
            "y": y[keep], "y_adv": pred_adv[keep]}


def make_lbfgs_pairs(model, x, y, num_pairs, *, num_classes, seed=0, clip_min=0.0,
                     clip_max=1.0, batch_size=64, progress=False, **lbfgs_kwargs):
    """Targeted L-BFGS pairs on randomly chosen, correctly classified images (seed 004 §5.1).

    Each image gets a random target label different from its own.

    Returns:
      (pairs, info): pairs as :func:`pairs_from_arrays`; info with ``attacked`` and
      ``success_rate`` (fraction reaching the target).
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y, np.int64)
    order = rng.permutation(len(x))
    # take: an ImageArray stays uint8 (predicted batch by batch, no float32 copy)
    correct = order[evaluation.predict_labels(model, datasets.take(x, order))
                    == y[order]][:num_pairs]
    xs, ys = x[correct], y[correct]
    targets = (ys + rng.integers(1, num_classes, len(ys))) % num_classes
    x_adv = evaluation.run_attack("lbfgs", model, xs, targets, targeted=True,
                                  clip_min=clip_min, clip_max=clip_max, batch_size=batch_size,
                                  progress=progress, **lbfgs_kwargs)
    pred_adv = evaluation.predict_labels(model, x_adv)
    pairs = pairs_from_arrays(xs, x_adv, ys, ys, pred_adv)
    return pairs, {"attacked": int(len(xs)), "success_rate": float(np.mean(pred_adv == targets))}


def _accuracy(model, x, y):
    if len(x) == 0:
        return float("nan")
    return float(np.mean(evaluation.predict_labels(model, x) == y))


def hard_negative_train(model, layer, p, learning_rate, train, val, *, epochs=10,
                        batch_size=16, alpha=0.0, seed=0, x_test=None, y_test=None):
    """Fine-tunes ``model`` in place on pairs; ``p = 1`` is the control.

    Args:
      model: classifier (logits), already holding the starting weights.
      layer: Dense/Conv layer whose units are selected.
      p: initial fraction of units trained, in (0, 1].
      learning_rate: SGD learning rate (momentum 0.9, seed 004 §5).
      train, val: dicts with ``x``, ``x_adv``, ``y`` (validation: held-out pairs).
      epochs, batch_size, alpha, seed: passes over ``train``, pairs per step, the p schedule
        rate and the shuffling seed.
      x_test, y_test: optional clean images to measure forgetting.

    Returns:
      dict: ``adv_val``/``orig_val`` (final accuracies on held-out adversarial/original
      images), ``adv_train``, ``test`` (if given), ``curve`` (held-out adversarial accuracy
      after each epoch, index 0 before training), ``best_epoch`` (first epoch reaching the
      best held-out accuracy), ``steps`` and ``selection_frequency`` (per unit).
    """
    sd = SelectiveDropout(model, layer, p0=p, alpha=alpha,
                          optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9))
    rng = np.random.default_rng(seed)
    counts = np.zeros(sd.width)
    n = len(train["y"])
    curve = [_accuracy(model, val["x_adv"], val["y"])]
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            counts += sd.train_step(train["x"][idx], train["x_adv"][idx], train["y"][idx])[
                "selected"]
        curve.append(_accuracy(model, val["x_adv"], val["y"]))
    result = {
        "adv_val": curve[-1],
        "orig_val": _accuracy(model, val["x"], val["y"]),
        "adv_train": _accuracy(model, train["x_adv"], train["y"]),
        "curve": curve,
        "best_epoch": int(np.argmax(curve)),
        "steps": sd.iteration,
        "selection_frequency": counts / max(sd.iteration, 1),
    }
    if x_test is not None:
        result["test"] = _accuracy(model, x_test, y_test)
    return result


def check_layers(model, layers):
    """Raises InputError unless every name in ``layers`` is a Dense/Conv layer of ``model``."""
    kernels = [layer.name for layer in model.layers if hasattr(layer, "kernel")]
    for layer in layers:
        if layer not in kernels:
            raise InputError(f"Unknown layer {layer!r}; choose among the model's Dense/Conv "
                             f"layers: {', '.join(kernels)}.")


def _subset(pairs, idx):
    return {k: v[idx] for k, v in pairs.items()}


def run_protocol(model, pairs, *, groupings=tuple(GROUPINGS), p_values=(0.2, 0.5, 0.7),
                 layers=("conv2", "fc1"), learning_rates=(0.001, 0.003), epochs=10,
                 batch_size=16, alpha=0.0, seed=0, x_test=None, y_test=None, log=None):
    """Trains control and SD_p for every grouping, learning rate, layer and p.

    Every training starts from ``model``'s weights (``model`` itself is not changed). The
    control (p = 1) is trained once per grouping and learning rate and shared by the layers
    (it trains the whole network either way).

    Returns:
      ``{grouping: {"split": {...}, "runs": {learning_rate: {model name: result}}}}`` with
      model names ``C`` and ``SD_<p>^<layer>`` and results of :func:`hard_negative_train`.
    """
    for p in p_values:
        if not 0 < p <= 1:
            raise InputError(f"Invalid value received for argument `p`. Expected values in "
                             f"(0, 1]. Received: p={p}")
    check_layers(model, layers)
    start = model.get_weights()
    work = keras.models.clone_model(model)
    out = {}
    for grouping in groupings:
        groups = perturbation_groups(pairs["y"], pairs["y_adv"], grouping)
        train_idx, val_idx = split_pairs(groups, seed)
        train, val = _subset(pairs, train_idx), _subset(pairs, val_idx)
        if not len(train_idx):
            raise InputError(f"Grouping {grouping!r} leaves no training pairs (every pair is "
                             "its own group); use more pairs.")
        runs = {}
        for lr in learning_rates:
            configs = [("C", layers[0], 1.0)] + [
                (f"SD_{p:g}^{layer}", layer, p) for layer in layers for p in p_values if p < 1]
            runs[lr] = {}
            for name, layer, p in configs:
                work.set_weights(start)
                runs[lr][name] = hard_negative_train(
                    work, layer, p, lr, train, val, epochs=epochs, batch_size=batch_size,
                    alpha=alpha, seed=seed, x_test=x_test, y_test=y_test)
                if log:
                    log(f"{GROUPINGS[grouping]} lr={lr:g} {name}: adversarial validation "
                        f"{runs[lr][name]['adv_val']:.4f}")
        out[grouping] = {"split": {"groups": int(len(np.unique(groups))),
                                   "train": int(len(train_idx)), "val": int(len(val_idx))},
                         "runs": runs}
    return out


def protocol_tables(results, layers, p_values, metric="adv_val"):
    """Seed 004 Tables 1-3: one table per grouping, rows learning rates, columns models.

    Columns are ``C^<layer>`` then ``SD_<p>^<layer>`` per layer (the control repeated per
    layer, as in the seed); cells are ``metric`` (``adv_val``, ``orig_val`` or ``test``),
    fractions.

    Returns:
      ``{grouping: (columns, {"η=<lr>": {column: value}})}``.
    """
    tables = {}
    for grouping, res in results.items():
        columns, keys = [], []
        for layer in layers:
            columns.append(f"C^{layer}")
            keys.append("C")
            for p in p_values:
                if p < 1:
                    columns.append(f"SD_{p:g}^{layer}")
                    keys.append(f"SD_{p:g}^{layer}")
        rows = {f"η={lr:g}": {c: float(runs[k][metric]) for c, k in zip(columns, keys)}
                for lr, runs in res["runs"].items()}
        tables[grouping] = (columns, rows)
    return tables
