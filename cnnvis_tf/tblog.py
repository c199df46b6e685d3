"""TensorBoard logs of a run: training curves, weight histograms, hyper-parameters (HParams
plugin) and the figures and adversarial examples of the analysis scripts.

Layout of ``<run>/tensorboard/`` (open with ``tensorboard --logdir runs/``, every run
directory then is one row of the HParams dashboard):

- ``.``: the run's settings (HParams plugin, written once per run) and its final test
  metrics ``test/accuracy``, ``test/loss`` (step: epochs trained);
- ``train/``: ``batch_loss``, ``batch_accuracy``, ``batch_learning_rate`` every few steps
  (step: global training step), ``epoch_*`` per epoch (step: epoch index, as Keras'
  TensorBoard callback), weight histograms per epoch;
- ``validation/``: ``epoch_loss``, ``epoch_accuracy``;
- ``<script>_<output folder>/`` (e.g. ``attack_pgd``): figures and example images of
  ``experiments.attack``, ``robustness`` and ``visualize``.

The scalars are written from the committed rows of ``history.csv`` and
``history_steps.csv`` right after each checkpoint commit, and ``logged.json`` records how
far they were written, so a resumed run continues the step numbers where its checkpoint
stopped, writes no step twice and fills in what an interruption left out.
"""

import json
import os
import shutil

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from cnnvis_tf import rundir

__all__ = ["TrainLogger", "tensorboard_dir", "log_images", "flat_hparams"]

STATE = "logged.json"  # what has been written: hparams, epochs, final metrics
TRAIN, VALIDATION = "train", "validation"


def flat_hparams(settings: dict, exclude=()) -> dict:
    """``settings`` flattened with dotted keys into the values HParams accepts (bool, int,
    float, str); lists and None become their JSON text. Keys in ``exclude`` are left out."""
    out = {}

    def walk(d, prefix):
        for key, value in d.items():
            if key in exclude:
                continue
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + ".")
            elif isinstance(value, (bool, int, float, str)) and not isinstance(value, np.generic):
                out[name] = value
            elif isinstance(value, np.generic):
                out[name] = value.item()
            else:
                out[name] = json.dumps(rundir.jsonable(value))

    walk(dict(settings or {}), "")
    return out


def _floats(header, row):
    """``{column: float}`` of a history row, without empty or non-finite cells."""
    out = {}
    for key, cell in zip(header, row):
        try:
            value = float(cell)
        except (TypeError, ValueError):
            continue
        if np.isfinite(value):
            out[key] = value
    return out


class TrainLogger(keras.callbacks.Callback):
    """Writes a training run's TensorBoard logs (see the module docstring).

    Must run after the callback that commits the checkpoint (``training._RunLogger``): it
    logs the rows that commit made final.

    Args:
      log_dir: ``<run>/tensorboard``.
      run_dir: the run directory (its history files are the source of the scalars).
      steps_per_epoch: training steps per epoch (global step = epoch * this + batch + 1).
      hparams: the run's settings (nested dict), written once with the HParams plugin.
      every: batches between ``batch_*`` samples (as ``history_steps.csv``).
      histograms: weight histograms every epoch.
    """

    def __init__(self, log_dir: str, run_dir: str, steps_per_epoch: int, hparams: dict,
                 every: int = 10, histograms: bool = True):
        super().__init__()
        self.log_dir, self.run_dir = log_dir, run_dir
        self.steps_per_epoch, self.every, self.histograms = steps_per_epoch, every, histograms
        self.hparams = flat_hparams(hparams)
        self._writers = {}
        self._epoch = 0
        self._lr = {}  # global step -> learning rate sampled while training

    # -------------------------------------------------------------------- state and writers

    def _state(self):
        path = os.path.join(self.log_dir, STATE)
        return rundir.read_json(path) if os.path.exists(path) else {}

    def _save_state(self, **changes):
        for writer in self._writers.values():
            writer.flush()
        rundir.write_json(os.path.join(self.log_dir, STATE), {**self._state(), **changes})

    def _writer(self, sub=""):
        if sub not in self._writers:
            self._writers[sub] = tf.summary.create_file_writer(os.path.join(self.log_dir, sub))
        return self._writers[sub]

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    # ----------------------------------------------------------------------------- logging

    def begin(self, epochs_done: int, model=None) -> None:
        """Before training: the hparams (once per run), then the scalars of committed
        epochs not yet logged (an interruption between a commit and its logs) and the
        weight histograms of the last one, from ``model`` (the resumed checkpoint)."""
        os.makedirs(self.log_dir, exist_ok=True)
        if not self._state().get("hparams"):
            from tensorboard.plugins.hparams import api as hp

            with self._writer().as_default():
                hp.hparams(self.hparams, trial_id=os.path.basename(
                    os.path.normpath(self.run_dir)))
            self._save_state(hparams=True)
        if model is not None and self.histograms and epochs_done > self._state().get(
                "epochs", 0):
            self._log_weights(model, epochs_done - 1)
        self._log_history(epochs_done)

    def _log_history(self, through_epoch):
        """Scalars of the history rows of epochs ``[logged, through_epoch)``."""
        first = int(self._state().get("epochs", 0))
        if through_epoch <= first:
            return
        header, rows = rundir.read_history_rows(os.path.join(self.run_dir, rundir.HISTORY_STEPS))
        with self._writer(TRAIN).as_default():
            for row in rows:
                values = _floats(header, row)
                if not first <= int(values.get("epoch", -1)) < through_epoch:
                    continue
                step = int(values["step"])
                for key in ("loss", "accuracy"):
                    if key in values:
                        tf.summary.scalar(f"batch_{key}", values[key], step=step)
                if step in self._lr:
                    tf.summary.scalar("batch_learning_rate", self._lr[step], step=step)
        header, rows = rundir.read_history_rows(os.path.join(self.run_dir, rundir.HISTORY))
        for row in rows:
            values = _floats(header, row)
            epoch = int(values.get("epoch", -1))
            if not first <= epoch < through_epoch:
                continue
            for key, value in values.items():
                if key in ("epoch", "step"):
                    continue
                sub, tag = ((VALIDATION, key[4:]) if key.startswith("val_") else (TRAIN, key))
                with self._writer(sub).as_default():
                    tf.summary.scalar(f"epoch_{tag}", value, step=epoch)
        self._lr = {s: v for s, v in self._lr.items()
                    if s > through_epoch * self.steps_per_epoch}
        self._save_state(epochs=through_epoch)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if batch % self.every == 0:
            lr = self.model.optimizer.learning_rate
            self._lr[self._epoch * self.steps_per_epoch + batch + 1] = float(
                keras.ops.convert_to_numpy(lr))

    def _log_weights(self, model, epoch):
        inner = getattr(model, "classifier", None)
        model = inner if isinstance(inner, keras.Model) else model
        with self._writer(TRAIN).as_default():
            for weight in model.weights:
                tf.summary.histogram(weight.path, keras.ops.convert_to_numpy(weight),
                                     step=epoch)

    def on_epoch_end(self, epoch, logs=None):
        if self.histograms:
            self._log_weights(self.model, epoch)
        self._log_history(epoch + 1)

    def final(self, metrics: dict, epochs: int) -> None:
        """The run's final numbers (``test/accuracy``, ``test/loss``, ...) at step
        ``epochs``, once per step; then closes the writers."""
        if self._state().get("final_step") != epochs:
            with self._writer().as_default():
                for key in ("test/accuracy", "test/loss", "validation/accuracy",
                            "validation/loss"):
                    if key in metrics:
                        tf.summary.scalar(key, float(metrics[key]), step=epochs)
            self._save_state(final_step=epochs)
        self.close()


