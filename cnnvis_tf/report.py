"""One report of a run directory and everything derived from it (HTML and Markdown).

:func:`collect` reads what the scripts wrote — the run's ``config.json``, ``metrics.json``,
``history.csv``, figures, and every artefact below it (attacks, robustness tables, transfer
matrices, certification, visualizations, defenses: any folder whose ``config.json`` names
the script that made it) — and lists what is missing. :func:`write` renders it with the
Jinja2 templates shipped in ``cnnvis_tf/templates``: ``report.html`` is self-contained
(figures as data URIs, CSS inline, no script, a Content-Security-Policy that forbids any
network load) and ``report.md`` links the figures by relative path.
"""

import base64
import csv
import datetime
import hashlib
import math
import os

import jinja2

from cnnvis_tf import rundir
from cnnvis_tf.errors import InputError

__all__ = ["collect", "write", "inputs_fingerprint", "VIS_DESCRIPTIONS", "SECTIONS"]

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
SECTIONS = ("model", "training", "attacks", "robustness", "transfer", "visualizations",
            "defenses", "config")

# Completion marker of each script's output (written last); a folder without it is unfinished.
MARKERS = {"experiments.attack": "metrics.json", "experiments.detect": "metrics.json",
           "experiments.visualize": rundir.CONFIG, "experiments.robustness": "results.json",
           "experiments.transfer": "results.json", "experiments.certify": "results.json",
           "experiments.defense_table": "results.json",
           "experiments.selective_dropout": "results.json",
           "experiments.explain_eval": "results.json"}
_SKIP_DIRS = {rundir.CHECKPOINTS, rundir.TENSORBOARD, rundir.FIGURES, "__pycache__"}
_IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg",
                ".jpeg": "image/jpeg", ".gif": "image/gif"}

VIS_DESCRIPTIONS = {
    "filters": "The first conv layer's kernels as images: the edge and blob detectors learned.",
    "activations": "Every channel of each conv layer for one test image: what each feature "
                   "map responds to.",
    "occlusion": "True-class probability as a grey patch slides over the image: the regions "
                 "the decision needs (Zeiler & Fergus 2014).",
    "saliency": "|d class score / d pixel|: the pixels whose change moves the score most "
                "(Simonyan et al. 2014).",
    "smoothgrad": "Saliency averaged over noisy copies of the image, a less noisy gradient map "
                  "(Smilkov et al. 2017).",
    "gradcam": "Class heat map from the last conv layer's gradient-weighted activations "
               "(Selvaraju et al. 2017).",
    "gradcam_pp": "Grad-CAM++ (Chattopadhay et al. 2018): higher-order weights of the conv "
                  "maps.",
    "scorecam": "Score-CAM (Wang et al. 2020): conv maps weighted by the class score each "
                "one alone produces, no gradient.",
    "integrated_gradients": "Gradients integrated from a black baseline to the image: "
                            "attributions summing to the score change (Sundararajan et al. "
                            "2017).",
    "guided_backprop": "Gradient with negative signals zeroed at every ReLU: the fine input "
                       "pattern that excites a unit (Springenberg et al. 2015).",
    "deconvnet": "A unit's activation projected back to pixels through the ReLUs "
                 "(Zeiler & Fergus 2014).",
    "class_model": "An image optimized to maximize one class score: what the network takes "
                   "the class to look like (Simonyan et al. 2014).",
    "filter_max": "Images optimized to excite single filters of the last conv layer: the "
                  "pattern each one detects.",
    "inversion": "The image reconstructed from one layer's features alone: what the layer "
                 "keeps (Mahendran & Vedaldi 2015).",
    "deepdream": "The image changed to amplify a layer's activations (DeepDream).",
    "top_patches": "The test-image patches that excite each channel most, with their "
                   "activations.",
    "tsne": "t-SNE map of the penultimate features of test images, coloured by class: how "
            "well the classes separate.",
    "pca": "First two principal components of the penultimate features, coloured by class.",
    "neighbors": "Nearest test images in feature space against pixel space: semantic versus "
                 "pixel similarity.",
    "loss_1d": "Loss and accuracy along the line from the initial to the trained weights "
               "(Goodfellow et al. 2015).",
    "loss_2d": "Loss surface on a random, filter-normalized 2-D slice of weight space around "
               "the trained weights (Li et al. 2018).",
    "adversarial_diff": "Clean against adversarial images: their difference and how the "
                        "features of each layer move.",
    "layercam": "LayerCAM (Jiang et al. 2021): conv maps weighted per position by their "
                "positive gradients.",
    "rise": "RISE (Petsiuk et al. 2018): class probability averaged over random masks that "
            "keep each pixel.",
    "gradient_input": "Gradient × input: each pixel's first-order contribution to the class "
                      "score.",
    "vargrad": "VarGrad (Adebayo et al. 2018): variance of the gradient over noisy copies of "
               "the image.",
    "pixel_occlusion": "Drop of the class logit when single pixels are occluded.",
    "gallery": "16 test images with their true (T) and predicted (P) labels.",
    "filter_slices": "Every input slice of one filter of the second conv layer.",
    "neuron_gradient": "Gradient of one neuron (channel at a position) with respect to the "
                       "image.",
    "grabcut": "GrabCut segmentation seeded by the saliency map: does saliency cover the "
               "object?",
    "tsne_clusters": "HDBSCAN density clusters on the t-SNE map, with each cluster's class "
                     "purity.",
    "fooling": "Evolved images classified with high confidence that show no digit "
               "(Nguyen et al. 2015).",
    "multifaceted": "One optimized image per k-means facet of a class's top images "
                    "(Nguyen et al. 2016).",
    "inversion_net": "Images reconstructed by a decoder trained to invert the penultimate "
                     "features (Dosovitskiy & Brox 2016).",
    "style_transfer": "Gatys et al. style transfer with Gram losses on the run's own conv "
                      "layers.",
    "fast_style": "Johnson et al. feed-forward style transfer: a transformer trained with "
                  "the same losses.",
}

