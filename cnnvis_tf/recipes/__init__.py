"""Recipes: the library calls behind the experiment scripts, shared by them.

``TrainConfig`` is the one record of a training run (stored in ``config.json`` under
``settings`` and compared on a rerun); :func:`train_run` loads the data, builds the zoo model
with its defenses and trains it into a run directory. Scripts and notebooks call these
instead of each other.
"""

import dataclasses
import math

from absl import logging

from cnnvis_tf import datasets, defenses, models, precision, training
from cnnvis_tf.errors import InputError

__all__ = ["TrainConfig", "train_run", "DEFAULT_MODEL", "reconstruction_defense", "DEFENSES"]

DEFAULT_MODEL = {
    "mnist": "conv2_fc500",
    "cifar10": "resnet18",
    "cifar100": "resnet18",
    "svhn": "resnet18",
    "tiny_imagenet": "resnet18_stem_pool",
}


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a training run (the flags of ``experiments.train``).

    ``data_dir``, ``download``, ``strategy`` and ``tpu`` say where data and devices are; the
    others define what is computed, and a rerun into the same run directory must repeat
    them (``epochs`` may grow).
    """

    dataset: str = "mnist"
    data_dir: str = None
    download: bool = False
    embedded: bool = False
    train_size: int = None
    validation_split: float = 0.1
    svhn_extra: bool = False
    normalization: str = "dataset"
    model: str = None
    batch_norm: bool = False
    normalize: bool = True
    epochs: int = 5
    batch_size: int = 16
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    lr_schedule: str = ""
    lr_decay: float = 0.0
    weight_decay: float = 0.0
    weight_decay_mode: str = "l2"
    augment: bool = False
    seed: int = 0
    deterministic: bool = False
    strategy: str = "default"
    tpu: str = None
    adv_training: str = "none"
    adv_ratio: float = 0.5
    adv_eps: float = None
    adv_snr_db: float = None
    pgd_steps: int = 7
    parseval_beta: float = 0.0
    smooth_gamma: float = 0.0
    smooth_power: int = 1
    smooth_layers: str = None
    smooth_weighting: str = "seed002"
    filter_loss_weight: float = 0.0
    filter_layer: str = None
    noise_sigma: float = 0.0
    adv_recipe: str = "standard"
    adv_loss_weight: float = None
    mixed_precision: bool = False  # Keras' mixed_float16 policy, float32 logits and loss
    jit_compile: bool = False  # XLA train/test steps (False: Keras' "auto")

    @classmethod
    def from_dict(cls, values):
        """A config from a dict (e.g. parsed flags); unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def resolved(self):
        """A copy with defaults filled in (the model of the dataset)."""
        return self.replace(model=self.model or DEFAULT_MODEL.get(self.dataset, self.model))

    def validate(self):
        """Raises :class:`InputError` for any unusable value (NaN, inf, out of range)."""
        def finite(name, low=None, high=None, strict_low=False, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and (low is None or (v > low if strict_low else v >= low))
            ok = ok and (high is None or v <= high)
            if not ok:
                rng = (f"{'>' if strict_low else '>='} {low}" if low is not None else "finite")
                if high is not None:
                    rng += f" and <= {high}"
                raise InputError(f"Invalid value received for argument `{name}`. Expected a "
                                 f"finite number {rng}. Received: {name}={v!r}")

        if self.dataset not in datasets.DATASETS:
            raise InputError(f"Unknown dataset {self.dataset!r}. Choose one of: "
                             f"{', '.join(datasets.DATASETS)}.")
        finite("learning_rate", 0, strict_low=True)
        finite("momentum", 0, 1)
        finite("weight_decay", 0)
        finite("lr_decay", 0)
        if self.weight_decay_mode not in ("l2", "decoupled"):
            raise InputError(f"Unknown weight_decay_mode {self.weight_decay_mode!r}: choose l2 "
                             "(a kernel penalty) or decoupled (applied by the optimizer).")
        finite("validation_split", 0, 0.99)
        finite("adv_ratio", 0, 1)
        finite("adv_eps", 0, allow_none=True)
        finite("adv_snr_db", 0, strict_low=True, allow_none=True)
        finite("parseval_beta", 0)
        finite("smooth_gamma", 0)
        finite("filter_loss_weight", 0)
        finite("noise_sigma", 0)
        finite("adv_loss_weight", 0, allow_none=True)
        self._validate_adv_recipe()
        for name in ("mixed_precision", "jit_compile"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"Invalid value received for argument `{name}`. Expected "
                                 f"True or False. Received: {name}={getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "pgd_steps", "smooth_power"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"Invalid value received for argument `{name}`. Expected an "
                                 f"integer >= 1. Received: {name}={v!r}")
        if self.adv_training not in ("none", "fgsm", "pgd"):
            raise InputError(f"Unknown adv_training {self.adv_training!r}: choose none, fgsm "
                             "or pgd.")
        if self.adv_training != "none" and (self.adv_eps is None) == (self.adv_snr_db is None):
            raise InputError("--adv_training=fgsm|pgd needs exactly one of --adv_eps or "
                             "--adv_snr_db.")
        training.parse_lr_schedule(self.lr_schedule)
        training.check_strategy(self.strategy, self.tpu)
        return self

    def _validate_adv_recipe(self):
        """Seed 002's recipe is FGSM, sigma matched to --adv_snr_db, 50/50 batches."""
        if self.adv_recipe not in ("standard", "seed002"):
            raise InputError(f"Unknown adv_recipe {self.adv_recipe!r}: choose standard "
                             "(per-example budgets, --adv_ratio) or seed002 (seed 002's code).")
        if self.adv_recipe != "seed002":
            return
        if self.adv_training != "fgsm":
            raise InputError("--adv_recipe=seed002 is seed 002's FGSM training: pass "
                             f"--adv_training=fgsm (got {self.adv_training!r}).")
        if self.adv_snr_db is None or self.adv_eps is not None:
            raise InputError("--adv_recipe=seed002 matches sigma to an SNR over the training "
                             "images: pass --adv_snr_db (e.g. 33) and no --adv_eps.")
        if self.adv_ratio != 0.5:
            raise InputError("--adv_recipe=seed002 trains on half adversarial, half clean "
                             f"batches: --adv_ratio must be 0.5 (got {self.adv_ratio!r}); use "
                             "--adv_recipe=standard for another ratio.")

    def settings(self):
        """The dict stored under ``settings`` in config.json (all fields)."""
        return dataclasses.asdict(self)


def train_run(config, output_dir, *, overwrite=False, extra_config=None):
    """Loads the data, builds the model (with its defenses) and trains it into
    ``output_dir``.

    Args:
      config: a :class:`TrainConfig`.
      output_dir: the run directory.
      overwrite: replace a run with other settings in ``output_dir``.
      extra_config: more facts for config.json (e.g. the command-line flags).

    Returns:
      (model, metrics)
    """
    config = config.resolved().validate()
    training.set_seed(config.seed, config.deterministic)
    data = datasets.load(config.dataset, config.data_dir, seed=config.seed,
                         download=config.download, embedded=config.embedded,
                         train_size=config.train_size,
                         validation_split=config.validation_split,
                         svhn_extra=config.svhn_extra, normalization=config.normalization)
    if config.validation_split == 0:
        logging.info("validation_split=0: no validation split; curves show training numbers.")
    adv = _adversarial_training_facts(config, data)
    dist = training.get_strategy(config.strategy, config.tpu)
    logging.info("Strategy %s with %d replica(s)", config.strategy, dist.num_replicas_in_sync)

    def build():
        l2 = config.weight_decay if config.weight_decay_mode == "l2" else 0.0
        kwargs = {"batch_norm": config.batch_norm, "weight_decay": l2}
        if config.normalize:
            kwargs.update(mean=data.mean, std=data.std)
        classifier = models.build_model(config.model, data.input_shape, data.num_classes,
                                        **kwargs)
        if config.mixed_precision:  # built under mixed_float16; logits computed in float32
            classifier = precision.with_policy(classifier, precision.MIXED)
        if config.noise_sigma:  # Gaussian data augmentation (randomized smoothing)
            classifier = models.add_input_noise(classifier, config.noise_sigma, config.seed)
        return defenses.make_defended(
            classifier, adv_training=config.adv_training, adv_ratio=config.adv_ratio,
            adv_eps=config.adv_eps, adv_snr_db=config.adv_snr_db, pgd_steps=config.pgd_steps,
            parseval_beta=config.parseval_beta, smooth_gamma=config.smooth_gamma,
            smooth_power=config.smooth_power, smooth_layers=config.smooth_layers,
            filter_loss_weight=config.filter_loss_weight, filter_layer=config.filter_layer,
            smooth_weighting=config.smooth_weighting, clip_min=data.clip_min,
            clip_max=data.clip_max, seed=config.seed, adv_recipe=config.adv_recipe,
            adv_sigma=adv.get("sigma"), adv_loss_weight=adv.get("loss_weight"),
        )

    settings = config.settings()
    # The recipe's own arguments are recorded by training.train itself.
    for key in ("epochs", "batch_size", "optimizer", "learning_rate", "momentum",
                "lr_schedule", "lr_decay", "augment", "seed"):
        settings.pop(key)
    cfg = dict(extra_config or {})
    cfg.update(model=config.model, embedded=config.embedded, data_dir=config.data_dir,
               seed=config.seed)
    if adv:
        cfg["adversarial_training"] = adv
    return training.train(
        output_dir, data, build, epochs=config.epochs, batch_size=config.batch_size,
        optimizer=config.optimizer, learning_rate=config.learning_rate,
        momentum=config.momentum, lr_schedule=config.lr_schedule, lr_decay=config.lr_decay,
        decoupled_weight_decay=(config.weight_decay if config.weight_decay_mode == "decoupled"
                                else 0.0),
        augment=config.augment,
        seed=config.seed, strategy=dist, config=cfg, settings=settings, overwrite=overwrite,
        mixed_precision=config.mixed_precision, jit_compile=config.jit_compile,
        defaults={f.name: f.default for f in dataclasses.fields(TrainConfig)},
    )


def _adversarial_training_facts(config, data):
    """The effective adversarial-training settings config.json records (``{}`` when off):
    recipe, ratio, loss weight and, for seed 002's recipe, the per-pixel sigma computed once
    from the training images."""
    if config.adv_training == "none":
        return {}
    weight = (config.adv_loss_weight if config.adv_loss_weight is not None
              else defenses.adversarial_training.default_adv_loss_weight(config.adv_recipe))
    facts = {"recipe": config.adv_recipe, "method": config.adv_training,
             "ratio": config.adv_ratio, "loss_weight": weight, "snr_db": config.adv_snr_db,
             "eps": config.adv_eps}
    if config.adv_recipe == "seed002":
        facts["sigma"] = defenses.snr_sigma(data.x_train, config.adv_snr_db)
        facts["sigma_from"] = f"training split ({len(data.x_train)} images)"
        logging.info("Seed 002's adversarial training: per-pixel sigma %.6g (SNR %g dB over "
                     "%d training images), adversarial loss weight %.4g", facts["sigma"],
                     config.adv_snr_db, len(data.x_train), weight)
    return facts


def reconstruction_defense(model, x_train, *, clip_min=0.0, clip_max=1.0, epochs=5,
                           noise_std=0.1, seed=0, num_train=2000):
    """Seed 000's input reconstruction in front of ``model``: a denoising autoencoder fitted
    on (noisy) training images, returned as one functional model ``x -> model(AE(x))``
    (logits), which attacks then see whole (gradients flow through the autoencoder).

    Returns:
      (defended model, fit history dict)
    """
    recon = defenses.InputReconstruction(model, clip_min=clip_min, clip_max=clip_max,
                                         seed=seed)
    x = x_train[: int(num_train)]
    history = recon.fit(x, noise_std=noise_std, epochs=int(epochs))
    return recon.defended_model(), {k: [float(v) for v in vs] for k, vs in history.items()}


DEFENSES = ("none", "reconstruction")
