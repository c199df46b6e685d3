r"""Cost of one training step of each defense, as a ratio to a vanilla step.

Same model (conv2_fc500 on 28x28x1 inputs), same random batch, same optimizer (Adam).
Each variant's compiled train step is warmed up (tracing excluded); then the variants are
timed in turn, ``--rounds`` times ``--steps`` steps each (interleaved in a random order, so
load changes on a shared machine hit all of them alike); a variant's time is its best round, divided by the
vanilla one. Selective dropout
is one iteration of its own loop (volatility on the pair batch, then an adversarial and an
original update), so its ratio counts two updates.

  python -m benchmarks.defenses [--batch_size=32] [--steps=20]
"""

import time

import keras
import numpy as np
from absl import app, flags

from cnnvis_tf import models
from cnnvis_tf.defenses import DefenseModel, SelectiveDropout
from cnnvis_tf.layers import insert_filter_mask

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 32, "Batch size of every variant.")
flags.DEFINE_integer("steps", 10, "Timed steps per round (after 3 warm-up steps).")
flags.DEFINE_integer("rounds", 5, "Interleaved timing rounds; the best round counts.")

VARIANTS = {
    "vanilla": {},
    "adv_fgsm": {"adv_training": "fgsm", "adv_eps": 0.1},
    "adv_fgsm_snr33": {"adv_training": "fgsm", "adv_snr_db": 33.0},
    "adv_pgd7": {"adv_training": "pgd", "adv_eps": 0.1, "pgd_steps": 7},
    "parseval": {"parseval_beta": 0.01},
    "smooth_m2": {"smooth_gamma": 0.01, "smooth_power": 2},
    "adv_parseval_smooth": {
        "adv_training": "fgsm",
        "adv_eps": 0.1,
        "parseval_beta": 0.01,
        "smooth_gamma": 0.001,
        "smooth_power": 1,
    },
}


def _model():
    keras.utils.set_random_seed(0)
    return models.conv2_fc500(fc_units=200)


def _best_step_times(steps_by_name, steps, rounds):
    for step in steps_by_name.values():
        for _ in range(3):
            step()
    best = {name: float("inf") for name in steps_by_name}
    rng = np.random.default_rng(0)
    names = list(steps_by_name)
    for _ in range(rounds):
        for name in rng.permutation(names):
            step = steps_by_name[name]
            start = time.perf_counter()
            for _ in range(steps):
                step()
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    return best


def _fit_step(model, x, y):
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return lambda: model.train_on_batch(x, y)


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (FLAGS.batch_size, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, FLAGS.batch_size)
    x_adv = np.clip(x + rng.choice([-0.1, 0.1], x.shape), 0, 1).astype("float32")
    steps = {"plain_model": _fit_step(_model(), x, y)}  # no wrapper: Keras' own train_step
    for name, kwargs in VARIANTS.items():
        steps[name] = _fit_step(DefenseModel(_model(), seed=0, **kwargs), x, y)
    steps["filter_loss"] = _fit_step(insert_filter_mask(_model(), loss_weight=1.0), x, y)
    for p0 in (0.2, 1.0):
        sd = SelectiveDropout(_model(), "fc1", p0=p0, optimizer=keras.optimizers.Adam(1e-3))
        steps[f"selective_dropout_p{p0:g}"] = lambda sd=sd: sd.train_step(x, x_adv, y)
    seconds = _best_step_times(steps, FLAGS.steps, FLAGS.rounds)
    base = seconds["vanilla"]  # DefenseModel without any defense
    print(f"{'variant':<24}{'ms/step':>10}{'ratio':>8}")
    for name, sec in seconds.items():
        print(f"{name:<24}{1e3 * sec:>10.2f}{sec / base:>8.2f}")


if __name__ == "__main__":
    app.run(main)