_TRAIN_DEFENSES = (  # (setting, label, is it on?)
    ("adv_training", "Adversarial training", lambda v: v not in (None, "none")),
    ("parseval_beta", "Parseval retraction beta", lambda v: bool(v)),
    ("smooth_gamma", "Laplacian smoothness gamma", lambda v: bool(v)),
    ("filter_loss_weight", "Interpretable filter loss weight", lambda v: bool(v)),
    ("noise_sigma", "Gaussian noise augmentation sigma", lambda v: bool(v)),
)
_SANITY = (  # (flag in results.json, badge label, what a warning means)
    ("accuracy_increases_with_eps", "monotonic in the budget",
     "accuracy rises with a larger budget"),
    ("iterative_weaker_than_single_step", "iterative ≥ single-step",
     "the iterative attack is weaker than one step"),
    ("unbounded_attack_fails", "unbounded budget → ~0 %",
     "an unbounded attack leaves accuracy high"),
)


# ----------------------------------------------------------------------------- reading


def _read(path):
    try:
        return rundir.read_json(path)
    except (InputError, OSError):
        return None


def _fmt(v, digits=4):
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x, digits) for x in v)
    return str(v)


def _figures(folder):
    """Image files of ``folder`` (sorted), as ``{"title", "path"}``."""
    if not os.path.isdir(folder):
        return []
    return [{"title": os.path.splitext(n)[0].replace("_", " "),
             "path": os.path.join(folder, n)}
            for n in sorted(os.listdir(folder))
            if os.path.splitext(n)[1].lower() in _IMAGE_TYPES]


def _csv_table(path, caption=""):
    """A CSV file as ``{"caption", "header", "rows"}`` with numbers rounded for reading."""
    if not os.path.exists(path):
        return None
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    return _csv_rows_table(rows[0], rows[1:], caption) if rows else None


def _history(run_dir, max_rows=40):
    header, rows = rundir.read_history_rows(os.path.join(run_dir, rundir.HISTORY))
    if not rows:
        return None
    if len(rows) > max_rows:  # keep the first, every k-th and the last epoch
        k = math.ceil(len(rows) / max_rows)
        rows = rows[::k] + ([rows[-1]] if (len(rows) - 1) % k else [])
    return _csv_rows_table(header, rows, "Per-epoch history (history.csv)")


def _csv_rows_table(header, rows, caption):
    def cell(text):
        try:
            return _fmt(float(text), 4)
        except ValueError:
            return text

    return {"caption": caption, "header": header, "rows": [[cell(c) for c in r] for r in rows]}


