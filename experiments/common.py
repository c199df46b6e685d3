"""Flags and set-up shared by the experiment scripts.

Every script: ``common.run(main)`` instead of ``app.run(main)`` so that a bad flag or input
(:class:`cnnvis_tf.errors.InputError`) exits non-zero with one clear line.
"""

import dataclasses
import os
import sys

from absl import app, flags, logging

from cnnvis_tf.errors import InputError

FLAGS = flags.FLAGS

flags.DEFINE_string("output_dir", None, "Directory every output is written to.")
flags.DEFINE_integer("seed", 0, "Seed of weights, data order and splits.")
flags.DEFINE_enum("figure_format", "png", ["png", "pdf", "svg"], "File format of the "
                  "figures the script writes (pdf/svg: vector, for papers).")


def apply_figure_format() -> None:
    """Makes :mod:`cnnvis_tf.vis.plotting` write figures in ``--figure_format``."""
    from cnnvis_tf.vis import plotting

    plotting.set_figure_format(FLAGS.figure_format)
flags.DEFINE_integer(
    "num_cpu_devices", 0,
    "If > 1, split the CPU into this many logical devices (to test --strategy=mirrored "
    "without accelerators).",
)


def configure_devices(num_cpu_devices):
    """Splits the host CPU into ``num_cpu_devices`` logical devices (before TF starts)."""
    if num_cpu_devices and num_cpu_devices > 1:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        current = tf.config.get_logical_device_configuration(cpu) or []
        if len(current) == int(num_cpu_devices):
            return  # already split (an earlier script main in this process)
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * int(num_cpu_devices)
            )
        except RuntimeError:
            raise InputError(f"--num_cpu_devices={num_cpu_devices} must be set before "
                             "TensorFlow starts; in one process, pass the same value to "
                             "every script main.") from None


def script_flags():
    """The values of the flags defined by experiments modules (not absl's own)."""
    out = {}
    for module, module_flags in FLAGS.flags_by_module_dict().items():
        if module.startswith("experiments") or module == "__main__" or "experiments/" in module:
            for f in module_flags:
                out[f.name] = f.value
    return out


def make_output_dir(path):
    """Creates ``--output_dir`` (``~`` expanded) or says in one line why it cannot."""
    if not path:
        raise InputError("--output_dir is required: pass --output_dir=<directory for outputs>.")
    from cnnvis_tf import rundir

    path = rundir.ensure_dir(os.path.expanduser(path))
    if not os.access(path, os.W_OK):
        raise InputError(f"--output_dir={path} is not writable; choose a writable location.")
    return path


def resume_command(argv=None):
    """The command line that reruns this script with the same flags, e.g. ``python -m
    experiments.train --epochs=5 --output_dir=runs/a`` (the Ctrl-C message names it)."""
    import shlex
    import shutil

    argv = list(sys.argv if argv is None else argv)
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        python = "python" if shutil.which("python") == sys.executable else sys.executable
        head = [python, "-m", spec.name]
    else:  # a console command (cnnvis-train) or a script path
        head = [os.path.basename(argv[0]) if shutil.which(os.path.basename(argv[0] or ""))
                else argv[0]]
    return shlex.join(head + argv[1:])


def run(main, required=()):
    """``app.run`` with one-line errors for bad input and for Ctrl-C.

    ``required`` flags are checked before anything runs (so no output directory is made for
    a command that cannot run); a tuple of names in ``required`` means one of them.
    ``--help`` lists the script's flags and those it takes from this module, also when the
    script runs as a console command (``cnnvis-attack``)."""
    _register_key_flags(main)

    def wrapped(argv):
        try:
            missing = [" or ".join(f"--{n}" for n in name) if isinstance(name, tuple)
                       else f"--{name}" for name in required
                       if all(FLAGS[n].value in (None, "") for n in (
                           name if isinstance(name, tuple) else (name,)))]
            if missing:
                raise InputError(f"{', '.join(missing)} is required: see --help for what to "
                                 "pass.")
            apply_figure_format()
            return main(argv)
        except InputError as err:
            sys.stderr.write(f"error: {err}\n")
            sys.stderr.flush()
            sys.exit(2)
        except KeyboardInterrupt:
            sys.stderr.write("interrupted: rerun the same command to resume where it "
                             f"stopped: {resume_command()}\n")
            sys.stderr.flush()
            sys.exit(130)

    app.run(wrapped)


