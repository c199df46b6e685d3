"""Run directories and every artefact format of cnnvis_tf (DESIGN.md §2).

A run directory holds ``model.keras`` (logits), ``config.json`` (the settings that produced
it, versions, git commit, dataset facts: input shape, clip range, normalization, class
names), ``metrics.json`` (flat ``split/metric`` keys, written last: the completion marker),
``history.csv``, ``history_steps.csv``, ``checkpoints/``, ``tensorboard/``, ``figures/`` and
``initial.weights.h5`` (the weights before training, for loss-landscape interpolation).

This module owns the formats: atomic JSON/CSV/NPZ writes (temp file + ``os.replace``), the
history files, ``adversarial.npz``, result tables (numeric CSV, sample std, unit in the
header), script records (``config.json`` with the effective parameters and the fingerprint
of every model used) and the run-directory lock. It imports nothing of cnnvis_tf but
``errors``; custom Keras objects are registered by ``import cnnvis_tf``.
"""

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import platform
import subprocess
import tempfile
import zipfile

import keras
import numpy as np

from cnnvis_tf.errors import InputError

MODEL = "model.keras"
CONFIG = "config.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
HISTORY_STEPS = "history_steps.csv"
INITIAL_WEIGHTS = "initial.weights.h5"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
FIGURES = "figures"
ADVERSARIAL = "adversarial.npz"
LOCK = ".lock"

__all__ = [
    "Run",
    "load_run",
    "load_model",
    "model_fingerprint",
    "atomic_open",
    "ensure_dir",
    "write_json",
    "read_json",
    "write_csv",
    "read_history",
    "write_history",
    "write_npz",
    "read_npz",
    "write_adversarial",
    "read_adversarial",
    "mean_std",
    "write_table",
    "script_record",
    "write_record",
    "artifact_is_current",
    "locked",
    "git_commit",
    "versions",
    "MODEL",
    "CONFIG",
    "METRICS",
    "HISTORY",
    "HISTORY_STEPS",
    "INITIAL_WEIGHTS",
    "CHECKPOINTS",
    "TENSORBOARD",
    "FIGURES",
    "ADVERSARIAL",
]


# ----------------------------------------------------------------------------- atomic I/O


def jsonable(obj):
    """``obj`` with numpy values, tuples and non-string keys turned into JSON types."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    return obj


def ensure_dir(folder):
    """Creates ``folder`` (and parents) or raises one :class:`InputError` saying why not
    (it is a file, or cannot be created)."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise InputError(f"{folder} is a file, not a directory: choose another --output_dir.")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise InputError(f"Cannot create the directory {folder} ({err.strerror}); choose a "
                         "writable --output_dir.") from None
    return folder


def _writable_dir(path):
    return ensure_dir(os.path.dirname(os.path.abspath(path)))


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """Opens a temp file beside ``path``; on success it is flushed, synced and renamed over
    ``path`` (so readers see the old file or the new one, never a part); on error it is
    removed. Disk-full and permission errors become :class:`InputError`."""
    folder = _writable_dir(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                   dir=folder)
    except OSError as err:
        raise InputError(f"Cannot write in {folder} ({err.strerror}); choose a writable "
                         "--output_dir with free space.") from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        raise InputError(f"Could not write {path} ({err.strerror or err}); check free disk "
                         "space and permissions of the output directory.") from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(path):
    with contextlib.suppress(OSError):
        os.remove(path)


def write_json(path: str, obj) -> None:
    """Writes ``obj`` as indented, sorted JSON atomically."""
    with atomic_open(path) as f:
        json.dump(jsonable(obj), f, indent=2, sort_keys=True)
        f.write("\n")


def read_json(path: str, what: str | None = None):
    """Reads a JSON file; a corrupt one raises :class:`InputError` naming it."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON ({err.msg}, line {err.lineno}): it is "
                         f"corrupt{'; ' + what if what else ''}.") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a text JSON file: it is corrupt"
                         f"{'; ' + what if what else ''}.") from None


def write_csv(path, rows):
    """Writes rows (the first is the header) as CSV, atomically."""
    with atomic_open(path, newline="") as f:
        csv.writer(f).writerows(rows)


# ----------------------------------------------------------------------------- history


def read_history(run_dir, name=HISTORY):
    """Reads ``history.csv`` (or ``history_steps.csv``) into a dict of float arrays."""
    path = os.path.join(run_dir, name)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = list(rows[0].keys()) if rows else []
    return {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows])
            for k in keys}


def read_history_rows(path):
    """``(header, rows)`` of a history CSV (``([], [])`` if missing)."""
    if not os.path.exists(path):
        return [], []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return (rows[0], [r for r in rows[1:] if r]) if rows else ([], [])


def write_history(path, header, rows):
    """Rewrites a history CSV atomically (a kill leaves the old file whole)."""
    write_csv(path, [header] + [list(r) for r in rows])


# ----------------------------------------------------------------------------- arrays


def write_npz(path, **arrays):
    """``np.savez_compressed`` into ``path`` atomically (no pickled objects)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())


