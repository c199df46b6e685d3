r"""Throughput of experiments.train's training loop vs a bare ``model.fit``.

Same model (conv2_fc500), same data (embedded MNIST, 4,000 images), same batch size, both
with the test split as validation data, in one process. Our loop adds the tf.data pipeline,
per-epoch checkpoints (model + optimizer), history CSVs and TensorBoard. The first epoch
(tracing) is excluded; images/s is over the remaining epochs, callbacks included.

  python -m benchmarks.train_throughput [--batch_size=16] [--epochs=4]
"""

import tempfile
import time

import keras
import numpy as np
from absl import app, flags

from cnnvis_tf import datasets, models, training

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 16, "Batch size of both loops.")
flags.DEFINE_integer("epochs", 4, "Epochs per loop (the first is excluded).")
flags.DEFINE_integer("repeats", 2, "Alternating repeats of the pair; the best of each counts.")


class _EpochClock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends = []

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(time.perf_counter())


def _rate(clock, n_images):
    spans = np.diff(clock.ends)  # epoch 2..N, each including all of its callbacks
    return n_images * len(spans) / spans.sum()


def _ours(data, batch_size, epochs):
    clock = _EpochClock()
    with tempfile.TemporaryDirectory() as tmp:
        training.set_seed(0)
        training.train(
            tmp, data, lambda: models.conv2_fc500(mean=data.mean, std=data.std),
            epochs=epochs, batch_size=batch_size, callbacks=[clock], verbose=0,
        )
    return _rate(clock, len(data.x_train))


def _bare(data, batch_size, epochs):
    clock = _EpochClock()
    training.set_seed(0)
    model = models.conv2_fc500(mean=data.mean, std=data.std)
    training.compile_model(model, keras.optimizers.Adam(1e-3))
    model.fit(
        data.x_train, data.y_train, batch_size=batch_size, epochs=epochs,
        validation_data=(data.x_test, data.y_test), callbacks=[clock], verbose=0,
    )
    return _rate(clock, len(data.x_train))


def main(argv):
    del argv
    data = datasets.load("mnist", embedded=True)
    ours, bare = [], []
    for _ in range(FLAGS.repeats):
        bare.append(_bare(data, FLAGS.batch_size, FLAGS.epochs))
        ours.append(_ours(data, FLAGS.batch_size, FLAGS.epochs))
    o, b = max(ours), max(bare)
    print(f"batch_size={FLAGS.batch_size} epochs={FLAGS.epochs} (first excluded)")
    print(f"experiments.train loop: {o:9.1f} images/s")
    print(f"bare model.fit:         {b:9.1f} images/s")
    print(f"ratio ours/bare: {o / b:.3f}   (goal >= 0.9)")


if __name__ == "__main__":
    app.run(main)
