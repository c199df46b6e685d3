"""Clean vs adversarial activations: per-neuron volatility, perturbation groups, averaged
deconvnet projections and per-neuron fooling rates (seed 004, Sec. 5.2).

A *neuron* is a feature map of a conv layer or a unit of a dense layer; its activity on
one image is the Frobenius norm of that map (|a| for a unit). Volatility of a neuron on a
pair is | ||a_adv||_F - ||a_orig||_F |.

References:
  Zeiler, M. D. and Fergus, R. Visualizing and Understanding Convolutional Networks.
  ECCV 2014 (deconvnet projections).
  Szegedy, C. et al. Intriguing properties of neural networks. ICLR 2014.
"""

import os

import keras
import numpy as np

from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import _model
from cnnvis_tf.vis.guided import Deconvnet

PAIR_KEYS = ("x", "x_adv", "y", "pred_clean", "pred_adv")
GROUPINGS = ("source", "target", "both")


def load_pairs(path):
    """Reads an ``adversarial.npz`` written by ``experiments.attack``.

    Raises:
      InputError: if the file is missing or lacks one of :data:`PAIR_KEYS`.
    """
    if not os.path.exists(path):
        raise InputError(f"Adversarial file {path!r} does not exist. Pass "
                         "--adversarial=<output_dir of experiments.attack>/adversarial.npz.")
    with np.load(path) as data:
        missing = [k for k in PAIR_KEYS if k not in data]
        if missing:
            raise InputError(f"{path!r} lacks arrays {missing}; expected {list(PAIR_KEYS)} as "
                             "written by experiments.attack.")
        return {k: np.asarray(data[k]) for k in PAIR_KEYS}


def default_layers(model):
    """The activation of every conv and hidden dense layer (``<name>_relu`` if present)."""
    model = _model.logits_model(model)
    hidden = [lyr.name for lyr in model.layers[:-1]
              if isinstance(lyr, (keras.layers.Conv2D, keras.layers.Dense))]
    return [_model.activation_layer(model, n) for n in hidden]


def neuron_norms(model, x, layers, batch_size=256):
    """Per-neuron activity (Frobenius norm over space) -> {layer: (N, neurons)}."""
    model = _model.logits_model(model)
    outs = _model.predict(_model.feature_model(model, layers), x, batch_size)
    outs = outs if isinstance(outs, list) else [outs]
    norms = {}
    for name, a in zip(layers, outs):
        a = a.reshape(len(a), -1, a.shape[-1])
        norms[name] = np.sqrt((a.astype("float64") ** 2).sum(axis=1)).astype("float32")
    return norms


def volatility(model, x, x_adv, layers):
    """{layer: (N, neurons)} | ||a(x_adv)||_F - ||a(x)||_F | per pair and neuron."""
    clean, adv = neuron_norms(model, x, layers), neuron_norms(model, x_adv, layers)
    return {name: np.abs(adv[name] - clean[name]) for name in layers}


def perturbation_groups(y, pred_adv, by="both", successful_only=True):
    """Pair indices grouped by source label, adversarial (target) label, or both.

    Returns:
      dict mapping a key ("3", "->8" or "3->8") to an index array.
    """
    if by not in GROUPINGS:
        raise InputError(f"Unknown grouping {by!r}. Choose one of: {', '.join(GROUPINGS)}.")
    y, pred_adv = np.asarray(y), np.asarray(pred_adv)
    keep = np.flatnonzero(pred_adv != y) if successful_only else np.arange(len(y))
    keys = {"source": lambda i: f"{y[i]}", "target": lambda i: f"->{pred_adv[i]}",
            "both": lambda i: f"{y[i]}->{pred_adv[i]}"}[by]
    groups = {}
    for i in keep:
        groups.setdefault(keys(i), []).append(i)
    return {k: np.asarray(v, dtype="int64") for k, v in sorted(groups.items())}


def fooling_rate(vol, fraction=0.1):
    """Per-neuron fraction of pairs in which the neuron is among the ``fraction`` most
    volatile neurons of its layer (the instability of seed 004, Fig. 13)."""
    n = vol.shape[1]
    top = max(1, int(np.ceil(fraction * n)))
    ranks = np.argsort(-vol, axis=1)[:, :top]
    counts = np.zeros(n, "float64")
    np.add.at(counts, ranks.ravel(), 1.0)
    return (counts / max(len(vol), 1)).astype("float32")


def analyze(model, pairs, layers=None, by="both", fraction=0.1, project_layer=None,
            max_groups=4):
    """Everything behind the ``adversarial_diff`` figure.

    Args:
      model: any Keras model.
      pairs: dict with :data:`PAIR_KEYS` (see :func:`load_pairs`).
      layers: layer names (default :func:`default_layers`).
      by: perturbation grouping: ``"source"``, ``"target"`` or ``"both"``.
      fraction: top fraction of neurons counted as fooled in :func:`fooling_rate`.
      project_layer: layer whose activations are projected back to the image by the
        deconvnet and averaged per group (default the first of ``layers``).
      max_groups: projections are computed for the largest groups only.

    Returns:
      dict: ``layers``; per layer ``volatility/<l>`` (N, neurons), ``ranking/<l>`` neuron
      indices by mean volatility, ``fooling_rate/<l>``, ``mean_diff/<l>`` mean
      activation difference (adv - clean) over pairs; ``groups`` {key: indices};
      ``projection/<key>`` (3, H, W, C) mean clean, adversarial and difference projections.
    """
    model = _model.logits_model(model)
    layers = list(layers or default_layers(model))
    for name in layers:
        _model.get_layer(model, name)
    x, x_adv = _model.as_batch(pairs["x"], model), _model.as_batch(pairs["x_adv"], model)
    vol = volatility(model, x, x_adv, layers)
    acts = _model.feature_model(model, layers)
    clean, adv = _model.predict(acts, x), _model.predict(acts, x_adv)
    clean, adv = (clean, adv) if isinstance(clean, list) else ([clean], [adv])
    out = {"layers": layers}
    for i, name in enumerate(layers):
        v = vol[name]
        out[f"volatility/{name}"] = v
        out[f"ranking/{name}"] = np.argsort(-v.mean(axis=0))
        out[f"fooling_rate/{name}"] = fooling_rate(v, fraction)
        out[f"mean_diff/{name}"] = (adv[i] - clean[i]).mean(axis=0)
    groups = perturbation_groups(pairs["y"], pairs["pred_adv"], by)
    out["groups"] = groups
    deconv = Deconvnet(model)
    proj = project_layer or layers[0]
    out["project_layer"] = proj
    for key in sorted(groups, key=lambda k: -len(groups[k]))[:max_groups]:
        idx = groups[key]
        p_clean = deconv.project(x[idx], proj).mean(axis=0)
        p_adv = deconv.project(x_adv[idx], proj).mean(axis=0)
        out[f"projection/{key}"] = np.stack([p_clean, p_adv, p_adv - p_clean])
    return out