def _layers(run_dir):
    """``(layer rows, error)`` of the run's model (name, type, output shape, params)."""
    path = os.path.join(run_dir, rundir.MODEL)
    if not os.path.exists(path):
        return [], "model.keras is missing"
    try:
        model = rundir.load_model(path)
    except InputError as err:
        return [], str(err)
    rows = []
    for layer in model.layers:
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):
            shape = "?"
        rows.append([layer.name, type(layer).__name__, str(shape).replace("None", "batch"),
                     f"{layer.count_params():,}"])
    return rows, None


def _artefacts(run_dir, max_depth=3):
    """Every script output below ``run_dir``: ``[(folder, config)]`` sorted by folder."""
    found = []
    root_depth = os.path.abspath(run_dir).rstrip(os.sep).count(os.sep)
    for folder, dirs, files in os.walk(run_dir):
        depth = os.path.abspath(folder).count(os.sep) - root_depth
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        if depth >= max_depth:
            dirs[:] = []
        if depth == 0 or rundir.CONFIG not in files:
            continue
        cfg = _read(os.path.join(folder, rundir.CONFIG))
        if isinstance(cfg, dict) and cfg.get("script") and cfg["script"] != "experiments.report":
            found.append((folder, cfg))
    return sorted(found, key=lambda item: item[0])


def _finished(folder, cfg):
    """Whether the script's completion marker is there (scripts unknown here: yes)."""
    marker = MARKERS.get(cfg["script"])
    return marker is None or os.path.exists(os.path.join(folder, marker))


