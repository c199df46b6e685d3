"""Seed 002's defense comparison: the training variants and the SNR table they fill.

A *variant* is one row of seed 002's tables: FGSM adversarial training (per-example eps
from a Gaussian truncated at 2 sigma, sigma matched to an SNR of 33 dB, §3.1), Parseval
retraction (beta), Laplacian smoothness (gamma, power m), or a combination. Each variant is
trained for several seeds; every trained model gets a row of accuracies clean and under
SNR-bounded FGSM; rows are aggregated as mean ± std in percent. The functions here turn
names into training configurations, evaluate a model and write the table; training is
:func:`cnnvis_tf.recipes.train_run`.

References:
  Seed 002 (Moreira Freitas, "Internship at IMT Atlantique on deep networks and
  adversarial noise", 2018), §3.1 and §5, Tables 1-2.
  Cisse et al. "Parseval networks." ICML 2017.
  Lassance, Gripon, Ortega. "Laplacian power networks." arXiv:1805.10133, 2018.
"""

import collections
import math

import numpy as np

from cnnvis_tf import evaluation, rundir
from cnnvis_tf.checks import parse_floats  # noqa: F401  (re-exported for the scripts)
from cnnvis_tf.errors import InputError

__all__ = [
    "Variant",
    "VARIANTS",
    "ADV_SNR_DB",
    "parse_variants",
    "train_kwargs",
    "run_name",
    "evaluate_snr",
    "write_table",
    "parse_floats",
]

ADV_SNR_DB = 33.0

Variant = collections.namedtuple("Variant", ["key", "label", "adv", "beta", "gamma", "m", "da"],
                                 defaults=(False,))
Variant.__doc__ = """One row of seed 002's table: adversarial training on/off, (beta, gamma, m)
and non-adversarial data augmentation ``da`` (random crop/flip; seed 002's "+ da" rows).

``key`` names the run directories, ``label`` is the row name of the table."""

# Seed 002 Table 1 (SVHN): the first row of each network type.
VARIANTS = {
    v.key: v
    for v in (
        Variant("vanilla", "Vanilla", False, 0.0, 0.0, 0),
        Variant("adv", "Adv", True, 0.0, 0.0, 0),
        Variant("smooth", "Smooth", False, 0.0, 0.01, 2),
        Variant("adv_psv", "Adv + Psv", True, 0.01, 0.0, 0),
        Variant("adv_smooth", "Adv + Smooth", True, 0.0, 0.001, 1),
        Variant("adv_psv_smooth", "Adv + Psv + Smooth", True, 0.01, 0.001, 1),
    )
}

_OVERRIDES = {"beta": float, "gamma": float, "m": int}


def _bad_variant(text, why):
    return InputError(
        f"Invalid variant {text!r}: {why}. Use names from {', '.join(VARIANTS)}, optionally "
        "with overrides such as 'smooth:gamma=0.003:m=2'."
    )


def parse_variants(text):
    """Parses ``"vanilla,adv+da,smooth:gamma=0.003:m=2"`` into a list of :class:`Variant`
    (``+da``: with non-adversarial data augmentation, seed 002's "+ da" rows).

    An override changes beta, gamma or m of a base variant (seed 002 lists several
    (gamma, m) per network type); the key then records it, e.g. ``smooth_g0.003_m2``.

    Raises:
      InputError: unknown name, bad override or a repeated variant.
    """
    out = []
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            continue
        name, *overrides = item.split(":")
        name, da = (name[:-3], True) if name.endswith("+da") else (name, False)
        if name not in VARIANTS:
            raise _bad_variant(item, f"unknown variant {name!r}")
        v = VARIANTS[name]
        suffix = ""
        for o in overrides:
            key, _, value = o.partition("=")
            if key not in _OVERRIDES:
                raise _bad_variant(item, f"can only override {', '.join(_OVERRIDES)}")
            try:
                value = _OVERRIDES[key](value)
            except ValueError:
                raise _bad_variant(item, f"{key}={value!r} is not a number") from None
            if value < 0:
                raise _bad_variant(item, f"{key} must be >= 0")
            v = v._replace(**{key: value})
            suffix += f"_{key[0]}{value:g}"
        if v.gamma > 0 and v.m < 1:
            raise _bad_variant(item, "smoothness (gamma > 0) needs m >= 1")
        if da:
            v = v._replace(da=True, label=v.label + " + da")
            suffix += "_da"
        out.append(v._replace(key=v.key + suffix))
    if not out:
        raise _bad_variant(text, "no variant given")
    keys = [v.key for v in out]
    if len(set(keys)) != len(keys):
        raise _bad_variant(text, "a variant is repeated")
    return out


def train_kwargs(variant, adv_snr_db=ADV_SNR_DB, adv_recipe="standard"):
    """The defense settings of :class:`cnnvis_tf.recipes.TrainConfig` for ``variant``.

    ``adv_recipe="seed002"`` trains the adversarial variants with seed 002's own recipe
    (per-pixel magnitudes, sigma fixed over the training images, 50/50 batches, clean half
    weighted 0.3); the others are unchanged.
    """
    out = {
        "adv_training": "fgsm" if variant.adv else "none",
        "adv_snr_db": adv_snr_db if variant.adv else None,
        "parseval_beta": float(variant.beta),
        "smooth_gamma": float(variant.gamma),
        "smooth_power": max(1, int(variant.m)),
        "augment": bool(variant.da),
        "adv_recipe": adv_recipe if variant.adv else "standard",
    }
    if variant.adv and adv_recipe == "seed002":
        out["adv_ratio"] = 0.5
    return out


