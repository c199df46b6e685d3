"""Write and read run directories (DESIGN.md §2).

A run directory holds ``model.keras`` (logits), ``config.json`` (flags, versions, git
commit, dataset facts: input shape, clip range, normalization, class names),
``metrics.json`` (flat ``split/metric`` keys), ``history.csv``, ``checkpoints/``,
``tensorboard/``, ``figures/`` and ``initial.weights.h5`` (the weights before training,
for loss-landscape interpolation).
"""

import dataclasses
import json
import os
import platform
import subprocess

import keras
import numpy as np

from cnnvis_tf.errors import InputError

MODEL = "model.keras"
CONFIG = "config.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
INITIAL_WEIGHTS = "initial.weights.h5"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
FIGURES = "figures"

__all__ = [
    "Run",
    "load_run",
    "write_json",
    "read_json",
    "git_commit",
    "versions",
    "MODEL",
    "CONFIG",
    "METRICS",
    "HISTORY",
    "INITIAL_WEIGHTS",
    "CHECKPOINTS",
    "TENSORBOARD",
    "FIGURES",
]


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_json(path, obj):
    """Writes ``obj`` as indented JSON atomically (temp file + rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(_jsonable(obj), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def git_commit(path=None):
    """The git commit of the repository holding this package (or ``path``), else None."""
    cwd = path or os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions():
    """Versions of the stack, recorded in every config.json."""
    import tensorflow as tf

    import cnnvis_tf

    return {
        "cnnvis_tf": cnnvis_tf.__version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


@dataclasses.dataclass
class Run:
    """A loaded run directory."""

    path: str
    model: keras.Model
    config: dict
    metrics: dict

    @property
    def clip_min(self):
        return float(self.config["clip_min"])

    @property
    def clip_max(self):
        return float(self.config["clip_max"])

    @property
    def class_names(self):
        return list(self.config["class_names"])

    @property
    def dataset_name(self):
        return self.config["dataset"]

    def figure_dir(self):
        return os.path.join(self.path, FIGURES)

    def load_dataset(self, data_dir=None):
        """Reloads the dataset of this run with the same split (same seed, same source)."""
        from cnnvis_tf import datasets

        cfg = self.config
        return datasets.load(
            cfg["dataset"],
            data_dir=data_dir if data_dir is not None else cfg.get("data_dir") or None,
            seed=int(cfg.get("seed", 0)),
            embedded=bool(cfg.get("embedded", False)) or cfg.get("data_source") == "embedded",
        )


def load_run(path, compile=False):
    """Loads a run directory written by ``experiments.train``.

    Raises:
      InputError: if the directory or one of its contract files is missing.
    """
    if not os.path.isdir(path):
        raise InputError(
            f"Run directory {path!r} does not exist. Pass --model_dir=<output_dir of "
            "python -m experiments.train>."
        )
    missing = [f for f in (MODEL, CONFIG) if not os.path.exists(os.path.join(path, f))]
    if missing:
        raise InputError(
            f"Run directory {path!r} lacks {', '.join(missing)}: it is not a finished run of "
            "experiments.train. Rerun that command to complete it."
        )
    import cnnvis_tf.layers  # noqa: F401  (registers custom objects before loading)

    model = keras.models.load_model(os.path.join(path, MODEL), compile=compile)
    config = read_json(os.path.join(path, CONFIG))
    metrics_path = os.path.join(path, METRICS)
    metrics = read_json(metrics_path) if os.path.exists(metrics_path) else {}
    return Run(path=path, model=model, config=config, metrics=metrics)
