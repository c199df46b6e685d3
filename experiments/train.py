r"""Trains a model of the zoo on a dataset and writes a run directory (DESIGN.md §2).

  python -m experiments.train --dataset=mnist --model=conv2_fc500 --epochs=5 \
      --output_dir=runs/mnist

Rerunning the same command after an interruption resumes from the last finished epoch.
Defaults follow Sahoo 2019 (Adam, batch 16, 5 epochs) for MNIST.
"""

from absl import flags, logging

from cnnvis_tf import datasets, models, training
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
              strategy="default", tpu=None, config=None):
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
        return models.build_model(model_name, data.input_shape, data.num_classes, **kwargs)

    cfg = dict(config or {})
    cfg.update(model=model_name, embedded=embedded, data_dir=data_dir, seed=seed,
               epochs=epochs, batch_size=batch_size, optimizer=optimizer,
               learning_rate=learning_rate, lr_schedule=lr_schedule, strategy=strategy)
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