def read_npz(path: str, required: tuple = (), what: str = "file") -> dict:
    """Loads an ``.npz`` without pickle; names the problem (missing, truncated, object
    arrays, missing keys) and the fix in an :class:`InputError`.

    Returns:
      dict of numpy arrays.
    """
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise InputError(f"{what} {path!r} does not exist: pass the path of an existing .npz.")
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {k: f[k] for k in f.files}
    except ValueError as err:
        if "allow_pickle" in str(err) or "Object arrays" in str(err):
            raise InputError(f"{what} {path} holds Python objects (pickled arrays), which are "
                             "not loaded for safety: save plain numeric arrays.") from None
        raise InputError(f"{what} {path} is not a readable .npz ({err}): it is corrupt or "
                         "truncated; write it again.") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise InputError(f"{what} {path} is not a readable .npz ({type(err).__name__}): it is "
                         "corrupt or truncated; write it again.") from None
    missing = [k for k in required if k not in out]
    if missing:
        raise InputError(f"{what} {path} lacks the array(s) {', '.join(missing)} (it has: "
                         f"{', '.join(sorted(out)) or 'none'}).")
    return out


def write_adversarial(out_dir, *, x, x_adv, y, pred_clean, pred_adv, targets=None, **extra):
    """Writes ``<out_dir>/adversarial.npz`` (the attack contract: x, x_adv, y, pred_clean,
    pred_adv, and targets for targeted attacks)."""
    arrays = {"x": x, "x_adv": x_adv, "y": y, "pred_clean": pred_clean, "pred_adv": pred_adv}
    if targets is not None:
        arrays["targets"] = targets
    arrays.update(extra)
    path = os.path.join(out_dir, ADVERSARIAL)
    write_npz(path, **arrays)
    return path


def read_adversarial(path: str) -> dict:
    """Reads and checks an ``adversarial.npz`` of ``experiments.attack``.

    Returns:
      dict with float32 ``x``/``x_adv`` of one shape, int64 ``y`` (and the other arrays).
    """
    hint = "the output_dir of experiments.attack"
    what = f"--adversarial file (expected {hint}/adversarial.npz)"
    data = read_npz(path, required=("x", "x_adv", "y"), what=what)
    x, x_adv, y = data["x"], data["x_adv"], data["y"]
    for name, a in (("x", x), ("x_adv", x_adv), ("y", y)):
        if not np.issubdtype(a.dtype, np.number):
            raise InputError(f"{path}: array {name!r} is not numeric ({a.dtype}).")
    if x.shape != x_adv.shape or x.ndim < 2 or len(x) == 0:
        raise InputError(f"{path}: 'x' {x.shape} and 'x_adv' {x_adv.shape} must be non-empty "
                         "image batches of the same shape.")
    if y.reshape(len(y), -1).shape != (len(x), 1):
        raise InputError(f"{path}: 'y' has shape {y.shape}; expected one label per image "
                         f"({len(x)},).")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(x_adv))):
        raise InputError(f"{path}: 'x'/'x_adv' contain NaN or Inf: write the file again.")
    data["x"], data["x_adv"] = x.astype(np.float32), x_adv.astype(np.float32)
    data["y"] = y.reshape(-1).astype(np.int64)
    return data


# ----------------------------------------------------------------------------- tables


def mean_std(values):
    """``(mean, sample std with ddof=1)`` of numbers; std is None for a single value."""
    v = np.asarray(values, np.float64)
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)


def _fmt(mean, std, digits):
    text = f"{mean:.{digits}f}"
    return text if std is None else f"{text} ± {std:.{digits}f}"


def write_table(out_dir, *, row_label, columns, rows, title, unit, stem="table", notes=(),
                digits=2):
    """Writes ``<stem>.md`` and ``<stem>.csv`` from numbers.

    Args:
      row_label: header of the first column (e.g. "Model").
      columns: column labels (e.g. ``["Clean", "50 dB", ...]``).
      rows: ``{row name: {column: value or list of per-run values}}``; a list gives
        mean ± sample std (ddof=1).
      title: the sentence above the markdown table (what the numbers are).
      unit: the unit of every cell (e.g. "%"), written in the CSV header.
      notes: extra markdown lines below the table.

    Returns:
      ``{row: {column: {"mean", "std", "n"}}}`` — the numbers written.
    """
    stats = {}
    for name, cells in rows.items():
        stats[name] = {}
        for c in columns:
            vals = np.atleast_1d(np.asarray(cells[c], np.float64))
            m, s = mean_std(vals)
            stats[name][c] = {"mean": m, "std": s, "n": int(vals.size)}
    with_std = any(v["std"] is not None for r in stats.values() for v in r.values())
    header = [row_label]
    for c in columns:
        header += [f"{c} ({unit})"] + ([f"{c} std ({unit})"] if with_std else [])
    csv_rows = [header]
    for name, r in stats.items():
        line = [name]
        for c in columns:
            line.append(round(r[c]["mean"], 6))
            if with_std:
                line.append("" if r[c]["std"] is None else round(r[c]["std"], 6))
        csv_rows.append(line)
    write_csv(os.path.join(out_dir, f"{stem}.csv"), csv_rows)
    md = [title, "", "| " + " | ".join([row_label] + [str(c) for c in columns]) + " |",
          "|" + "---|" * (len(columns) + 1)]
    for name, r in stats.items():
        md.append("| " + " | ".join([name] + [_fmt(r[c]["mean"], r[c]["std"], digits)
                                              for c in columns]) + " |")
    if with_std:
        md += ["", f"Cells: mean ± sample standard deviation (ddof=1), in {unit}."]
    else:
        md += ["", f"Cells in {unit}."]
    md += list(notes)
    with atomic_open(os.path.join(out_dir, f"{stem}.md")) as f:
        f.write("\n".join(md) + "\n")
    return stats