# ----------------------------------------------------------------------------- training

TRAIN_DEFAULTS = {
    "dataset": "mnist", "epochs": 5, "batch_size": 16, "optimizer": "adam",
    "learning_rate": 1e-3, "adv_ratio": 0.5, "adv_snr_db": None, "pgd_steps": 7,
}


def define_train_flags(**defaults):
    """Defines the training flags (those of :class:`cnnvis_tf.recipes.TrainConfig`) with
    this script's ``defaults``; used by every script that trains."""
    from cnnvis_tf import datasets, models, training

    d = {**TRAIN_DEFAULTS, **defaults}
    flags.DEFINE_enum("dataset", d["dataset"], list(datasets.DATASETS), "Dataset to train on.")
    flags.DEFINE_string("data_dir", None, "Folder with the dataset's files (default: Keras "
                        "cache); ~ is expanded.")
    flags.DEFINE_bool("download", False, "Download missing dataset files with Keras' "
                      "downloader.")
    flags.DEFINE_bool("embedded", d.get("embedded", False),
                      "MNIST only: use the embedded 5,000-image subset.")
    flags.DEFINE_enum(
        "model", None, sorted(models.MODELS),
        "Model of the zoo (default: conv2_fc500 for mnist, resnet18 for cifar10/100 and svhn, "
        "resnet18_stem_pool for tiny_imagenet).")
    flags.DEFINE_bool("svhn_extra", False, "SVHN: add extra_32x32.mat (531,131 images) to "
                      "the training split.")
    flags.DEFINE_enum("normalization", "dataset", ["dataset", "imagenet"],
                      "Per-channel statistics of the model's normalize layer: the training "
                      "split's, or ImageNet's (RGB data, e.g. Tiny ImageNet).")
    flags.DEFINE_bool("batch_norm", False, "Batch-norm variant of the model.")
    flags.DEFINE_bool("normalize", True, "Fold per-channel mean/std normalization into the "
                      "model.")
    flags.DEFINE_integer("epochs", d["epochs"], "Number of epochs (may grow on a rerun).",
                         lower_bound=1)
    flags.DEFINE_integer("batch_size", d["batch_size"], "Global batch size.", lower_bound=1)
    flags.DEFINE_enum("optimizer", d["optimizer"], ["adam", "sgd"], "Optimizer.")
    flags.DEFINE_float("learning_rate", d["learning_rate"], "Initial learning rate (> 0).")
    flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
    flags.DEFINE_string("lr_schedule", "", "Piecewise rates 'epoch:rate,...', e.g. "
                        "'10:1e-4,20:1e-5'.")
    flags.DEFINE_float("weight_decay", 0.0, "Weight decay coefficient (see "
                       "--weight_decay_mode).")
    flags.DEFINE_enum("weight_decay_mode", "l2", ["l2", "decoupled"],
                      "l2: a kernel penalty wd*||W||^2 in the loss (Keras); decoupled: "
                      "w -= lr*wd*w by the optimizer (PyTorch/Torch style, AdamW).")
    flags.DEFINE_float("lr_decay", 0.0, "Inverse-time learning-rate decay per step, "
                       "lr/(1 + lr_decay*step) (Torch7 optim.sgd learningRateDecay; "
                       "Andrews 2016 uses it).")
    flags.DEFINE_bool("augment", False, "Random crop (and flip for natural images).")
    flags.DEFINE_integer("train_size", None, "Train on a seeded subset of this size.",
                         lower_bound=1)
    flags.DEFINE_float("validation_split", 0.1, "Fraction of the training data held out for "
                       "the per-epoch validation curves (0: none); the test split is "
                       "evaluated once, at the end.")
    flags.DEFINE_bool("deterministic", False, "Deterministic TF ops (same seed, same "
                      "metrics, also across a resume).")
    flags.DEFINE_enum("strategy", "default", list(training.STRATEGIES), "tf.distribute "
                      "strategy.")
    flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu.")
    flags.DEFINE_bool("overwrite", False, "Delete a run with other settings in --output_dir "
                      "and train afresh (without it such a rerun is refused).")
    # Defenses (Goodfellow 2015, Madry 2018, Cisse 2017, Lassance 2018, Zhang 2018).
    flags.DEFINE_enum("adv_training", "none", ["none", "fgsm", "pgd"], "Adversarial training.")
    flags.DEFINE_float("adv_ratio", d["adv_ratio"], "Fraction of each batch replaced by "
                       "adversarial examples.")
    flags.DEFINE_float("adv_eps", None, "Fixed L-inf budget of adversarial training.")
    flags.DEFINE_float("adv_snr_db", d["adv_snr_db"],
                       "Per-example eps from a Gaussian truncated at +-2 sigma, sigma matched "
                       "to this SNR in dB (Moreira Freitas 2018, e.g. 33).")
    flags.DEFINE_integer("pgd_steps", d["pgd_steps"], "PGD steps of --adv_training=pgd.",
                         lower_bound=1)
    flags.DEFINE_float("parseval_beta", 0.0, "Parseval retraction strength beta (0: off).")
    flags.DEFINE_float("smooth_gamma", 0.0, "Laplacian smoothness weight gamma (0: off).")
    flags.DEFINE_integer("smooth_power", 1, "Laplacian power m of the smoothness term.",
                         lower_bound=1)
    flags.DEFINE_string("smooth_layers", None, "Comma-separated layers for smoothness "
                        "(default: the model's conv/FC activations).")
    flags.DEFINE_enum("smooth_weighting", "seed002", ["seed002", "gamma"],
                      "Weight of the smoothness penalty: gamma**m (Moreira Freitas 2018's "
                      "code) or gamma (Lassance et al.'s code).")
    flags.DEFINE_float("filter_loss_weight", 0.0, "Interpretable filter mask + filter loss "
                       "weight (Zhang et al. 2018; 0: off). The mask stays on at inference.")
    flags.DEFINE_string("filter_layer", None, "Layer the interpretable filter mask follows "
                        "(default: the last conv's ReLU).")
    flags.DEFINE_float("noise_sigma", 0.0, "Gaussian data augmentation of this std while "
                       "training (for randomized smoothing, e.g. 0.25; 0: off).")
    flags.DEFINE_enum("adv_recipe", "standard", ["standard", "seed002"],
                      "standard: per-example eps |N(0, sigma)| <= 2 sigma, sigma matched per "
                      "batch, --adv_ratio of the batch; seed002: Moreira Freitas 2018's code "
                      "(FGSM with per-pixel |N(0, sigma)| clamped at 2 sigma, sigma matched to "
                      "--adv_snr_db once over the training images, half of each batch "
                      "adversarial, clean half weighted 0.3).")
    flags.DEFINE_float("adv_loss_weight", None, "Weight of adversarial examples in the loss, "
                       "relative to clean ones (default: 1; seed002: 1/0.3).")
    # Compute (settings of the run: recorded in config.json, compared on a rerun).
    flags.DEFINE_bool("mixed_precision", False, "Keras' mixed_float16 policy: float16 "
                      "compute, float32 weights, logits and loss, dynamic loss scaling "
                      "(faster on recent GPUs/TPUs; runs, slowly, on CPU).")
    flags.DEFINE_bool("jit_compile", False, "Compile the train/test steps with XLA "
                      "(model.compile(jit_compile=True); off: Keras' auto choice).")


