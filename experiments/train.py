r"""Trains a model of the zoo on a dataset and writes a run directory (DESIGN.md §2).

  python -m experiments.train --dataset=mnist --model=conv2_fc500 --epochs=5 \
      --output_dir=runs/mnist

Rerunning the same command after an interruption resumes from the last finished epoch.
Defaults follow Sahoo 2019 (Adam, batch 16, 5 epochs) for MNIST.
"""

from absl import flags, logging

from cnnvis_tf import datasets, defenses, models, training
from experiments import common

FLAGS = flags.FLAGS

flags.DEFINE_enum("dataset", "mnist", list(datasets.DATASETS), "Dataset to train on.")
flags.DEFINE_string("data_dir", None, "Folder with the dataset's files (default: Keras cache).")
flags.DEFINE_bool("download", False, "Download missing dataset files with Keras' downloader.")
flags.DEFINE_bool("embedded", False, "MNIST only: use the embedded 5,000-image subset.")
flags.DEFINE_enum(
    "model", None, sorted(models.MODELS),
    "Model of the zoo (default: conv2_fc500 for mnist, resnet18 for cifar10/100 and svhn, "
    "resnet18_stem_pool for tiny_imagenet).",
)
flags.DEFINE_bool("batch_norm", False, "Batch-norm variant of the model.")
flags.DEFINE_bool("normalize", True, "Fold per-channel mean/std normalization into the model.")
flags.DEFINE_integer("epochs", 5, "Number of epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 16, "Global batch size.", lower_bound=1)
flags.DEFINE_enum("optimizer", "adam", ["adam", "sgd"], "Optimizer.")
flags.DEFINE_float("learning_rate", 1e-3, "Initial learning rate.", lower_bound=0.0)
flags.DEFINE_float("momentum", 0.9, "SGD momentum.", lower_bound=0.0)
flags.DEFINE_string("lr_schedule", "", "Piecewise rates 'epoch:rate,...', e.g. '10:1e-4,20:1e-5'.")
flags.DEFINE_float("weight_decay", 0.0, "L2 coefficient on every kernel.", lower_bound=0.0)
flags.DEFINE_bool("augment", False, "Random crop (and flip for natural images).")
flags.DEFINE_integer("train_size", None, "Train on a seeded subset of this size.", lower_bound=1)
flags.DEFINE_bool("deterministic", False, "Deterministic TF ops (same seed, same metrics).")
flags.DEFINE_enum("strategy", "default", list(training.STRATEGIES), "tf.distribute strategy.")
flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu.")
# Defenses (Goodfellow 2015, Cisse 2017, Lassance 2018, Zhang 2018; seed 002 / seed 000).
flags.DEFINE_enum("adv_training", "none", ["none", "fgsm", "pgd"], "Adversarial training.")
flags.DEFINE_float("adv_ratio", 0.5, "Fraction of each batch replaced by adversarial examples.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("adv_eps", None, "Fixed L-inf budget of adversarial training.", lower_bound=0.0)
flags.DEFINE_float("adv_snr_db", None,
                   "Per-example eps from a Gaussian truncated at +-2 sigma, sigma matched to this "
                   "SNR in dB (seed 002 §3.1, e.g. 33).", lower_bound=0.0)
flags.DEFINE_integer("pgd_steps", 7, "PGD steps of --adv_training=pgd.", lower_bound=1)
flags.DEFINE_float("parseval_beta", 0.0, "Parseval retraction strength beta (0: off).",
                   lower_bound=0.0)
flags.DEFINE_float("smooth_gamma", 0.0, "Laplacian smoothness weight gamma (0: off).",
                   lower_bound=0.0)
flags.DEFINE_integer("smooth_power", 1, "Laplacian power m of the smoothness term.", lower_bound=1)
flags.DEFINE_string("smooth_layers", None, "Comma-separated layers for smoothness (default: "
                    "the model's conv/FC activations).")
flags.DEFINE_float("filter_loss_weight", 0.0,
                   "Interpretable filter mask + filter loss weight on the last conv (0: off).",
                   lower_bound=0.0)


@flags.multi_flags_validator(["adv_training", "adv_eps", "adv_snr_db"],
                             message="--adv_training=fgsm|pgd needs exactly one of --adv_eps or "
                                     "--adv_snr_db.")
def _check_adv(f):
    if f["adv_training"] == "none":
        return True
    return (f["adv_eps"] is None) != (f["adv_snr_db"] is None)

DEFAULT_MODEL = {
    "mnist": "conv2_fc500",
    "cifar10": "resnet18",
    "cifar100": "resnet18",
    "svhn": "resnet18",
    "tiny_imagenet": "resnet18_stem_pool",
}


def train_run(output_dir, *, dataset="mnist", data_dir=None, download=False, embedded=False,
              model=None, batch_norm=False, normalize=True, epochs=5, batch_size=16,
              optimizer="adam", learning_rate=1e-3, momentum=0.9, lr_schedule="",
              weight_decay=0.0, augment=False, train_size=None, seed=0, deterministic=False,
              strategy="default", tpu=None, adv_training="none", adv_ratio=0.5,
              adv_eps=None, adv_snr_db=None, pgd_steps=7, parseval_beta=0.0,
              smooth_gamma=0.0, smooth_power=1, smooth_layers=None, filter_loss_weight=0.0,
              config=None):
    """Loads the data, builds the model and trains it into ``output_dir``.

    Returns:
      (model, metrics)
    """
    common.make_output_dir(output_dir)
    training.set_seed(seed, deterministic)
    training.parse_lr_schedule(lr_schedule)  # fail before loading data
    data = datasets.load(dataset, data_dir, seed=seed, download=download, embedded=embedded,
                         train_size=train_size)
    model_name = model or DEFAULT_MODEL[dataset]
    dist = training.get_strategy(strategy, tpu)
    logging.info("Strategy %s with %d replica(s)", strategy, dist.num_replicas_in_sync)

    def build():
        kwargs = {"batch_norm": batch_norm, "weight_decay": weight_decay}
        if normalize:
            kwargs.update(mean=data.mean, std=data.std)
        classifier = models.build_model(model_name, data.input_shape, data.num_classes,
                                        **kwargs)
        return defenses.make_defended(
            classifier, adv_training=adv_training, adv_ratio=adv_ratio, adv_eps=adv_eps,
            adv_snr_db=adv_snr_db, pgd_steps=pgd_steps, parseval_beta=parseval_beta,
            smooth_gamma=smooth_gamma, smooth_power=smooth_power, smooth_layers=smooth_layers,
            filter_loss_weight=filter_loss_weight, clip_min=data.clip_min,
            clip_max=data.clip_max, seed=seed,
        )

    cfg = dict(config or {})
    cfg.update(model=model_name, embedded=embedded, data_dir=data_dir, seed=seed,
               epochs=epochs, batch_size=batch_size, optimizer=optimizer,
               learning_rate=learning_rate, lr_schedule=lr_schedule, strategy=strategy,
               defenses={"adv_training": adv_training, "adv_ratio": adv_ratio,
                         "adv_eps": adv_eps, "adv_snr_db": adv_snr_db,
                         "parseval_beta": parseval_beta, "smooth_gamma": smooth_gamma,
                         "smooth_power": smooth_power,
                         "filter_loss_weight": filter_loss_weight})
    trained, metrics = training.train(
        output_dir, data, build, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
        learning_rate=learning_rate, momentum=momentum, lr_schedule=lr_schedule,
        augment=augment, seed=seed, strategy=dist, config=cfg,
    )
    from cnnvis_tf.vis import curves

    curves.plot_training_curves(output_dir)
    logging.info("Metrics: %s", metrics)
    return trained, metrics


def main(argv):
    del argv
    common.configure_devices(FLAGS.num_cpu_devices)
    opts = {k: v for k, v in common.script_flags().items()
            if k not in ("output_dir", "num_cpu_devices")}
    _, metrics = train_run(FLAGS.output_dir, config={"flags": common.script_flags()}, **opts)
    print(
        f"test/accuracy={metrics['test/accuracy']:.4f} params={metrics['params']:,} "
        f"train_seconds={metrics['train_seconds']:.1f}"
    )


if __name__ == "__main__":
    flags.mark_flag_as_required("output_dir")
    common.run(main)