# ----------------------------------------------------------------------------- records


def model_fingerprint(model: keras.Model) -> str:
    """A short hash of a model's weights (names, shapes and values): equal weights give an
    equal fingerprint, whatever file or process they come from."""
    h = hashlib.sha256()
    for w in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(w))
        h.update(f"{w.path}:{value.dtype}:{value.shape};".encode())
        h.update(value.tobytes())
    return h.hexdigest()[:16]


def script_record(script, params, models=None):
    """The ``config.json`` of a derived artefact: the script, its *effective* parameters
    (defaults filled in), the fingerprint of every model it used, versions and commit."""
    return {"script": script, "params": jsonable(params), "models": jsonable(models or {}),
            "versions": versions(), "git_commit": git_commit()}


def write_record(out_dir, record):
    write_json(os.path.join(out_dir, CONFIG), record)


def artifact_is_current(out_dir, marker, argv, fingerprints):
    """Whether ``out_dir`` holds a finished artefact (``marker`` exists) whose
    ``config.json`` records this command line (``argv``) and models with these
    ``fingerprints`` — else it must be recomputed."""
    cfg_path = os.path.join(out_dir, CONFIG)
    if not (os.path.exists(os.path.join(out_dir, marker)) and os.path.exists(cfg_path)):
        return False
    try:
        cfg = read_json(cfg_path)
    except InputError:
        return False
    return isinstance(cfg, dict) and cfg.get("argv") == list(argv) and \
        sorted((cfg.get("models") or {}).values()) == sorted(fingerprints)


@contextlib.contextmanager
def locked(run_dir):
    """Holds an exclusive lock on ``run_dir`` (``.lock``) for the duration.

    Raises:
      InputError: if another process holds it.
    """
    import fcntl

    _writable_dir(os.path.join(run_dir, LOCK))
    path = os.path.join(run_dir, LOCK)
    f = open(path, "a")
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"Another process is writing to {run_dir} (it holds {path}); wait "
                             "for it to finish or choose another --output_dir.") from None
        yield
    finally:
        f.close()


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

    try:
        from importlib.metadata import version

        ours = version("cnnvis_tf")
    except Exception:  # noqa: BLE001  (not installed: running from a checkout)
        ours = None
    return {
        "cnnvis_tf": ours,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


# ----------------------------------------------------------------------------- runs


@dataclasses.dataclass
class Run:
    """A loaded run directory."""

    path: str
    model: keras.Model
    config: dict
    metrics: dict
    _fingerprint: str = None

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

    @property
    def fingerprint(self):
        """:func:`model_fingerprint` of the model (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model)
        return self._fingerprint

    def figure_dir(self):
        return os.path.join(self.path, FIGURES)


def load_model(path: str, compile: bool = False) -> keras.Model:
    """``keras.models.load_model`` with one clear error for a corrupt or truncated file
    (``~`` expanded)."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise InputError(f"Model file {path!r} does not exist.")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise InputError(f"{path} is not a readable .keras file (corrupt or truncated): "
                         "retrain, or restore the file.")
    try:
        return keras.models.load_model(path, compile=compile)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, TypeError) as err:
        raise InputError(f"{path} could not be loaded ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200] if str(err) else ''}): the file is "
                         "corrupt or was written by an incompatible version; retrain, or "
                         "run `import cnnvis_tf` before loading custom layers.") from None


def load_run(path: str, compile: bool = False) -> Run:
    """Loads a run directory written by ``experiments.train``.

    Raises:
      InputError: if the directory or one of its contract files is missing or corrupt.
    """
    path = os.path.expanduser(path) if path else path
    if not path or not os.path.isdir(path):
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
    config = read_json(os.path.join(path, CONFIG), "rerun experiments.train with --overwrite")
    needed = [k for k in ("dataset", "clip_min", "clip_max", "class_names") if k not in config]
    if not isinstance(config, dict) or needed:
        raise InputError(f"{os.path.join(path, CONFIG)} lacks {', '.join(needed) or 'keys'}: "
                         "it was not written by experiments.train; rerun it with --overwrite.")
    model = load_model(os.path.join(path, MODEL), compile=compile)
    metrics_path = os.path.join(path, METRICS)
    metrics = read_json(metrics_path) if os.path.exists(metrics_path) else {}
    return Run(path=path, model=model, config=config, metrics=metrics)