def train_config_from_flags(**overrides):
    """The :class:`cnnvis_tf.recipes.TrainConfig` of the parsed flags (validated)."""
    from cnnvis_tf import recipes

    names = {field.name for field in dataclasses.fields(recipes.TrainConfig)}
    values = {name: FLAGS[name].value for name in names if name in FLAGS}
    if values.get("data_dir"):
        values["data_dir"] = os.path.expanduser(values["data_dir"])
    values.update(overrides)
    return recipes.TrainConfig.from_dict(values).resolved().validate()



# ----------------------------------------------------------------------------- records


def effective_attack_params(name, kwargs, seed=None):
    """The attack's keyword arguments with every default filled in (what config.json
    records): the function's defaults, the thin front's (fgsm -> fast_gradient_method), the
    PGD-family step size ``min(eps, 2.5 eps / nb_iter)`` when left to its default, and the
    seed of randomized attacks."""
    import inspect

    from cnnvis_tf import attacks

    fn = attacks.get_attack(name)
    fronts = _attack_fronts()
    chain = [fn] + ([fronts[name][0]] if name in fronts else [])
    out = {}
    for f in chain:
        for p in inspect.signature(f).parameters.values():
            if p.default is not inspect.Parameter.empty and p.name not in (
                    "y", "clip_min", "clip_max", "from_probabilities", "progress"):
                out.setdefault(p.name, p.default)
    if name in fronts:
        out["norm"] = fronts[name][1]
    out.update(kwargs)
    if "seed" in out and out["seed"] is None and seed is not None:
        out["seed"] = int(seed)
    if out.get("eps_iter", 0) is None and "nb_iter" in out and "eps" in out:
        from cnnvis_tf import checks

        nb_iter = checks.check_positive_int("nb_iter", out["nb_iter"])
        eps = checks.check_nonneg("eps", out["eps"])
        # What the attack computes for eps_iter=None: Madry's capped step for PGD,
        # Kurakin's eps / nb_iter for BIM and MIM.
        out["eps_iter"] = (attacks.default_step_size(eps, nb_iter) if name in ("pgd", "pgd_l2")
                           else eps / nb_iter)
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
            for k, v in sorted(out.items())}


