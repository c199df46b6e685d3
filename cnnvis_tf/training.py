"""Training: optimizers and schedules, distribution strategies, resumable ``fit`` into a
run directory (DESIGN.md §2).

Resume: after every epoch the whole model (weights + optimizer state) is saved to
``checkpoints/last.keras`` and the number of finished epochs to ``checkpoints/state.json``
(each written atomically). Rerunning the same command loads them and continues from the
next epoch; rows of ``history.csv`` written after the last checkpoint are dropped first,
so nothing is lost or duplicated.
"""

import csv
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from cnnvis_tf import datasets as datasets_lib
from cnnvis_tf import rundir
from cnnvis_tf.errors import InputError

__all__ = [
    "parse_lr_schedule",
    "make_optimizer",
    "get_strategy",
    "compile_model",
    "set_seed",
    "train",
    "STRATEGIES",
]

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
STEP_LOG_EVERY = 10  # training-loss samples for the per-iteration curves


def parse_lr_schedule(spec):
    """Parses ``"10:1e-4,20:1e-5"`` into ``[(10, 1e-4), (20, 1e-5)]`` (epoch, rate from it).

    Raises:
      InputError: malformed entries, non-positive rates or non-increasing epochs.
    """
    if not spec:
        return []
    out = []
    for item in spec.split(","):
        try:
            epoch, lr = item.split(":")
            out.append((int(epoch), float(lr)))
        except ValueError:
            raise InputError(
                f"Invalid value received for argument `lr_schedule`. Expected "
                f"'epoch:rate,...' like '10:1e-4,20:1e-5'. Received: lr_schedule={spec!r}"
            ) from None
    epochs = [e for e, _ in out]
    if any(e <= 0 for e in epochs) or epochs != sorted(set(epochs)):
        raise InputError(
            f"Invalid value received for argument `lr_schedule`. Expected strictly increasing "
            f"positive epochs. Received: lr_schedule={spec!r}"
        )
    if any(lr <= 0 for _, lr in out):
        raise InputError(
            f"Invalid value received for argument `lr_schedule`. Expected positive rates. "
            f"Received: lr_schedule={spec!r}"
        )
    return out


def make_optimizer(name, learning_rate, *, momentum=0.9, lr_schedule=None, steps_per_epoch=1):
    """Adam or SGD(+momentum), with an optional piecewise-constant schedule in epochs."""
    if learning_rate <= 0:
        raise InputError(
            "Invalid value received for argument `learning_rate`. Expected > 0. "
            f"Received: learning_rate={learning_rate}"
        )
    pieces = parse_lr_schedule(lr_schedule) if isinstance(lr_schedule, str) else lr_schedule
    lr = learning_rate
    if pieces:
        lr = keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries=[int(e * steps_per_epoch) for e, _ in pieces],
            values=[float(learning_rate)] + [float(v) for _, v in pieces],
        )
    if name == "adam":
        return keras.optimizers.Adam(lr)
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=momentum)
    raise InputError(f"Unknown optimizer {name!r}. Choose adam or sgd.")


def get_strategy(name="default", tpu=None):
    """A ``tf.distribute`` strategy by name: default | mirrored | multi_worker | tpu."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise InputError(f"Unknown strategy {name!r}. Choose one of: {', '.join(STRATEGIES)}.")


def compile_model(model, optimizer):
    """Compiles for integer labels and logits outputs."""
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def set_seed(seed, deterministic=False):
    """Seeds Python, NumPy and TensorFlow; ``deterministic`` also makes TF ops deterministic."""
    keras.utils.set_random_seed(int(seed))
    if deterministic:
        tf.config.experimental.enable_op_determinism()


class _RunLogger(keras.callbacks.Callback):
    """Appends epoch rows to history.csv and sampled step rows to history_steps.csv,
    then checkpoints the model; the checkpoint is what makes those rows final."""

    def __init__(self, run_dir, steps_per_epoch, prev_seconds=0.0):
        super().__init__()
        self.run_dir = run_dir
        self.steps_per_epoch = steps_per_epoch
        self.prev_seconds = prev_seconds
        self.start = time.time()
        self._epoch = 0
        self._steps = []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._steps = []

    def on_train_batch_end(self, batch, logs=None):
        if batch % STEP_LOG_EVERY == 0 and logs:
            step = self._epoch * self.steps_per_epoch + batch + 1
            self._steps.append(
                (self._epoch, step, float(logs["loss"]), float(logs.get("accuracy", np.nan)))
            )

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        lr = self.model.optimizer.learning_rate
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        path = os.path.join(self.run_dir, rundir.HISTORY)
        if os.path.exists(path):
            with open(path, newline="") as f:
                keys = next(csv.reader(f))[2:]
        else:  # the fixed columns first, then extra losses (e.g. smooth_loss) of defenses
            keys = ["loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]
            keys += sorted(k for k in logs if k not in keys)
        _append_csv(
            path,
            ["epoch", "step"] + keys,
            [[epoch, (epoch + 1) * self.steps_per_epoch] + [logs.get(k, "") for k in keys]],
        )
        _append_csv(
            os.path.join(self.run_dir, "history_steps.csv"),
            ["epoch", "step", "loss", "accuracy"],
            self._steps,
        )
        ckpt = os.path.join(self.run_dir, rundir.CHECKPOINTS)
        self.model.save(os.path.join(ckpt, "last.tmp.keras"))
        os.replace(os.path.join(ckpt, "last.tmp.keras"), os.path.join(ckpt, "last.keras"))
        seconds = self.prev_seconds + time.time() - self.start
        rundir.write_json(
            os.path.join(ckpt, "state.json"), {"epochs_done": epoch + 1, "train_seconds": seconds}
        )


def _append_csv(path, header, rows):
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(header)
        w.writerows(rows)


def _truncate_csv(path, epochs_done):
    """Drops rows of epochs after the last checkpoint (written by an interrupted epoch)."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    keep = rows[:1] + [r for r in rows[1:] if r and int(r[0]) < epochs_done]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(keep)


