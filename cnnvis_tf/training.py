"""Training: optimizers and schedules, distribution strategies, resumable ``fit`` into a
run directory (DESIGN.md §2).

Records never lie: ``config.json`` stores the settings that define the run (recipe, data,
model architecture, defenses); a rerun with different settings is refused with the list
of differing keys (only ``epochs`` may grow), unless ``overwrite=True`` starts afresh.

Resume: after every epoch the whole model (weights + optimizer state) is saved to
``checkpoints/epoch-NNNN.keras`` and then ``checkpoints/state.json`` names it together with
the number of finished epochs (both atomic; the previous checkpoint is deleted only after
that), so weights and epoch count are committed together. A rerun loads them and continues
from the next epoch; history rows written after the last commit are dropped first. Each
epoch's data order and augmentation are a function of (seed, epoch), so a resumed
``deterministic`` run equals an uninterrupted one. One process at a time: the run
directory is locked while training.

The training split holds out ``validation_split`` of the training data for the per-epoch
``val_*`` curves; the test split is evaluated once, at the end, into ``metrics.json``.
"""

import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from cnnvis_tf import datasets as datasets_lib
from cnnvis_tf import models as models_lib
from cnnvis_tf import precision, rundir, tblog
from cnnvis_tf.errors import InputError

__all__ = [
    "parse_lr_schedule",
    "make_optimizer",
    "get_strategy",
    "compile_model",
    "set_seed",
    "train",
    "architecture_summary",
    "settings_differences",
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


def make_optimizer(name, learning_rate, *, momentum=0.9, lr_schedule=None, steps_per_epoch=1,
                   lr_decay=0.0, weight_decay=0.0):
    """Adam or SGD(+momentum), with an optional schedule.

    Args:
      lr_schedule: piecewise-constant rates in epochs (``"10:1e-4,20:1e-5"``).
      lr_decay: inverse-time decay per step, ``lr / (1 + lr_decay * step)`` (Torch7
        ``optim.sgd``'s ``learningRateDecay``, the recipe of seed 004); exclusive with
        ``lr_schedule``.
      weight_decay: *decoupled* weight decay applied by the optimizer (``w -= lr * wd * w``,
        as PyTorch's AdamW / Loshchilov & Hutter 2019); the L2 penalty alternative is the
        models' ``weight_decay`` (a kernel regularizer).
    """
    for arg, value in (("lr_decay", lr_decay), ("weight_decay", weight_decay)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise InputError(f"Invalid value received for argument `{arg}`. Expected a finite "
                             f"number >= 0. Received: {arg}={value}")
    if not isinstance(learning_rate, (int, float)) or not math.isfinite(learning_rate) or \
            learning_rate <= 0:
        raise InputError(
            "Invalid value received for argument `learning_rate`. Expected > 0. "
            f"Received: learning_rate={learning_rate}"
        )
    pieces = parse_lr_schedule(lr_schedule) if isinstance(lr_schedule, str) else lr_schedule
    if pieces and lr_decay:
        raise InputError("Pass either --lr_schedule or --lr_decay, not both.")
    lr = learning_rate
    if pieces:
        lr = keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries=[int(e * steps_per_epoch) for e, _ in pieces],
            values=[float(learning_rate)] + [float(v) for _, v in pieces],
        )
    elif lr_decay:
        lr = keras.optimizers.schedules.InverseTimeDecay(float(learning_rate), decay_steps=1,
                                                         decay_rate=float(lr_decay))
    wd = {"weight_decay": float(weight_decay)} if weight_decay else {}
    if name == "adam":
        return keras.optimizers.Adam(lr, **wd)
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=momentum, **wd)
    raise InputError(f"Unknown optimizer {name!r}. Choose adam or sgd.")