def _attack_fronts():
    """Registry names that are thin fronts fixing ``norm``: ``{name: (function, norm)}``."""
    from cnnvis_tf import attacks

    return {"fgsm": (attacks.fast_gradient_method, "inf"),
            "fgm_l2": (attacks.fast_gradient_method, 2),
            "pgd": (attacks.projected_gradient_descent, "inf"),
            "pgd_l2": (attacks.projected_gradient_descent, 2)}


def attack_call_kwargs(name, params):
    """The keyword arguments to call attack ``name`` with, from its effective parameters
    (a thin front sets ``norm`` itself, so it is recorded but not passed)."""
    return {k: v for k, v in params.items() if not (k == "norm" and name in _attack_fronts())}


def record(script, params, models):
    """The config.json of a derived artefact (see :func:`cnnvis_tf.rundir.script_record`),
    with the command line that made it."""
    from cnnvis_tf import rundir

    rec = rundir.script_record(script, params, models)
    rec["flags"] = script_flags()
    rec["argv"] = sys.argv[1:]
    return rec


def begin(out_dir, marker):
    """Removes an old completion ``marker`` before an artefact is rewritten, so a kill
    midway never leaves an old marker beside new, partial files."""
    path = os.path.join(out_dir, marker)
    if os.path.exists(path):
        os.remove(path)


# ----------------------------------------------------------------------------- defenses


def define_defense_flags():
    """``--defense`` for the analysis scripts: evaluate the run's model behind a defense."""
    flags.DEFINE_enum("defense", "none", ["none", "reconstruction"],
                      "Evaluate the model behind a defense: reconstruction = a denoising "
                      "autoencoder fitted on training images in front of it (Yuan et al. "
                      "2019 §VI; attacked white-box through the autoencoder).")
    flags.DEFINE_integer("defense_epochs", 5, "Epochs to fit the defense.", lower_bound=1)
    flags.DEFINE_integer("defense_train_size", 2000, "Training images the defense is fitted "
                         "on.", lower_bound=1)


def apply_defense(model, data, clip_min, clip_max):
    """``(model to evaluate, record of the defense)`` for the parsed ``--defense`` flags."""
    if FLAGS.defense == "none":
        return model, {"defense": "none"}
    from cnnvis_tf import recipes

    defended, history = recipes.reconstruction_defense(
        model, data.x_train, clip_min=clip_min, clip_max=clip_max, epochs=FLAGS.defense_epochs,
        seed=FLAGS.seed, num_train=FLAGS.defense_train_size)
    return defended, {"defense": FLAGS.defense, "defense_epochs": FLAGS.defense_epochs,
                      "defense_train_size": min(FLAGS.defense_train_size, len(data.x_train)),
                      "defense_fit_loss": history.get("loss", [None])[-1]}


# ----------------------------------------------------------------------------- devices, shards

SHARDS = "shards"
SHARD_MARKER = "shard.json"


def define_strategy_flags():
    """``--strategy`` and ``--tpu`` for the analysis scripts (batches split across the
    replicas of a ``tf.distribute`` strategy; ``--num_cpu_devices`` tests it on a CPU)."""
    from cnnvis_tf import training

    flags.DEFINE_enum("strategy", "default", list(training.STRATEGIES),
                      "tf.distribute strategy the batches run under (mirrored: the local "
                      "GPUs, or --num_cpu_devices CPUs; multi_worker: TF_CONFIG's workers; "
                      "tpu: --tpu).")
    flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu.")