def run_name(variant, seed, adv_recipe="standard"):
    """The run directory name of one (variant, seed): adversarial variants trained with seed
    002's recipe get their own directories (``adv_recipe-seed002_seed0``)."""
    recipe = f"_recipe-{adv_recipe}" if variant.adv and adv_recipe != "standard" else ""
    return f"{variant.key}{recipe}_seed{seed}"


def adversarial_gains(stats, baseline="vanilla"):
    """Where adversarial training helps beyond the seed-to-seed spread.

    For every variant with adversarial training and every column: the gain of its mean
    accuracy over ``baseline``'s, the pooled sample std ``sqrt((s_v^2 + s_b^2) / 2)`` and
    whether the gain exceeds it (needs >= 2 seeds per variant; 3 or more recommended).

    Returns:
      ``{variant key: {column: {"gain", "pooled_std", "exceeds_std"}}}`` (fractions), or
      ``{}`` when ``baseline`` is not in ``stats``.
    """
    if baseline not in stats:
        return {}
    base = stats[baseline]
    out = {}
    for key, st in stats.items():
        if key == baseline or not st.get("adv"):
            continue
        out[key] = {}
        for col, mean in st["mean"].items():
            gain = mean - base["mean"][col]
            pooled = math.sqrt((st["std"][col] ** 2 + base["std"][col] ** 2) / 2)
            enough = st["num_runs"] > 1 and base["num_runs"] > 1
            out[key][col] = {"gain": gain, "pooled_std": pooled,
                             "exceeds_std": bool(enough and gain > pooled)}
    return out


def evaluate_snr(model_fn, x, y, snr_levels=evaluation.DEFAULT_SNR_LEVELS, *, clip_min=0.0,
                 clip_max=1.0, batch_size=256):
    """One table row: ``{"Clean": acc, "50": acc, ...}`` (fractions) plus achieved SNRs.

    FGSM with the true labels and a per-example eps giving the requested SNR after clipping
    to the input box (the achieved SNR is returned beside the accuracies).
    """
    acc, achieved = evaluation.accuracy_vs_snr(
        model_fn, x, np.asarray(y, np.int64), tuple(snr_levels), clip_min=clip_min,
        clip_max=clip_max, batch_size=batch_size,
    )
    return {
        "accuracy": {_col(k): v for k, v in acc.items()},
        "achieved_snr_db": {_col(k): v for k, v in achieved.items()},
    }


def _col(level):
    return level if level == "Clean" else f"{float(level):g}"


def gain_notes(gains, stats):
    """Markdown lines saying, per adversarially trained variant, at which SNR columns its
    gain over Vanilla exceeds the pooled seed-to-seed std."""
    lines = []
    for key, cols in gains.items():
        where = [f"{c} ({100 * g['gain']:+.2f} > {100 * g['pooled_std']:.2f})"
                 for c, g in cols.items() if g["exceeds_std"]]
        lines.append(f"- {stats[key]['label']}: gain over Vanilla exceeds one pooled std at "
                     + (", ".join(where) if where else "no column") + ".")
    return (["", "Adversarial training's gain (points) vs the pooled sample std:"] + lines
            if lines else [])


def variant_stats(variants, per_run, snr_levels):
    """Mean and sample std (ddof=1; 0 for one run) per variant and column, in fractions:
    ``{key: {"label", "num_runs", "adv", "mean": {col: .}, "std": {col: .}}}``."""
    columns = ["Clean"] + [_col(s) for s in snr_levels]
    stats = {}
    for v in variants:
        cells = {c: rundir.mean_std([r[c] for r in per_run[v.key]]) for c in columns}
        stats[v.key] = {"label": v.label, "num_runs": len(per_run[v.key]), "adv": v.adv,
                        "mean": {c: m for c, (m, _) in cells.items()},
                        "std": {c: sd or 0.0 for c, (_, sd) in cells.items()}}
    return stats


def snr_curves(variants, stats, snr_levels) -> tuple:
    """The accuracy-vs-SNR curves of :func:`variant_stats` for ``plotting.plot_curves``:
    ``(curves, errors)``, each ``{label: {snr: fraction, ..., "Clean": fraction}}`` (the
    "Clean" entry is the dashed clean-accuracy line of the figure)."""
    curves, errors = {}, {}
    for v in variants:
        s = stats[v.key]
        curves[s["label"]] = {**{lv: s["mean"][_col(lv)] for lv in snr_levels},
                              "Clean": s["mean"]["Clean"]}
        errors[s["label"]] = {lv: s["std"][_col(lv)] for lv in snr_levels}
    return curves, errors


def write_table(out_dir, variants, per_run, snr_levels, title):
    """Writes ``table.md``/``table.csv`` (mean ± sample std in percent) from per-run rows,
    with the adversarial-training gains (:func:`adversarial_gains`) under the table.

    Args:
      variants: list of :class:`Variant` (the row order).
      per_run: ``{variant key: [evaluate_snr(...)["accuracy"], ...]}`` (one per seed).
      snr_levels: the SNR columns.

    Returns:
      ``(stats, gains)``: :func:`variant_stats` and :func:`adversarial_gains` of them.
    """
    columns = ["Clean"] + [_col(s) for s in snr_levels]
    stats = variant_stats(variants, per_run, snr_levels)
    gains = adversarial_gains(stats)
    rows = {f"{v.label} (beta={v.beta:g}, gamma={v.gamma:g}, m={v.m:g})":
            {c: [100.0 * r[c] for r in per_run[v.key]] for c in columns} for v in variants}
    rundir.write_table(out_dir, row_label="Network type", columns=columns, rows=rows,
                       title=title, unit="%", notes=gain_notes(gains, stats))
    return stats, gains
