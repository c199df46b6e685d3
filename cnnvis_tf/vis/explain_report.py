"""The files of an explanation-quality evaluation, from its per-example numbers.

``experiments.explain_eval`` computes, per attribution method and example, the metrics of
:mod:`cnnvis_tf.vis.metrics` into one dict of arrays (``per_image.npz``); :func:`write`
turns it into ``table.md``/``table.csv`` (method x metric, mean ± std over examples),
``figures/*.png`` and ``results.json``. Arrays named ``meta/...`` are the same for every
example; every other array has the examples on its first axis, so the arrays of shards
(consecutive example ranges) concatenate into those of the whole run (:func:`concatenate`).
"""

import os

import numpy as np

from cnnvis_tf import rundir
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import cam, plotting

PER_IMAGE = "per_image.npz"
RESULTS = "results.json"

# (column of the table, array suffix, better direction)
COLUMNS = [
    ("Deletion AUC", "deletion_auc", "lower"),
    ("Insertion AUC", "insertion_auc", "higher"),
    ("MuFidelity", "mu_fidelity", "higher"),
    ("Randomized top layer rho", "randomization_top", "lower"),
    ("Randomized all layers rho", "randomization_all", "lower"),
    ("Random logit rho", "random_logit", "lower"),
    ("Sparseness (Gini)", "sparseness", "higher"),
    ("Complexity (entropy)", "complexity", "lower"),
]


def methods_of(per_image: dict) -> list:
    """The method names of ``per_image``, in the order they were computed."""
    names = per_image.get("meta/methods")
    if names is None:
        raise InputError("per_image arrays lack 'meta/methods'; they were not written by "
                         "experiments.explain_eval.")
    return [str(n) for n in np.asarray(names).ravel()]


def concatenate(parts: list) -> dict:
    """The arrays of consecutive shards joined into those of the whole run (``meta/``
    arrays taken from the first shard)."""
    if not parts:
        raise InputError("No shard arrays to join.")
    out = {}
    for key in parts[0]:
        if key.startswith("meta/"):
            out[key] = np.asarray(parts[0][key])
        else:
            out[key] = np.concatenate([np.asarray(p[key]) for p in parts])
    return out


def _stats(values):
    mean, std = rundir.mean_std(values)
    return {"mean": mean, "std": std, "n": int(np.size(values))}


def summarize(per_image: dict) -> dict:
    """``{method: {metric: {"mean", "std", "n"}, "deletion_curve": [...], ...}}``."""
    out = {}
    for name in methods_of(per_image):
        row = {key: _stats(per_image[f"{name}/{key}"]) for _, key, _ in COLUMNS}
        for curve in ("deletion_curve", "insertion_curve"):
            row[curve] = np.mean(per_image[f"{name}/{curve}"], axis=0).tolist()
        rho = np.asarray(per_image[f"{name}/randomization"])  # (N, L)
        row["randomization"] = {"mean": rho.mean(axis=0).tolist(),
                                "std": (rho.std(axis=0, ddof=1) if len(rho) > 1 else
                                        np.zeros(rho.shape[1])).tolist()}
        out[name] = row
    return out


def _legend(fig):
    """Dashed lines after the tenth (the colour cycle repeats), a small two-column legend."""
    ax = fig.axes[0]
    for line in ax.lines[10:]:
        line.set_linestyle("--")
    ax.legend(fontsize=7, ncol=2, framealpha=0.6)
    return fig


def write(out_dir: str, per_image: dict, info: dict) -> dict:
    """Writes the evaluation's table, figures and (last) ``results.json``.

    Args:
      out_dir: the output folder.
      per_image: the arrays of ``per_image.npz`` (also written here).
      info: facts for ``results.json`` (model fingerprint, settings, seconds, ...).

    Returns:
      the results written.
    """
    names = methods_of(per_image)
    rundir.write_npz(os.path.join(out_dir, PER_IMAGE), **per_image)
    layers = [str(s) for s in np.asarray(per_image["meta/layers"]).ravel()]
    n = len(per_image[f"{names[0]}/deletion_auc"])
    rows = {name: {col: per_image[f"{name}/{key}"] for col, key, _ in COLUMNS}
            for name in names}
    notes = ["", "Better: " + "; ".join(f"{col} {d}" for col, _, d in COLUMNS) + ".",
             f"rho: Spearman rank correlation of |map| with the map of the trained model "
             f"after re-initializing the top layer ({layers[0]}) or all layers "
             f"({', '.join(layers)}), cascading from the top (Adebayo et al. 2018); a map "
             "that stays near 1 does not depend on what the model learned.",
             "Random logit rho: the map of the true class vs that of a random other class.",
             "edge and random are controls that ignore the model."]
    rundir.write_table(out_dir, row_label="Method", columns=[c for c, _, _ in COLUMNS],
                       rows=rows, title=f"Explanation quality on {n} test images (mean ± std "
                       "over images).", unit="score", notes=notes, digits=3)
    summary = summarize(per_image)
    fig_dir = rundir.ensure_dir(os.path.join(out_dir, rundir.FIGURES))
    fractions = np.asarray(per_image["meta/fractions"])
    for curve, what in (("deletion", "removed"), ("insertion", "inserted")):
        fig = plotting.curve(fractions, {m: summary[m][f"{curve}_curve"] for m in names},
                             f"fraction of pixels {what} (most important first)",
                             "class probability", f"{curve.capitalize()} curves (mean over "
                             f"{n} images)")
        plotting.save(_legend(fig), os.path.join(fig_dir, f"{curve}.png"))
    stages = ["none"] + [f"{layer}" for layer in layers]
    fig = plotting.curve(stages, {m: [1.0] + summary[m]["randomization"]["mean"]
                                  for m in names},
                         "layers re-initialized, cumulatively from the top",
                         "Spearman rho with the original map",
                         "Cascading model-parameter randomization")
    plotting.save(_legend(fig), os.path.join(fig_dir, "randomization.png"))
    imgs, titles = [], []
    for m in names:
        maps = np.abs(np.asarray(per_image[f"meta/{m}/cascade_maps"]))
        for stage, mp in zip(stages, cam.normalize(maps)):
            imgs.append(mp[..., None])
            titles.append(f"{m}: {stage}" if stage == "none" else stage)
    fig = plotting.images(imgs, titles, "|map| of the first image as layers are "
                          "re-initialized from the top (rows: methods)", cols=len(stages))
    plotting.save(fig, os.path.join(fig_dir, "randomization_maps.png"))
    results = {"methods": summary, "layers": layers, "fractions": fractions.tolist(),
               "num_examples": n, "columns": {key: {"label": col, "better": d}
                                              for col, key, d in COLUMNS}, **info}
    rundir.write_json(os.path.join(out_dir, RESULTS), results)  # completion marker
    return results