# ----------------------------------------------------------------------------- scripts


def tensorboard_dir(model_path: str | None, out_dir: str) -> str:
    """``<run>/tensorboard`` when ``model_path`` is a run directory, else
    ``<out_dir>/tensorboard``."""
    if model_path and os.path.isfile(os.path.join(model_path, rundir.CONFIG)) and \
            os.path.isfile(os.path.join(model_path, rundir.MODEL)):
        return os.path.join(model_path, rundir.TENSORBOARD)
    return os.path.join(out_dir, rundir.TENSORBOARD)


def _unit(images, clip_min, clip_max):
    span = max(float(clip_max) - float(clip_min), 1e-12)
    return np.clip((np.asarray(images, np.float32) - clip_min) / span, 0.0, 1.0)


def log_images(model_paths, out_dir: str, script: str, *, figures=(), x=None, x_adv=None,
               clip_min: float = 0.0, clip_max: float = 1.0, max_outputs: int = 8) -> list:
    """Logs a script's PNG ``figures`` and a few adversarial examples as TensorBoard images.

    They go to ``<tensorboard dir>/<script>_<name of out_dir>`` of each model of
    ``model_paths`` (one path or several; see :func:`tensorboard_dir`), replacing what an
    earlier run of the same command logged:
    ``figures/<file stem>``, and with ``x``/``x_adv``: ``adversarial/clean``,
    ``adversarial/adversarial`` and ``adversarial/perturbation`` (``x_adv - x`` on one
    scale shared by the examples: grey is 0, black/white ``-/+`` the largest ``|delta|``,
    which the tag's description states).

    Returns:
      the folders written; one that cannot be written is skipped with a warning (the
      script's own outputs matter more).
    """
    paths = [model_paths] if isinstance(model_paths, str) or model_paths is None \
        else list(model_paths)
    name = f"{script}_{os.path.basename(os.path.normpath(out_dir))}"
    folders = dict.fromkeys(os.path.join(tensorboard_dir(p, out_dir), name) for p in paths)
    return [f for f in folders if _write_images(f, figures, x, x_adv, clip_min, clip_max,
                                                max_outputs)]


def _write_images(folder, figures, x, x_adv, clip_min, clip_max, max_outputs):
    try:
        shutil.rmtree(folder, ignore_errors=True)
        writer = tf.summary.create_file_writer(folder)
        with writer.as_default():
            for path in figures:
                image = tf.io.decode_png(tf.io.read_file(path))
                stem = os.path.splitext(os.path.basename(path))[0]
                tf.summary.image(f"figures/{stem}", image[None], step=0)
            if x is not None and x_adv is not None and len(x):
                x, x_adv = np.asarray(x[:max_outputs]), np.asarray(x_adv[:max_outputs])
                delta = x_adv.astype(np.float32) - x.astype(np.float32)
                scale = float(np.abs(delta).max()) or 1.0
                for tag, images, text in (
                        ("clean", _unit(x, clip_min, clip_max), "test images"),
                        ("adversarial", _unit(x_adv, clip_min, clip_max), "their adversarials"),
                        ("perturbation", 0.5 + delta / (2.0 * scale),
                         f"x_adv - x, grey = 0, black/white = -/+{scale:.4g} (max |delta|)")):
                    tf.summary.image(f"adversarial/{tag}", images, step=0,
                                     max_outputs=max_outputs, description=text)
        writer.close()
    except (OSError, tf.errors.OpError) as err:
        logging.warning("TensorBoard images not written to %s: %s", folder, err)
        return False
    logging.info("TensorBoard images: %s", folder)
    return True
