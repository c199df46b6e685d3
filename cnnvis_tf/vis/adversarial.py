"""Clean vs adversarial activations: per-neuron volatility, perturbation groups, averaged
deconvnet projections and per-neuron fooling rates (seed 004, Sec. 5.2).

Volatility and perturbation groups are defined once, in :mod:`cnnvis_tf.volatility`.

References:
  Zeiler, M. D. and Fergus, R. Visualizing and Understanding Convolutional Networks.
  ECCV 2014 (deconvnet projections).
  Szegedy, C. et al. Intriguing properties of neural networks. ICLR 2014.
"""


import keras
import numpy as np

from cnnvis_tf import rundir
from cnnvis_tf.checks import check_fraction, check_labels
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import _model
from cnnvis_tf.vis.guided import Deconvnet
from cnnvis_tf.volatility import group_indices, pair_volatility

PAIR_KEYS = ("x", "x_adv", "y", "pred_clean", "pred_adv")
# Seed 004's groups by source (original label), target (adversarial label) or both.
GROUPING_ALIASES = {"source": "orig", "target": "adv"}


def load_pairs(path):
    """Reads an ``adversarial.npz`` written by ``experiments.attack``
    (:func:`cnnvis_tf.rundir.read_adversarial`).

    Raises:
      InputError: if the file is missing, corrupt or lacks one of :data:`PAIR_KEYS`.
    """
    data = rundir.read_adversarial(path)
    missing = [k for k in PAIR_KEYS if k not in data]
    if missing:
        raise InputError(f"{path!r} lacks arrays {missing}; expected {list(PAIR_KEYS)} as "
                         "written by experiments.attack.")
    return {k: np.asarray(data[k]) for k in PAIR_KEYS}


def default_layers(model):
    """The activation of every conv and hidden dense layer (``<name>_relu`` if present), for
    any Keras classifier or :class:`~cnnvis_tf.vis._model.ResolvedModel`."""
    r = _resolved(model)
    hidden = [k for k in r.order if k != r.head and
              isinstance(r.layers[k], (keras.layers.Conv2D, keras.layers.Dense))]
    return [r.activation_layer(n) for n in hidden]


def default_project_layer(model):
    """Seed 004 projects from conv2: the second conv layer's activation (the first's if the
    model has one conv layer, the first default layer if none)."""
    r = _resolved(model)
    convs = r.conv_layers()
    if convs:
        return r.activation_layer(convs[1] if len(convs) > 1 else convs[0])
    return default_layers(r)[0]


def _resolved(model):
    return model if isinstance(model, _model.ResolvedModel) else _model.ResolvedModel(
        model, "adversarial_diff")


def volatility(model, x, x_adv, layers, batch_size=256):
    """{layer: (N, neurons)} volatility per pair and neuron (:mod:`cnnvis_tf.volatility`)."""
    r = _resolved(model)
    layers = list(layers)
    clean = r.predict(x, layers, batch_size=batch_size)
    adv = r.predict(x_adv, layers, batch_size=batch_size)
    return {name: pair_volatility(c, a) for name, c, a in zip(layers, clean, adv)}


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
            max_groups=4, *, clip_min=0.0, clip_max=1.0):
    """Everything behind the ``adversarial_diff`` figure.

    Args:
      model: any Keras classifier.
      pairs: dict with :data:`PAIR_KEYS` (see :func:`load_pairs`).
      layers: layer names (default :func:`default_layers`).
      by: perturbation grouping, one of :data:`cnnvis_tf.volatility.GROUPINGS`
        (``"both"``, ``"orig"`` or ``"adv"``; ``"source"`` and ``"target"`` name the last
        two).
      fraction: top fraction of neurons counted as fooled in :func:`fooling_rate`.
      project_layer: layer whose activations are projected back to the image by the
        deconvnet and averaged per group; a conv/dense layer means its rectified output
        (``conv2`` -> ``conv2_relu``); default :func:`default_project_layer` (seed 004:
        conv2).
      max_groups: projections are computed for the largest groups only.
      clip_min, clip_max: the model's input range.

    Returns:
      dict: ``layers``, ``grouping``, ``project_layer``; per layer ``volatility/<l>`` (N, neurons), ``ranking/<l>`` neuron
      indices by mean volatility, ``fooling_rate/<l>``, ``mean_diff/<l>`` mean
      activation difference (adv - clean) over pairs; ``groups`` {key: indices};
      ``projection/<key>`` (3, H, W, C) mean clean, adversarial and difference projections.
    """
    deconv = Deconvnet(model, clip_min=clip_min, clip_max=clip_max)
    r = deconv.resolved
    layers = list(layers or default_layers(r))
    for name in layers:
        r.get(name)
    by = GROUPING_ALIASES.get(by, by)
    proj = r.activation_layer(project_layer) if project_layer else default_project_layer(r)
    r.get(proj)  # an unknown layer fails here, naming the valid ones
    x, x_adv = deconv.images(pairs["x"], "x"), deconv.images(pairs["x_adv"], "x_adv")
    if x.shape != x_adv.shape:
        raise InputError(f"x and x_adv must pair up; received shapes {x.shape} and "
                         f"{x_adv.shape}.")
    y = check_labels(pairs["y"], len(x), r.num_classes, name="y")
    pred_adv = check_labels(pairs["pred_adv"], len(x), r.num_classes, name="pred_adv")
    fraction = check_fraction("fraction", fraction, low_open=True)
    clean, adv = r.predict(x, layers), r.predict(x_adv, layers)
    out = {"layers": layers, "grouping": by}
    for i, name in enumerate(layers):
        v = pair_volatility(clean[i], adv[i])
        out[f"volatility/{name}"] = v
        out[f"ranking/{name}"] = np.argsort(-v.mean(axis=0))
        out[f"fooling_rate/{name}"] = fooling_rate(v, fraction)
        out[f"mean_diff/{name}"] = (adv[i] - clean[i]).mean(axis=0)
    groups = group_indices(y, pred_adv, by)
    out["groups"] = groups
    out["project_layer"] = proj
    for key in sorted(groups, key=lambda k: -len(groups[k]))[:max_groups]:
        idx = groups[key]
        p_clean = deconv.project(x[idx], proj).mean(axis=0)
        p_adv = deconv.project(x_adv[idx], proj).mean(axis=0)
        out[f"projection/{key}"] = np.stack([p_clean, p_adv, p_adv - p_clean])
    return out