def strategy_from_flags():
    """The strategy of ``--strategy`` (logical CPUs of ``--num_cpu_devices`` made first)."""
    from cnnvis_tf import training

    training.check_strategy(FLAGS.strategy, FLAGS.tpu)
    configure_devices(FLAGS.num_cpu_devices)
    return training.get_strategy(FLAGS.strategy, FLAGS.tpu)


def define_shard_flags():
    """``--num_shards`` and ``--shard_index``: one process computes one contiguous part of
    the examples into ``<output_dir>/shards/shard-<i>-of-<K>/``; ``experiments.merge``
    joins the parts into the files of an unsharded run."""
    flags.DEFINE_integer("num_shards", 1, "Split the examples into this many shards (one "
                         "process each, e.g. a job array); then run experiments.merge.",
                         lower_bound=1)
    flags.DEFINE_integer("shard_index", 0, "The shard this process computes, 0..num_shards-1.",
                         lower_bound=0)


def sharded() -> bool:
    """Whether this process computes one shard of several (``--num_shards`` > 1)."""
    return FLAGS.num_shards > 1


def check_shard_flags() -> None:
    """Raises :class:`InputError` unless ``0 <= --shard_index < --num_shards``."""
    if FLAGS.shard_index >= FLAGS.num_shards:
        raise InputError(f"--shard_index={FLAGS.shard_index} is out of range for --num_shards="
                         f"{FLAGS.num_shards}; pass --shard_index=0..{FLAGS.num_shards - 1}.")


