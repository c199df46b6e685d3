r"""Speed of the visualizations: batched vs per-position occlusion, and time per method.

  python -m benchmarks.vis [--model_dir=RUN] [--methods=all] [--output_dir=OUT]

Without ``--model_dir`` a conv2_fc500 with random weights on random 28x28 images is used
(timing does not depend on training). Prints a table and writes ``benchmark_vis.json``
to ``--output_dir`` if given.
"""

import json
import os
import tempfile
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Run directory (default: untrained conv2_fc500).")
flags.DEFINE_string("methods", "all", "Methods to time, comma-separated, or all.")
flags.DEFINE_string("output_dir", None, "Where benchmark_vis.json is written.")
flags.DEFINE_integer("patch_size", 4, "Occlusion patch for the batched-vs-loop comparison.")
flags.DEFINE_integer("stride", 1, "Occlusion stride for the batched-vs-loop comparison.")


def _timed(fn, repeats=3):
    fn()  # warm-up (tracing, allocation)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv):
    del argv
    from cnnvis_tf import datasets, models, rundir
    from cnnvis_tf.vis import methods, occlusion

    if FLAGS.model_dir:
        run = rundir.load_run(FLAGS.model_dir)
        model, data = run.model, datasets.load_for_run(run.config)
        x, y, names = data.x_test[:300], data.y_test[:300], run.class_names
        init = os.path.join(run.path, rundir.INITIAL_WEIGHTS)
    else:
        model = models.conv2_fc500((28, 28, 1), 10)
        rng = np.random.default_rng(0)
        x = rng.uniform(size=(300, 28, 28, 1)).astype("float32")
        y, names = rng.integers(0, 10, 300), [str(i) for i in range(10)]
        init = os.path.join(tempfile.mkdtemp(), "initial.weights.h5")
        models.conv2_fc500((28, 28, 1), 10).save_weights(init)

    occ = occlusion.Occlusion(model, FLAGS.patch_size, FLAGS.stride)
    n_pos = len(occ.positions(28, 28)[0])
    t_batched = _timed(lambda: occ(x[0], int(y[0])))
    t_loop = _timed(lambda: occ(x[0], int(y[0]), batched=False), repeats=1)
    result = {"occlusion_positions": n_pos, "occlusion_batched_s": t_batched,
              "occlusion_per_position_s": t_loop, "occlusion_speedup": t_loop / t_batched}
    print(f"occlusion, {n_pos} positions: batched {t_batched:.3f}s, one forward per "
          f"position {t_loop:.3f}s -> {t_loop / t_batched:.1f}x")

    adv = os.path.join(tempfile.mkdtemp(), "adversarial.npz")
    x_adv = np.clip(x[:50] + 0.2 * np.sign(np.random.default_rng(1).normal(size=x[:50].shape)),
                    0, 1).astype("float32")
    np.savez(adv, x=x[:50], x_adv=x_adv, y=y[:50], pred_clean=y[:50],
             pred_adv=(np.asarray(y[:50]) + 1) % 10)
    ctx = methods.Context(model, x, y, 0, class_names=names, initial_weights=init,
                          adversarial=adv, steps=100)
    out_dir = FLAGS.output_dir or tempfile.mkdtemp()
    os.makedirs(out_dir, exist_ok=True)
    print(f"{'method':24s} seconds")
    for name in methods.parse_methods(FLAGS.methods):
        start = time.perf_counter()
        methods.run(name, ctx, out_dir)
        result[f"seconds/{name}"] = time.perf_counter() - start
        print(f"{name:24s} {result[f'seconds/{name}']:.2f}")
    if FLAGS.output_dir:
        with open(os.path.join(FLAGS.output_dir, "benchmark_vis.json"), "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    app.run(main)
