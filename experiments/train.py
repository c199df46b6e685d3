r"""Trains a model of the zoo on a dataset and writes a run directory (DESIGN.md §2).

  python -m experiments.train --dataset=mnist --model=conv2_fc500 --epochs=5 \
      --output_dir=runs/mnist

Rerunning the same command after an interruption resumes from the last finished epoch; a
rerun with other settings is refused (new --output_dir, or --overwrite). Defaults follow
Sahoo 2019 (Adam, batch 16, 5 epochs) for MNIST; 10% of the training data is held out for
validation (--validation_split) and the test split is evaluated once, at the end.
"""

from absl import flags, logging

from cnnvis_tf import recipes
from cnnvis_tf.vis import curves
from experiments import common

FLAGS = flags.FLAGS
common.define_train_flags()


def main(argv):
    del argv
    common.configure_devices(FLAGS.num_cpu_devices)
    config = common.train_config_from_flags()
    out_dir = common.make_output_dir(FLAGS.output_dir)
    _, metrics = recipes.train_run(config, out_dir, overwrite=FLAGS.overwrite,
                                   extra_config={"flags": common.script_flags()})
    curves.plot_training_curves(out_dir)
    logging.info("Metrics: %s", metrics)
    print(
        f"test/accuracy={metrics['test/accuracy']:.4f} params={metrics['params']:,} "
        f"train_seconds={metrics['train_seconds']:.1f}"
    )


def console_main():
    common.run(main, required=("output_dir",))


if __name__ == "__main__":
    console_main()