def check_strategy(name, tpu=None):
    """Raises :class:`InputError` for an unknown strategy, or ``tpu`` with no TPU in sight
    (no ``--tpu``, no ``TPU_NAME``, no local TPU device), before anything is written."""
    if name not in STRATEGIES:
        raise InputError(f"Unknown strategy {name!r}. Choose one of: {', '.join(STRATEGIES)}.")
    if name == "tpu" and not tpu and not os.environ.get("TPU_NAME") and \
            not tf.config.list_logical_devices("TPU"):
        raise InputError("--strategy=tpu found no TPU on this machine and no --tpu was given; "
                         "pass --tpu=<name or grpc address> on a TPU host, or use "
                         "--strategy=default.")


def get_strategy(name="default", tpu=None):
    """A ``tf.distribute`` strategy by name: default | mirrored | multi_worker | tpu."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        check_strategy(name, tpu)
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as err:
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise InputError(f"--strategy=tpu found no TPU ({msg}); pass --tpu=<name or grpc "
                             "address> on a TPU host, or use --strategy=default.") from None
        return tf.distribute.TPUStrategy(resolver)
    raise InputError(f"Unknown strategy {name!r}. Choose one of: {', '.join(STRATEGIES)}.")


def compile_model(model, optimizer, jit_compile=False):
    """Compiles for integer labels and logits outputs; ``jit_compile=True`` compiles the
    train/test steps with XLA (False leaves Keras' choice, "auto": XLA on GPUs, not on CPU
    or under a distribution strategy)."""
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=True if jit_compile else "auto",
    )
    return model


def set_seed(seed, deterministic=False):
    """Seeds Python, NumPy and TensorFlow; ``deterministic`` also makes TF ops deterministic."""
    keras.utils.set_random_seed(int(seed))
    if deterministic:
        tf.config.experimental.enable_op_determinism()



# Settings that may differ between a run and its resumption: where the data files are and
# how the work is spread over devices do not change what is computed.
RESUMABLE_KEYS = ("epochs", "data_dir", "download", "strategy", "tpu", "num_cpu_devices",
                  "output_dir", "overwrite")
_RUN_FILES = (rundir.MODEL, rundir.METRICS, rundir.HISTORY, rundir.HISTORY_STEPS,
              rundir.INITIAL_WEIGHTS, rundir.CONFIG)
_RUN_DIRS = (rundir.CHECKPOINTS, rundir.TENSORBOARD)
_STATE = "state.json"


def architecture_summary(model):
    """A fingerprint of a model's architecture that ignores auto-generated layer names:
    ``(class, output shape, parameter count)`` of every layer, hashed."""
    parts = []
    for layer in model.layers:
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            shape = None
        parts.append([type(layer).__name__, str(shape), int(layer.count_params())])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def settings_differences(old, new, resumable=RESUMABLE_KEYS, defaults=None):
    """Keys whose values differ between two settings dicts (flattened with dots), ignoring
    ``resumable`` keys; ``epochs`` may only grow. A key missing from ``old`` (a setting
    added after that run was recorded) counts as equal when its new value is neutral
    (None, 0, "", False) or its entry in ``defaults``.

    Returns:
      list of ``(key, old value, new value)``.
    """
    def flat(d, prefix=""):
        out = {}
        for k, v in (d or {}).items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a = flat(json.loads(json.dumps(rundir.jsonable(old))))
    b = flat(json.loads(json.dumps(rundir.jsonable(new))))
    neutral = (None, 0, 0.0, "", False)
    diffs = [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
             if k.split(".")[-1] not in resumable and a.get(k) != b.get(k)
             # a setting added after the run was recorded, left at its neutral default
             and not (k not in a and (b.get(k) in neutral or
                                     (defaults or {}).get(k.split(".")[-1], object())
                                     == b.get(k)))]
    if a.get("epochs") is not None and b.get("epochs") is not None and b["epochs"] < a["epochs"]:
        diffs.append(("epochs", a["epochs"], b["epochs"]))
    return diffs


def _refuse(run_dir, diffs):
    lines = "; ".join(f"{k}: {o!r} -> {n!r}" for k, o, n in diffs)
    raise InputError(
        f"{run_dir} holds a run made with other settings ({lines}). Resuming would mix two "
        f"runs under one record. Either choose a new --output_dir, or pass --overwrite to "
        f"delete this run and train afresh (only --epochs may grow on a rerun)."
    )


def _clear_run(run_dir):
    for name in _RUN_FILES:
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            os.remove(path)
    for name in _RUN_DIRS:
        shutil.rmtree(os.path.join(run_dir, name), ignore_errors=True)


def _existing_settings(run_dir):
    """The settings of a run already in ``run_dir`` (None if there is none)."""
    cfg_path = os.path.join(run_dir, rundir.CONFIG)
    started = any(os.path.exists(os.path.join(run_dir, p)) for p in
                  (os.path.join(rundir.CHECKPOINTS, _STATE), rundir.MODEL, rundir.METRICS))
    if not started:
        return None
    if not os.path.exists(cfg_path):
        return {}
    cfg = rundir.read_json(cfg_path, "pass --overwrite to start the run afresh")
    return cfg.get("settings", {}) if isinstance(cfg, dict) else {}


def _keep_provenance(run_dir, cfg, epochs):
    """On a resume, config.json keeps the code version that trained the first epochs
    (``git_commit``, ``versions``); a resume that trains more epochs is appended to
    ``resumes`` with its own commit, so the record never claims a commit that did not train."""
    cfg_path = os.path.join(run_dir, rundir.CONFIG)
    state_path = os.path.join(run_dir, rundir.CHECKPOINTS, _STATE)
    if not (os.path.exists(cfg_path) and os.path.exists(state_path)):
        return cfg
    old = rundir.read_json(cfg_path, "pass --overwrite to start the run afresh")
    if not isinstance(old, dict) or "git_commit" not in old:
        return cfg
    done = int(rundir.read_json(state_path, "pass --overwrite to start afresh")["epochs_done"])
    resumes = list(old.get("resumes", []))
    if done < epochs:
        resumes.append({"git_commit": cfg["git_commit"], "versions": cfg["versions"],
                        "from_epoch": done, "to_epoch": epochs})
    cfg.update({"git_commit": old["git_commit"], "versions": old.get("versions", cfg["versions"])})
    if resumes:  # a rerun with nothing to train leaves config.json byte-identical
        cfg["resumes"] = resumes
    return cfg


def _classifier(model):
    """The plain classifier inside a training wrapper (any model with a ``classifier``
    attribute, e.g. ``defenses.DefenseModel``), else the model."""
    inner = getattr(model, "classifier", None)
    return inner if isinstance(inner, keras.Model) else model


class _RunLogger(keras.callbacks.Callback):
    """Writes epoch rows to history.csv and sampled step rows to history_steps.csv
    (atomic rewrites), then commits the checkpoint: the checkpoint and ``state.json`` that
    names it are what make those rows final."""

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
        keys, rows = rundir.read_history_rows(path)
        keys = keys[2:]
        if not keys:  # the fixed columns first, then extra losses (e.g. smooth_loss)
            keys = ["loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]
            keys += sorted(k for k in logs if k not in keys)
        row = [epoch, (epoch + 1) * self.steps_per_epoch] + [logs.get(k, "") for k in keys]
        rundir.write_history(path, ["epoch", "step"] + keys, rows + [row])
        steps_path = os.path.join(self.run_dir, rundir.HISTORY_STEPS)
        _, step_rows = rundir.read_history_rows(steps_path)
        rundir.write_history(steps_path, ["epoch", "step", "loss", "accuracy"],
                             step_rows + self._steps)
        seconds = self.prev_seconds + time.time() - self.start
        _commit_checkpoint(self.run_dir, self.model, epoch + 1, seconds)


def _commit_checkpoint(run_dir, model, epochs_done, seconds):
    ckpt = os.path.join(run_dir, rundir.CHECKPOINTS)
    name = f"epoch-{epochs_done:04d}.keras"
    tmp = os.path.join(ckpt, f"epoch-{epochs_done:04d}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, os.path.join(ckpt, name))
    rundir.write_json(os.path.join(ckpt, _STATE), {
        "epochs_done": epochs_done, "checkpoint": name, "train_seconds": seconds})
    for other in os.listdir(ckpt):  # older checkpoints, only after the commit
        if other.endswith(".keras") and other != name:
            os.remove(os.path.join(ckpt, other))


def _epoch_dataset(x, y, batch_size, seed, epoch, augment, flip, replicas=1):
    """The training batches of one epoch: order and augmentation are functions of
    (seed, epoch) only, so a resumed run sees the same data as an uninterrupted one. With
    several replicas a last batch smaller than the replica count (which would leave a
    replica without examples) is dropped."""
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(len(x))
    drop = replicas > 1 and 0 < len(x) % batch_size < replicas
    return datasets_lib.pipeline(datasets_lib.take(x, order), y[order], batch_size,
                                 augment=augment, flip=flip, seed=(int(seed), int(epoch)),
                                 drop_remainder=drop)


def _eval_batch_size(n, batch_size, replicas):
    """A batch size near ``batch_size`` whose last batch gives every replica an example."""
    bs = batch_size
    while replicas > 1 and 0 < n % bs < replicas and bs < batch_size + replicas * 4:
        bs += 1
    return bs


def _check_args(epochs, batch_size):
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"Invalid value received for argument `{name}`. Expected an "
                             f"integer >= 1. Received: {name}={value!r}")


def train(
    run_dir: str,
    data: datasets_lib.Dataset,
    build_fn: Callable[[], keras.Model],
    *,
    epochs: int,
    batch_size: int,
    optimizer: str = "adam",
    learning_rate: float = 1e-3,
    momentum: float = 0.9,
    lr_schedule: str | Sequence[tuple[int, float]] | None = None,
    lr_decay: float = 0.0,
    decoupled_weight_decay: float = 0.0,
    augment: bool = False,
    seed: int = 0,
    strategy: tf.distribute.Strategy | None = None,
    config: dict | None = None,
    settings: dict | None = None,
    overwrite: bool = False,
    defaults: dict | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | None = None,
    mixed_precision: bool = False,
    jit_compile: bool = False,
):
    """Trains into ``run_dir``, resuming from its checkpoint if one exists.

    Args:
      run_dir: the run directory (created if missing).
      data: a :class:`cnnvis_tf.datasets.Dataset` (its ``x_val``/``y_val``, if any, give
        the per-epoch validation curves; ``x_test`` is evaluated once, at the end).
      build_fn: ``build_fn() -> keras.Model`` (called inside the strategy scope); it may
        return a training wrapper with a ``classifier`` attribute (e.g.
        ``defenses.DefenseModel``), whose plain classifier is what ``model.keras``,
        ``initial.weights.h5`` and the returned model hold.
      epochs, batch_size, optimizer, learning_rate, momentum, lr_schedule, lr_decay,
        decoupled_weight_decay: the recipe (see :func:`make_optimizer`).
      augment: random crop (+ flip for natural images) on the training split.
      seed: data-order seed.
      strategy: a ``tf.distribute.Strategy`` (default: the current one).
      config: extra facts written to config.json (e.g. the command-line flags).
      settings: what else defines the run (model name, defenses, ...); stored in
        config.json with the recipe, the data facts and the architecture, and compared on
        a rerun.
      overwrite: delete an existing run in ``run_dir`` with other settings and start afresh.
      defaults: default values of settings (older runs that lack a setting at its default
        still resume).
      callbacks: extra Keras callbacks (run after checkpointing).
      verbose: Keras verbosity (default: progress bar on a terminal, a line per epoch else).
      mixed_precision: build, train and evaluate under Keras' ``mixed_float16`` policy
        (restored afterwards; float16 compute, float32 variables, dynamic loss scaling);
        ``build_fn`` must give float32 logits (see :func:`cnnvis_tf.precision.with_policy`).
      jit_compile: compile the train and test steps with XLA (see :func:`compile_model`).
      Both are settings of the run (recorded, compared on a rerun).

    Returns:
      (model, metrics) — the trained (plain) model and the dict written to metrics.json.

    Raises:
      InputError: bad arguments, or ``run_dir`` holds a run with other settings, or another
        process is training into it.
    """
    _check_args(epochs, batch_size)
    strategy = strategy or tf.distribute.get_strategy()
    os.makedirs(run_dir, exist_ok=True)
    with rundir.locked(run_dir), \
            precision.policy_scope(precision.MIXED if mixed_precision else None):
        return _train_locked(
            run_dir, data, build_fn, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
            learning_rate=learning_rate, momentum=momentum, lr_schedule=lr_schedule,
            lr_decay=lr_decay, decoupled_weight_decay=decoupled_weight_decay, augment=augment,
            seed=seed, strategy=strategy, config=config, settings=settings,
            overwrite=overwrite, defaults=defaults, callbacks=callbacks, verbose=verbose,
            mixed_precision=bool(mixed_precision), jit_compile=bool(jit_compile))


def _train_locked(run_dir, data, build_fn, *, epochs, batch_size, optimizer, learning_rate,
                  momentum, lr_schedule, lr_decay, decoupled_weight_decay, augment, seed,
                  strategy, config, settings, overwrite, defaults, callbacks, verbose,
                  mixed_precision, jit_compile):
    replicas = strategy.num_replicas_in_sync
    steps_per_epoch = int(np.ceil(len(data.x_train) / batch_size))
    if replicas > 1 and 0 < len(data.x_train) % batch_size < replicas:
        steps_per_epoch -= 1
    with strategy.scope():
        fresh = build_fn()
    classifier = _classifier(fresh)
    if mixed_precision and precision.output_dtypes(classifier) != ["float32"]:
        raise InputError(
            f"mixed_precision: {classifier.name!r} outputs {precision.output_dtypes(classifier)}"
            "; the logits and the loss must be float32. Build the last layer with "
            "dtype='float32', or return precision.with_policy(model) from build_fn.")
    facts = data.facts()
    full = {
        **dict(settings or {}),
        "epochs": int(epochs), "batch_size": int(batch_size), "optimizer": optimizer,
        "learning_rate": float(learning_rate), "momentum": float(momentum),
        "lr_schedule": lr_schedule or "", "lr_decay": float(lr_decay),
        "decoupled_weight_decay": float(decoupled_weight_decay),
        "augment": bool(augment), "seed": int(seed),
        "steps_per_epoch": steps_per_epoch,
        "mixed_precision": mixed_precision, "jit_compile": jit_compile,
        "data": {k: facts[k] for k in ("dataset", "data_source", "input_shape", "num_classes",
                                       "train_examples", "validation_examples",
                                       "test_examples")},
        "architecture": {"name": classifier.name, "params": int(classifier.count_params()),
                         "summary": architecture_summary(classifier),
                         "wrapper": type(fresh).__name__ if fresh is not classifier else None},
    }
    old = _existing_settings(run_dir)
    if old is not None:
        diffs = (settings_differences(old, full, defaults=defaults) if old
                 else [("settings", "unrecorded", "new")])
        if diffs and not overwrite:
            _refuse(run_dir, diffs)
        if diffs:
            logging.warning("--overwrite: deleting the run in %s (%s)", run_dir, diffs)
            _clear_run(run_dir)
    for sub in (rundir.CHECKPOINTS, rundir.TENSORBOARD, rundir.FIGURES):
        os.makedirs(os.path.join(run_dir, sub), exist_ok=True)
    cfg = dict(config or {})
    cfg.update(facts)
    cfg.update({"settings": full, "git_commit": rundir.git_commit(),
                "versions": rundir.versions(), "num_replicas": strategy.num_replicas_in_sync})
    cfg = _keep_provenance(run_dir, cfg, epochs)
    rundir.write_json(os.path.join(run_dir, rundir.CONFIG), cfg)

    state_path = os.path.join(run_dir, rundir.CHECKPOINTS, _STATE)
    epochs_done, prev_seconds = 0, 0.0
    with strategy.scope():
        if os.path.exists(state_path):
            state = rundir.read_json(state_path, "pass --overwrite to start afresh")
            ckpt = os.path.join(run_dir, rundir.CHECKPOINTS, state["checkpoint"])
            epochs_done, prev_seconds = int(state["epochs_done"]), float(state["train_seconds"])
            model = rundir.load_model(ckpt, compile=True)
            logging.info("Resuming %s from epoch %d of %d", run_dir, epochs_done, epochs)
        else:
            model = fresh
            classifier.save_weights(os.path.join(run_dir, rundir.INITIAL_WEIGHTS))
            opt = make_optimizer(
                optimizer, learning_rate, momentum=momentum, lr_schedule=lr_schedule,
                steps_per_epoch=steps_per_epoch, lr_decay=lr_decay,
                weight_decay=decoupled_weight_decay,
            )
            compile_model(model, opt, jit_compile=jit_compile)
    for name in (rundir.HISTORY, rundir.HISTORY_STEPS):
        path = os.path.join(run_dir, name)
        header, rows = rundir.read_history_rows(path)
        if epochs_done == 0 and os.path.exists(path):
            os.remove(path)
        elif header:  # drop rows of an epoch that was not committed
            rundir.write_history(path, header, [r for r in rows if int(r[0]) < epochs_done])

    classifier = _classifier(model)
    params = int(classifier.count_params())
    neurons = models_lib.neuron_count(classifier)
    logging.info("Model %s: %s parameters, %s neurons", classifier.name, f"{params:,}",
                 f"{neurons:,}")
    print(f"Model {classifier.name}: {params:,} parameters, {neurons:,} neurons "
          "(Sahoo 2019's count)", flush=True)

    val_ds = None
    if getattr(data, "x_val", None) is not None and len(data.x_val):
        val_ds = datasets_lib.pipeline(data.x_val, data.y_val,
                                       _eval_batch_size(len(data.x_val), batch_size, replicas))
    else:
        logging.info("No validation split: the per-epoch curves show training numbers only.")
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    logger = _RunLogger(run_dir, steps_per_epoch, prev_seconds)
    # Per-step scalars, weight histograms and hparams (once per run; resumes continue).
    tensorboard = tblog.TrainLogger(
        os.path.join(run_dir, rundir.TENSORBOARD), run_dir, steps_per_epoch,
        {k: v for k, v in full.items() if k not in RESUMABLE_KEYS}, every=STEP_LOG_EVERY)
    tensorboard.begin(epochs_done, model)
    for epoch in range(epochs_done, epochs):
        train_ds = _epoch_dataset(data.x_train, data.y_train, batch_size, seed, epoch,
                                  augment, data.hflip, replicas)
        model.fit(train_ds, validation_data=val_ds, epochs=epoch + 1, initial_epoch=epoch,
                  callbacks=[logger, tensorboard, *callbacks], verbose=verbose, shuffle=False)
    history = rundir.read_history(run_dir)
    test_ds = datasets_lib.pipeline(data.x_test, data.y_test,
                                    _eval_batch_size(len(data.x_test), batch_size, replicas))
    test = model.evaluate(test_ds, verbose=0, return_dict=True)
    state = rundir.read_json(state_path)
    classifier = _classifier(model)
    metrics = {
        "test/accuracy": float(test["accuracy"]),
        "test/loss": float(test["loss"]),
        "train/accuracy": float(history["accuracy"][-1]),
        "train/loss": float(history["loss"][-1]),
        "params": params,
        "neurons": neurons,
        "epochs": int(len(history["epoch"])),
        "train_seconds": float(state["train_seconds"]),
        "model_fingerprint": rundir.model_fingerprint(classifier),
    }
    if "val_accuracy" in history and np.isfinite(history["val_accuracy"][-1]):
        metrics["validation/accuracy"] = float(history["val_accuracy"][-1])
        metrics["validation/loss"] = float(history["val_loss"][-1])
    tmp = os.path.join(run_dir, "model.tmp.keras")
    classifier.save(tmp)
    os.replace(tmp, os.path.join(run_dir, rundir.MODEL))
    tensorboard.final(metrics, metrics["epochs"])
    rundir.write_json(os.path.join(run_dir, rundir.METRICS), metrics)  # completion marker
    return classifier, metrics
