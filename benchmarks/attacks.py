r"""Cost of each attack as a ratio to one FGSM call, plus two overhead/speed-up ratios.

Same model (conv2_fc500 with 200 hidden units on 28x28x1 inputs, random weights) and
the same random batch for every attack. Each call is warmed up once (tracing excluded),
then timed ``--rounds`` times in a shuffled order (load changes on a shared machine hit
all alike); an attack's time is its best round.

  python -m benchmarks.attacks [--batch_size=64] [--rounds=3]

Rows: ``<attack> / fgsm``; ``fgsm / cleverhans fgsm`` (cost of our input checks);
``10 fgsm calls / fgsm_sweep(10 eps)`` (speed-up of computing the gradient once).
"""

import time

import keras
import numpy as np
from absl import app, flags
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method as ch_fgm

from cnnvis_tf import attacks, evaluation, models

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 64, "Examples per attack call.")
flags.DEFINE_integer("rounds", 3, "Interleaved timing rounds; the best round counts.")


def _calls(model, x, y):
    eps_list = list(np.linspace(0.01, 0.3, 10))
    t = (y + 1) % 10
    return {
        "fgsm": lambda: attacks.fgsm(model, x, 0.1),
        "cleverhans_fgsm": lambda: ch_fgm(model, x, 0.1, np.inf, clip_min=0.0, clip_max=1.0),
        "fgm_l2": lambda: attacks.fgm_l2(model, x, 1.0),
        "snr_fgsm": lambda: attacks.snr_fgsm(model, x, 40.0),
        "bim_10": lambda: attacks.bim(model, x, 0.1, nb_iter=10),
        "pgd_10": lambda: attacks.pgd(model, x, 0.1, nb_iter=10),
        "mim_10": lambda: attacks.mim(model, x, 0.1, nb_iter=10),
        "deepfool": lambda: attacks.deepfool(model, x, max_iter=10),
        "cw_l2_3x50": lambda: attacks.cw_l2(model, x, binary_search_steps=3,
                                            max_iterations=50),
        "lbfgs_3x30": lambda: attacks.lbfgs(model, x, y=t, binary_search_steps=3,
                                            max_iterations=30),
        "spsa_5_per_8": lambda: attacks.spsa(model, x[:8], 0.1, nb_iter=5, spsa_samples=32),
        "fgsm_x10": lambda: [attacks.fgsm(model, x, e, y=y) for e in eps_list],
        "fgsm_sweep_10": lambda: evaluation.fgsm_sweep(model, x, y, eps_list),
    }


def main(argv):
    del argv
    keras.utils.set_random_seed(0)
    model = models.conv2_fc500(fc_units=200)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (FLAGS.batch_size, 28, 28, 1)).astype(np.float32)
    y = np.asarray(model(x)).argmax(1)
    calls = _calls(model, x, y)
    for fn in calls.values():
        fn()
    best = {name: float("inf") for name in calls}
    for _ in range(FLAGS.rounds):
        for name in rng.permutation(list(calls)):
            start = time.perf_counter()
            calls[name]()
            best[name] = min(best[name], time.perf_counter() - start)
    base = best["fgsm"]
    print(f"batch {FLAGS.batch_size}, fgsm = {1000 * base:.1f} ms (best of {FLAGS.rounds})")
    print(f"{'ratio':<40} {'value':>8}")
    for name in calls:
        if name not in ("fgsm", "fgsm_x10", "fgsm_sweep_10", "cleverhans_fgsm"):
            scale = FLAGS.batch_size / 8 if name.startswith("spsa") else 1.0
            label = f"{name}{' (scaled to batch)' if scale != 1 else ''} / fgsm"
            print(f"{label:<40} {scale * best[name] / base:8.2f}")
    print(f"{'fgsm / cleverhans fgsm':<40} {base / best['cleverhans_fgsm']:8.2f}")
    print(f"{'10 fgsm calls / fgsm_sweep(10)':<40} "
          f"{best['fgsm_x10'] / best['fgsm_sweep_10']:8.2f}")


if __name__ == "__main__":
    app.run(main)