def shard_slice(n: int, align: int = 1, index: int | None = None,
                num_shards: int | None = None) -> slice:
    """The contiguous part of ``range(n)`` shard ``index`` of ``num_shards`` (default: the
    flags') computes. Boundaries fall on multiples of ``align`` (pass the batch size: the
    batches, and so seeded per-batch randomness, are then those of the unsharded run)."""
    index = FLAGS.shard_index if index is None else index
    num_shards = FLAGS.num_shards if num_shards is None else num_shards
    blocks = -(-int(n) // max(1, int(align)))
    if blocks < num_shards:
        raise InputError(f"{n} examples in batches of {align} make {blocks} batch(es), too few "
                         f"for --num_shards={num_shards}: pass --num_shards<={blocks} (or a "
                         "smaller --batch_size).")
    lo, hi = blocks * index // num_shards, blocks * (index + 1) // num_shards
    return slice(min(n, lo * align), min(n, hi * align))


def shard_dir(out_dir: str, index: int | None = None, num_shards: int | None = None) -> str:
    """``<out_dir>/shards/shard-<i>-of-<K>`` (default: the flags' shard)."""
    index = FLAGS.shard_index if index is None else index
    num_shards = FLAGS.num_shards if num_shards is None else num_shards
    return os.path.join(out_dir, SHARDS, f"shard-{index}-of-{num_shards}")


def shard_is_done(folder: str, fingerprints) -> bool:
    """Whether ``folder`` holds a finished shard (its :data:`SHARD_MARKER`) of this very
    command line and models; an interrupted or different one is recomputed."""
    from cnnvis_tf import rundir

    return rundir.artifact_is_current(folder, SHARD_MARKER, sys.argv[1:], list(fingerprints))


def finished_shard(out_dir: str, folder: str, fingerprints) -> bool:
    """True (and logs what to do next) when this is a sharded run whose shard ``folder`` is
    already finished for this command and models: the script then has nothing to do."""
    if not sharded() or not shard_is_done(folder, fingerprints):
        return False
    logging.info("Shard %d of %d is already finished (%s); when all are, run: python -m "
                 "experiments.merge --output_dir=%s", FLAGS.shard_index, FLAGS.num_shards,
                 folder, out_dir)
    return True


def begin_shard(folder: str, record_: dict) -> None:
    """Starts (or restarts) a shard: removes its old marker, writes its ``config.json``
    (``record_`` plus the shard's index and count)."""
    from cnnvis_tf import rundir

    rundir.ensure_dir(folder)
    begin(folder, SHARD_MARKER)
    rundir.write_record(folder, {**record_, "shard_index": FLAGS.shard_index,
                                 "num_shards": FLAGS.num_shards})


def merged_record(shards) -> dict:
    """The record of a merged run: the first shard's ``config.json`` without its shard index
    and count, with ``merged_shards`` (``shards`` as :mod:`experiments.merge` passes them)."""
    rec = {**shards[0][1], "merged_shards": len(shards)}
    for key in ("shard_index", "num_shards"):
        rec.pop(key, None)
    return rec


def finish_shard(folder: str, summary: dict) -> None:
    """Marks a shard finished: writes :data:`SHARD_MARKER` (``summary``, e.g. its slice
    and seconds) last."""
    from cnnvis_tf import rundir

    rundir.write_json(os.path.join(folder, SHARD_MARKER), {
        **summary, "shard_index": FLAGS.shard_index, "num_shards": FLAGS.num_shards})


# ----------------------------------------------------------------------------- help, sources


def _register_key_flags(main) -> None:
    """Makes the flags of ``main``'s module and of this module key flags of the program
    (``sys.argv[0]``): absl's ``--help`` lists only those."""
    program = sys.argv[0]
    modules = {__name__, program}
    if getattr(main, "__module__", "__main__") != "__main__":
        modules.add(main.__module__)
        entry = sys.modules.get("__main__")  # a console command's wrapper: show the doc
        if entry is not None and not entry.__doc__:
            entry.__doc__ = getattr(sys.modules.get(main.__module__), "__doc__", None)
    for module in modules:
        for flag in FLAGS.get_key_flags_for_module(module):
            FLAGS.register_key_flag_for_module(program, flag)


MODEL_SOURCE_FLAGS = ("model_dir", "model_path", "model")


def define_source_flags() -> None:
    """``--model_path``, ``--model``, ``--dataset``, ``--weights``, ``--clip_min``,
    ``--clip_max``, ``--class_names`` and ``--image_size``: bring your own model and data
    (:mod:`cnnvis_tf.sources`) instead of a run directory."""
    flags.DEFINE_string("model_path", None, "A .keras or .h5 model file or a SavedModel "
                        "folder (instead of a run directory); needs --dataset. ~ is "
                        "expanded.")
    flags.DEFINE_string("model", None, "keras_app:NAME[,key=value...], a keras.applications "
                        "network, e.g. keras_app:MobileNetV2,alpha=0.35; needs --dataset.")
    flags.DEFINE_enum("weights", "auto", ["auto", "imagenet", "none"], "--model=keras_app "
                      "weights: imagenet if already in the Keras cache ~/.keras/models, else "
                      "random with a warning (auto); imagenet: an error if not cached; none: "
                      "random. Nothing is downloaded.")
    flags.DEFINE_string("dataset", None, "Evaluation data: a built-in name (mnist, cifar10, "
                        "...), an .npz with x_test and y_test, or an image folder with one "
                        "sub-folder per class (default with --model_dir: the run's).")
    flags.DEFINE_float("clip_min", None, "Smallest pixel value (default: the run's, or "
                       "inferred from the data: 0 for [0, 1], [0, 255]; -1 for [-1, 1]).")
    flags.DEFINE_float("clip_max", None, "Largest pixel value (default: the run's, or "
                       "inferred from the data).")
    flags.DEFINE_list("class_names", None, "Comma-separated class names (default: the run's, "
                      "the folder names, the npz's class_names, or the class ids).")
    flags.DEFINE_list("image_size", None, "H,W every image of a --dataset folder is resized "
                      "to (default: they must share one size).")


def _path(value):
    return os.path.expanduser(value) if value else value


def load_source(spec: str | None = None, data_dir: str | None = None):
    """``(run, data)`` for the script: ``run`` is a :class:`cnnvis_tf.rundir.Run` (a run
    directory, or a model of ``--model_path``/``--model`` with the data's facts as its
    config) whose model outputs logits, ``data`` the :class:`cnnvis_tf.datasets.Dataset` to
    evaluate on (``--dataset``, else the run's). ``spec`` (a run directory, model file or
    ``keras_app:`` name) replaces the model flags, for scripts taking several models.

    Softmax-headed models are detected on test images, logged once and wrapped to output
    ``log p`` (the :mod:`cnnvis_tf.checks` policy), whatever the source."""
    from cnnvis_tf import datasets, rundir, sources

    if spec is None:
        given = [n for n in MODEL_SOURCE_FLAGS if n in FLAGS and FLAGS[n].value]
        if len(given) != 1:
            raise InputError(f"Pass exactly one of --model_dir=<run directory>, --model_path="
                             "<.keras/.h5/SavedModel> or --model=keras_app:NAME (got "
                             f"{', '.join('--' + g for g in given) or 'none'}).")
        spec = FLAGS[given[0]].value
    spec = _path(str(spec).strip())
    data_dir = _path(data_dir)
    box = {"clip_min": FLAGS.clip_min, "clip_max": FLAGS.clip_max,
           "class_names": FLAGS.class_names,
           "image_size": FLAGS.image_size}
    dataset = _path(FLAGS.dataset)
    if not sources.is_model_spec(spec):
        run = rundir.load_run(spec)
        data = (sources.load_dataset_source(dataset, data_dir=data_dir, seed=FLAGS.seed, **box)
                if dataset else datasets.load_for_run(run.config, data_dir))
        config = dict(run.config)
        for key in ("clip_min", "clip_max"):
            if FLAGS[key].value is not None:
                config[key] = FLAGS[key].value
        if FLAGS.class_names:
            config["class_names"] = list(FLAGS.class_names)
        fingerprint = run.fingerprint
        model, outputs = sources.as_logits(run.model, data.x_test[:8], name=spec)
        config["model_outputs"] = outputs
        return rundir.Run(path=spec, model=model, config=config, metrics=run.metrics,
                          _fingerprint=fingerprint), data
    data = sources.load_dataset_source(dataset, data_dir=data_dir, seed=FLAGS.seed, **box)
    src = sources.load_model_source(
        spec, input_shape=data.input_shape, num_classes=data.num_classes,
        clip_min=data.clip_min, clip_max=data.clip_max, weights=FLAGS.weights,
        probe=data.x_test[:8])
    _match_classes(data, int(src.model.outputs[0].shape[-1]), spec)
    config = {**data.facts(), **src.facts()}
    return rundir.Run(path=spec, model=src.model, config=config, metrics={},
                      _fingerprint=src.fingerprint), data


def _match_classes(data, num_outputs: int, spec: str) -> None:
    """Class names for every output of the model: class-id names grow to the model's
    count; named classes must match it."""
    names = list(data.class_names)
    if len(names) < num_outputs and names == [str(i) for i in range(len(names))]:
        data.class_names = [str(i) for i in range(num_outputs)]
    elif len(names) != num_outputs:
        raise InputError(f"{spec} outputs {num_outputs} classes but the data has "
                         f"{len(names)} class names; pass --class_names with one name per "
                         "model output.")


def source_facts(run) -> dict:
    """What a script's config.json records about where its model and data came from."""
    config = run.config
    return {"model_source": config.get("model_source", "run_dir"),
            "model_outputs": config.get("model_outputs", "logits"),
            "class_names": run.class_names}


# ----------------------------------------------------------------------------- compute


def define_compute_flags() -> None:
    """``--mixed_precision`` and ``--jit_compile`` for the analysis scripts (training has
    its own, in :func:`define_train_flags`)."""
    flags.DEFINE_bool("mixed_precision", False, "Run the model under Keras' mixed_float16 "
                      "policy (a copy computing in float16, float32 logits, same weights): "
                      "faster on recent GPUs/TPUs, slower on CPU.")
    flags.DEFINE_bool("jit_compile", False, "Compile the attack kernels (gradient pass, PGD "
                      "loop, forward pass) with XLA: tf.function(jit_compile=True).")


def compute_model(model):
    """``model`` as ``--mixed_precision`` asks: a ``mixed_float16`` copy with float32
    logits (:func:`cnnvis_tf.precision.with_policy`), or ``model`` itself."""
    if not FLAGS.mixed_precision:
        return model
    from cnnvis_tf import precision

    return precision.with_policy(model, precision.MIXED)


def compute_facts() -> dict:
    """What config.json records of ``--mixed_precision`` and ``--jit_compile``."""
    return {"mixed_precision": bool(FLAGS.mixed_precision),
            "jit_compile": bool(FLAGS.jit_compile)}
