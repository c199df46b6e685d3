r"""The main study on the embedded data (``make demo``).

Trains the 2-conv MNIST CNN (Sahoo 2019 recipe: Adam, batch 16, 5 epochs) on the embedded
MNIST subset into ``--output_dir`` and its batch-norm variant into ``<output_dir>_bn``,
then overlays their test accuracy curves (Fig. 4 of that report).

  python -m experiments.demo --output_dir=runs/demo
"""

import os

from absl import flags

from cnnvis_tf.vis import curves
from experiments import common
from experiments import train as train_script

FLAGS = flags.FLAGS
flags.DEFINE_integer("demo_epochs", 5, "Epochs of each demo training run.", lower_bound=1)


def main(argv):
    del argv
    out = common.make_output_dir(FLAGS.output_dir)
    runs = {"no batch norm": out, "batch norm": f"{os.path.normpath(out)}_bn"}
    results = {}
    for label, run_dir in runs.items():
        _, metrics = train_script.train_run(
            run_dir, dataset="mnist", embedded=True, model="conv2_fc500",
            batch_norm=label == "batch norm", epochs=FLAGS.demo_epochs, batch_size=16,
            optimizer="adam", learning_rate=1e-3, seed=FLAGS.seed,
        )
        results[label] = metrics
    curves.plot_runs_accuracy(
        list(runs.values()), list(runs), os.path.join(out, "figures", "accuracy_batch_norm.png")
    )
    for label, m in results.items():
        print(f"{label:>14}: test/accuracy={m['test/accuracy']:.4f} params={m['params']:,} "
              f"train_seconds={m['train_seconds']:.1f}")


if __name__ == "__main__":
    common.run(main)