def read_history(run_dir, name=rundir.HISTORY):
    """Reads history.csv (or history_steps.csv) into a dict of float arrays."""
    path = os.path.join(run_dir, name)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows])
        for k in (rows[0].keys() if rows else [])
    }


def train(
    run_dir,
    data,
    build_fn,
    *,
    epochs,
    batch_size,
    optimizer="adam",
    learning_rate=1e-3,
    momentum=0.9,
    lr_schedule=None,
    augment=False,
    seed=0,
    strategy=None,
    config=None,
    callbacks=(),
    verbose=None,
):
    """Trains into ``run_dir``, resuming from its checkpoint if one exists.

    Args:
      run_dir: the run directory (created if missing).
      data: a :class:`cnnvis_tf.datasets.Dataset`.
      build_fn: ``build_fn() -> keras.Model`` (called inside the strategy scope); it may
        return a ``defenses.DefenseModel`` training wrapper, whose plain classifier is what
        ``model.keras``, ``initial.weights.h5`` and the returned model hold.
      epochs, batch_size, optimizer, learning_rate, momentum, lr_schedule: the recipe.
      augment: random crop (+ flip for natural images) on the training split.
      seed: data-order seed.
      strategy: a ``tf.distribute.Strategy`` (default: the current one).
      config: dict written to config.json (flags, versions, dataset facts are added).
      callbacks: extra Keras callbacks (run after checkpointing).
      verbose: Keras verbosity (default: progress bar on a terminal, a line per epoch else).

    Returns:
      (model, metrics) — the trained (plain) model and the dict written to metrics.json.
    """
    strategy = strategy or tf.distribute.get_strategy()
    for sub in ("", rundir.CHECKPOINTS, rundir.TENSORBOARD, rundir.FIGURES):
        os.makedirs(os.path.join(run_dir, sub), exist_ok=True)
    cfg = dict(config or {})
    cfg.update(data.facts())
    cfg.update(
        {
            "git_commit": rundir.git_commit(),
            "versions": rundir.versions(),
            "num_replicas": strategy.num_replicas_in_sync,
        }
    )
    rundir.write_json(os.path.join(run_dir, rundir.CONFIG), cfg)

    steps_per_epoch = int(np.ceil(len(data.x_train) / batch_size))
    state_path = os.path.join(run_dir, rundir.CHECKPOINTS, "state.json")
    last_path = os.path.join(run_dir, rundir.CHECKPOINTS, "last.keras")
    epochs_done, prev_seconds = 0, 0.0
    with strategy.scope():
        if os.path.exists(state_path) and os.path.exists(last_path):
            state = rundir.read_json(state_path)
            epochs_done, prev_seconds = int(state["epochs_done"]), float(state["train_seconds"])
            model = keras.models.load_model(last_path)
            logging.info("Resuming %s from epoch %d of %d", run_dir, epochs_done, epochs)
        else:
            model = build_fn()
            _classifier(model).save_weights(os.path.join(run_dir, rundir.INITIAL_WEIGHTS))
            opt = make_optimizer(
                optimizer, learning_rate, momentum=momentum, lr_schedule=lr_schedule,
                steps_per_epoch=steps_per_epoch,
            )
            compile_model(model, opt)
    for name in (rundir.HISTORY, "history_steps.csv"):
        if epochs_done == 0 and os.path.exists(os.path.join(run_dir, name)):
            os.remove(os.path.join(run_dir, name))
        _truncate_csv(os.path.join(run_dir, name), epochs_done)

    classifier = _classifier(model)
    params = int(classifier.count_params())
    logging.info("Model %s: %s parameters", classifier.name, f"{params:,}")
    print(f"Model {classifier.name}: {params:,} parameters", flush=True)

    train_ds = datasets_lib.pipeline(
        data.x_train, data.y_train, batch_size, shuffle=True, seed=seed, augment=augment,
        flip=data.hflip,
    )
    test_ds = datasets_lib.pipeline(data.x_test, data.y_test, batch_size)
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    if epochs_done < epochs:
        cbs = [
            _RunLogger(run_dir, steps_per_epoch, prev_seconds),
            keras.callbacks.TensorBoard(os.path.join(run_dir, rundir.TENSORBOARD)),
            *callbacks,
        ]
        model.fit(
            train_ds, validation_data=test_ds, epochs=epochs, initial_epoch=epochs_done,
            callbacks=cbs, verbose=verbose, shuffle=False,
        )
    history = read_history(run_dir)
    test = model.evaluate(test_ds, verbose=0, return_dict=True)
    metrics = {
        "test/accuracy": float(test["accuracy"]),
        "test/loss": float(test["loss"]),
        "train/accuracy": float(history["accuracy"][-1]),
        "train/loss": float(history["loss"][-1]),
        "params": params,
        "epochs": int(len(history["epoch"])),
        "train_seconds": float(rundir.read_json(state_path)["train_seconds"]),
    }
    model = _classifier(model)
    model.save(os.path.join(run_dir, rundir.MODEL))
    rundir.write_json(os.path.join(run_dir, rundir.METRICS), metrics)
    return model, metrics


def _classifier(model):
    """The plain functional classifier (unwraps a defenses.DefenseModel training wrapper)."""
    from cnnvis_tf.defenses import classifier_of

    return classifier_of(model)