def inputs_fingerprint(run_dir):
    """A hash of everything a report of ``run_dir`` shows (the run's records, each
    artefact's record and completion marker) and of the templates: equal hashes, equal
    reports (``make demo`` reuses a report whose inputs did not change)."""
    h = hashlib.sha256()
    paths = [os.path.join(run_dir, n) for n in (rundir.CONFIG, rundir.METRICS, rundir.HISTORY)]
    for folder, cfg in _artefacts(run_dir):
        paths += [os.path.join(folder, n) for n in sorted(
            {rundir.CONFIG, MARKERS.get(cfg["script"], "results.json"), rundir.METRICS})]
    tdir = os.path.join(os.path.dirname(__file__), "templates")
    paths += [os.path.join(tdir, n) for n in sorted(os.listdir(tdir))]
    for p in paths:
        if os.path.isfile(p):
            h.update(os.path.relpath(p, run_dir).encode() + b"\0")
            with open(p, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- sections


def _command(cfg):
    script = cfg.get("script", "?")
    argv = cfg.get("argv")
    return f"python -m {script} " + " ".join(argv) if argv else f"python -m {script}"


def _base(folder, cfg, run_dir):
    return {"dir": os.path.relpath(folder, run_dir), "script": cfg.get("script"),
            "command": _command(cfg), "finished": _finished(folder, cfg),
            "figures": _figures(os.path.join(folder, rundir.FIGURES))}


def _attack(folder, cfg, run_dir):
    out = _base(folder, cfg, run_dir)
    params = cfg.get("attack_kwargs") or cfg.get("params", {}).get("attack_kwargs") or {}
    name = cfg.get("params", {}).get("attack") or os.path.basename(folder)
    budget = [f"{k}={_fmt(params[k])}" for k in ("eps", "snr", "norm", "nb_iter")
              if params.get(k) is not None] + (["targeted"] if params.get("targeted") else [])
    m = _read(os.path.join(folder, "metrics.json")) or {}
    keys = ("clean_accuracy", "adversarial_accuracy", "success_rate", "mean_l2", "mean_linf",
            "mean_snr_db", "num_examples", "seconds", "defense")
    out.update(name=name, budget=", ".join(budget), params=sorted(
        (k, _fmt(v)) for k, v in params.items()),
        metrics=[(k, _fmt(m[k])) for k in keys if k in m], defense=m.get("defense", "none"))
    aa = m.get("autoattack") or {}
    out["autoattack"] = [(k, _fmt(v)) for k, v in sorted(aa.items())
                         if not isinstance(v, (dict, list))]
    by = aa.get("robust_accuracy_by_attack") or {}
    sec = aa.get("seconds_by_attack") or {}
    out["autoattack_steps"] = [[k, _fmt(v), _fmt(sec.get(k), 3)] for k, v in by.items()]
    checks = aa.get("checks") if isinstance(aa.get("checks"), dict) else {}
    out["checks"] = [{"label": k.replace("_", " "), "state": "warn" if v else "ok",
                      "title": "warning" if v else "passed"}
                     for k, v in sorted(checks.items()) if isinstance(v, bool)]
    out["check_messages"] = list(checks.get("messages") or [])
    return out


def _robustness(folder, cfg, run_dir):
    out = _base(folder, cfg, run_dir)
    res = _read(os.path.join(folder, "results.json")) or {}
    levels = res.get("levels") or []
    cols = ["Clean"] + [f"{lv:g}" for lv in levels]
    unit = {"snr": "dB", "linf": "L-inf eps", "l2": "L2 eps"}.get(res.get("budget"), "")
    rows = []
    for name, stats in (res.get("table") or {}).items():
        cells = []
        for c in cols:
            s = stats.get(c) or {}
            mean, std = s.get("mean"), s.get("std")
            cells.append("" if mean is None else f"{mean:.2f}" + (
                f" ± {std:.2f}" if std is not None else ""))
        runs = (res.get("models", {}).get(name) or {}).get("runs", [])
        badges = []
        for key, label, warning in _SANITY:
            checked = key == "accuracy_increases_with_eps" or any(
                "checks" in r.get("sanity", {}) for r in runs)
            bad = any(r.get("sanity", {}).get(key) for r in runs)
            badges.append({"label": label, "state": "warn" if bad else (
                "ok" if checked and runs else "na"),
                "title": warning if bad else ("passed" if checked else "not checked")})
        rows.append({"name": name, "cells": cells, "badges": badges})
    out.update(name=os.path.basename(folder), attack=res.get("attack", ""),
               header=["Model"] + [c if c == "Clean" else f"{c} {unit}" for c in cols],
               rows=rows, md=_text(os.path.join(folder, "table.md")))
    return out


def _table_artefact(folder, cfg, run_dir, stem="table"):
    out = _base(folder, cfg, run_dir)
    res = _read(os.path.join(folder, "results.json")) or _read(
        os.path.join(folder, "metrics.json")) or {}
    out.update(name=os.path.basename(folder), table=_csv_table(
        os.path.join(folder, f"{stem}.csv")), md=_text(os.path.join(folder, f"{stem}.md")),
        facts=[(k, _fmt(v)) for k, v in sorted(res.items())
               if isinstance(v, (int, float, str)) and not isinstance(v, bool)
               and k not in ("model_fingerprint",)][:12])
    return out


def _visualizations(folder, cfg, run_dir):
    out = _base(folder, cfg, run_dir)
    methods = (cfg.get("params") or {}).get("methods") or sorted(
        os.path.splitext(n)[0] for n in os.listdir(folder) if n.endswith(".png"))
    seconds = cfg.get("seconds") or {}
    items = []
    for m in methods:
        png = os.path.join(folder, f"{m}.png")
        facts = _read(os.path.join(folder, f"{m}.json"))
        facts = [(k, _fmt(v)) for k, v in sorted(facts.items())
                 if isinstance(v, (int, float, str)) and not isinstance(v, bool)][:6] \
            if isinstance(facts, dict) else []
        items.append({"method": m, "description": VIS_DESCRIPTIONS.get(
            m, "(no description of this method)"), "figure": {"title": m, "path": png}
            if os.path.exists(png) else None, "facts": facts,
            "seconds": _fmt(seconds.get(m), 3) if m in seconds else None})
    out.update(name=os.path.basename(folder), methods=items)
    return out


def _text(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read().strip()


def _normalization(norm):
    if isinstance(norm, dict) and "mean" in norm:
        return f"mean {_fmt(norm['mean'])}; std {_fmt(norm.get('std'))} (in the model)"
    return norm


def _summary(rep, metrics):
    """The headline numbers: ``[(label, value)]``."""
    pct = "{:.1%}".format
    out = [("model", rep["model"]["name"]),
           ("parameters", f"{rep['model']['params']:,}" if rep["model"]["params"] else "?")]
    if "test/accuracy" in metrics:
        out.append(("test accuracy", pct(metrics["test/accuracy"])))
    for a in rep["attacks"]:
        m = _read(os.path.join(rep["run_dir"], a["dir"], "metrics.json")) or {}
        if isinstance(m.get("adversarial_accuracy"), (int, float)):
            out.append((f"accuracy under {a['name']}" + (f" ({a['budget']})" if a["budget"]
                                                          else ""),
                        pct(m["adversarial_accuracy"])))
    return out


def _model_card(run_dir, config, metrics, load_model):
    settings = config.get("settings") or {}
    arch = settings.get("architecture") or {}
    layers, layers_error = _layers(run_dir) if load_model else ([], "not loaded")
    data = [("dataset", config.get("dataset")), ("source", config.get("data_source")),
            ("input shape", config.get("input_shape")), ("classes", config.get("num_classes")),
            ("train / validation / test images", [config.get(k) for k in (
                "train_examples", "validation_examples", "test_examples")]),
            ("input range", [config.get("clip_min"), config.get("clip_max")]),
            ("normalization", _normalization(config.get("normalization")))]
    training = [(k, settings.get(k)) for k in (
        "optimizer", "learning_rate", "lr_schedule", "batch_size", "epochs", "weight_decay",
        "augment", "batch_norm", "seed")]
    results = [(k, metrics[k]) for k in (
        "test/accuracy", "test/loss", "validation/accuracy", "train/accuracy", "params",
        "epochs", "train_seconds", "model_fingerprint") if k in metrics]
    return {"name": config.get("model") or arch.get("name"),
            "params": metrics.get("params") or arch.get("params"),
            "data": [(k, _fmt(v)) for k, v in data if v is not None],
            "training": [(k, _fmt(v)) for k, v in training if v is not None],
            "results": [(k, _fmt(v)) for k, v in results],
            "layers": layers, "layers_error": layers_error,
            "class_names": ", ".join(map(str, config.get("class_names") or []))}


# ----------------------------------------------------------------------------- collect


def collect(run_dir, *, load_model=True):
    """Everything the report shows about ``run_dir``, as plain data for the templates.

    Args:
      run_dir: a run directory of ``experiments.train`` (artefacts may sit below it).
      load_model: list the model's layers (loads ``model.keras``).

    Returns:
      dict with the sections (``model``, ``training``, ``attacks``, ``robustness``,
      ``transfer``, ``certify``, ``visualizations``, ``defenses``, ``others``, ``config``),
      ``missing`` (what the run lacks, with the command that makes it), ``unfinished``
      and ``fingerprint`` (:func:`inputs_fingerprint`).

    Raises:
      InputError: if ``run_dir`` is not a run directory.
    """
    run_dir = os.path.normpath(os.path.expanduser(str(run_dir or "")))
    fix = "pass --run_dir=<the --output_dir of python -m experiments.train>."
    if not os.path.isdir(run_dir):
        raise InputError(f"Run directory {run_dir!r} does not exist: {fix}")
    config = _read(os.path.join(run_dir, rundir.CONFIG))
    if not isinstance(config, dict):
        raise InputError(f"{run_dir} is not a run directory (no readable config.json of "
                         f"experiments.train): {fix}")
    if config.get("script"):
        models = list((config.get("models") or {}))
        raise InputError(f"{run_dir} is the output of {config['script']}, not a run directory:"
                         f" pass --run_dir=<the run it was made from"
                         f"{', ' + models[0] if models else ''}>.")
    if "settings" not in config and "dataset" not in config:
        raise InputError(f"{run_dir}/config.json was not written by experiments.train: {fix}")
    metrics = _read(os.path.join(run_dir, rundir.METRICS)) or {}
    name = os.path.basename(os.path.abspath(run_dir))
    rep = {"title": f"cnnvis_tf report: {name}", "run_dir": os.path.abspath(run_dir),
           "generated": datetime.datetime.now(datetime.timezone.utc).strftime(
               "%Y-%m-%d %H:%M UTC"),
           "model": _model_card(run_dir, config, metrics, load_model),
           "training": {"history": _history(run_dir),
                        "figures": _figures(os.path.join(run_dir, rundir.FIGURES)),
                        "finished": bool(metrics)},
           "attacks": [], "robustness": [], "transfer": [], "certify": [],
           "visualizations": [], "defenses": [], "others": [], "unfinished": []}
    kinds = {"experiments.attack": ("attacks", _attack),
             "experiments.robustness": ("robustness", _robustness),
             "experiments.transfer": ("transfer", lambda f, c, r: _table_artefact(
                 f, c, r, "matrix")),
             "experiments.certify": ("certify", _table_artefact),
             "experiments.visualize": ("visualizations", _visualizations),
             "experiments.detect": ("defenses", _table_artefact),
             "experiments.defense_table": ("defenses", _table_artefact),
             "experiments.selective_dropout": ("defenses", _table_artefact)}
    commands = []
    for folder, cfg in _artefacts(run_dir):
        section, reader = kinds.get(cfg["script"], ("others", _table_artefact))
        item = reader(folder, cfg, run_dir)
        commands.append((item["dir"], item["command"]))
        if not item["finished"]:
            rep["unfinished"].append(item)
            continue
        item["kind"] = cfg["script"].split(".")[-1]
        rep[section].append(item)
    settings = config.get("settings") or {}
    rep["training_defenses"] = [(label, _fmt(settings.get(key)))
                                for key, label, on in _TRAIN_DEFENSES if on(settings.get(key))]
    rep["config"] = {"settings": [(k, _fmt(v)) for k, v in sorted(settings.items())
                                  if not isinstance(v, dict)],
                     "versions": sorted((config.get("versions") or {}).items()),
                     "report_versions": sorted(rundir.versions().items()),
                     "git_commit": config.get("git_commit"), "commands": commands}
    rep["missing"] = _missing(rep, run_dir)
    rep["summary"] = _summary(rep, metrics)
    rep["fingerprint"] = inputs_fingerprint(run_dir)
    return rep


def _missing(rep, run_dir):
    d = run_dir
    out = []
    if not rep["training"]["finished"]:
        out.append(("test metrics", "training did not finish (no metrics.json)",
                    "rerun the experiments.train command (it resumes)"))
    if not rep["training"]["history"]:
        out.append(("training curves", "no history.csv", "train with experiments.train"))
    wanted = (
        ("attacks", "attacks",
         f"python -m experiments.attack --model_dir={d} --attack=pgd --eps=0.2 "
         f"--output_dir={d}/attacks/pgd"),
        ("robustness", "robustness tables",
         f"python -m experiments.robustness --model_dirs={d} --eps=0.05,0.1,0.2,0.3 "
         f"--output_dir={d}/robustness_linf"),
        ("transfer", "transfer matrix",
         f"python -m experiments.transfer --model_dirs={d},<other run> --attack=fgsm "
         f"--eps=0.2 --output_dir={d}/transfer"),
        ("visualizations", "visualizations",
         f"python -m experiments.visualize --model_dir={d} --methods=all "
         f"--output_dir={d}/vis"),
        ("certify", "certified robustness",
         f"python -m experiments.certify --model_dir={d} --output_dir={d}/certify"),
    )
    for key, what, cmd in wanted:
        if not rep[key]:
            out.append((what, "none in this run directory", cmd))
    if not rep["defenses"] and not rep["training_defenses"]:
        out.append(("defenses", "trained without defenses; no detector or defense table",
                    f"python -m experiments.detect --model_dir={d} --attack=fgsm --eps=0.2 "
                    f"--output_dir={d}/detect"))
    for item in rep["unfinished"]:
        out.append((item["dir"], f"unfinished {item['script']} output (no completion "
                    "marker)", "rerun: " + item["command"]))
    return [{"what": w, "why": y, "command": c} for w, y, c in out]


# ----------------------------------------------------------------------------- render


def _environment():
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cnnvis_tf", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"),
                                            default_for_string=True),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True)
    return env


def _data_uri(figure):
    path = figure["path"]
    mime = _IMAGE_TYPES[os.path.splitext(path)[1].lower()]
    with open(path, "rb") as f:
        return f"data:{mime};base64," + base64.b64encode(f.read()).decode("ascii")


def _md_cell(value):
    return str(value).replace("|", "\\|").replace("\n", " ")


def write(report, out_dir):
    """Renders ``report`` (from :func:`collect`) into ``out_dir``: ``report.md`` first, then
    ``report.html`` (the completion marker). Returns ``(html_path, md_path)``."""
    env = _environment()
    env.filters["data_uri"] = _data_uri
    env.filters["relpath"] = lambda fig: os.path.relpath(fig["path"], out_dir).replace(
        os.sep, "/")
    env.filters["md"] = _md_cell
    md_path, html_path = (os.path.join(out_dir, n) for n in (REPORT_MD, REPORT_HTML))
    for name, path in (("report.md.j2", md_path), ("report.html.j2", html_path)):
        text = env.get_template(name).render(r=report, descriptions=VIS_DESCRIPTIONS)
        with rundir.atomic_open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, 0o644)  # a report is for sharing (temp files are created 0600)
    return html_path, md_path
