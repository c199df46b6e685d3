r"""Throughput of the batch jobs: PGD and Grad-CAM on 1 device, under a strategy with 1 and
2 replicas, and in shards.

  python -m benchmarks.scale [--model_dir=RUN] [--num_images=256] [--output_dir=OUT]

The CPU is split into 2 logical devices (as ``--num_cpu_devices=2``), so on a CPU the
point is correctness and overhead, not speed: the 2 replicas share the same cores. Every
number comes from this one process, best of ``--repeats`` after a warm-up, interleaved:

- ``overhead_1_replica``: MirroredStrategy on one device vs no strategy (goal <= 10 %),
  and ``split_run_call_ms``: the fixed cost it adds to each kernel call (a trivial kernel);
- ``speedup_2_replicas``: no strategy vs MirroredStrategy on 2 logical CPUs;
- ``overhead_sharded``: ``--num_shards`` shards computed one after the other (slices of
  whole batches, joined as experiments.merge does) vs one pass (in a job array the shards
  run at the same time on different machines).

Grad-CAM runs as one compiled kernel (feature maps and their class gradients of
:class:`cnnvis_tf.vis.GradCAM`'s layer) through :func:`cnnvis_tf.distribute.split_run`; it is
checked against ``GradCAM.low_res``. Without ``--model_dir`` a conv2_fc500 with random
weights on random 28x28 images is used. Prints a table; writes ``benchmark_scale.json`` to
``--output_dir`` if given.
"""

import json
import os
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Run directory (default: untrained conv2_fc500).")
flags.DEFINE_integer("num_images", 256, "Images per pass.", lower_bound=2)
flags.DEFINE_integer("batch_size", 64, "Images per attack / Grad-CAM call.", lower_bound=2)
flags.DEFINE_integer("nb_iter", 10, "PGD steps.", lower_bound=1)
flags.DEFINE_integer("num_shards", 2, "Shards of the sharded path.", lower_bound=2)
flags.DEFINE_integer("repeats", 3, "Timed passes per setting (the best is kept).",
                     lower_bound=1)
flags.DEFINE_string("output_dir", None, "Where benchmark_scale.json is written.")


def main(argv):
    del argv
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from cnnvis_tf import datasets, distribute, evaluation, models, rundir
    from cnnvis_tf.vis import GradCAM

    if FLAGS.model_dir:
        run = rundir.load_run(FLAGS.model_dir)
        model = run.model
        x = datasets.load_for_run(run.config).x_test[:FLAGS.num_images].astype("float32")
    else:
        model = models.conv2_fc500((28, 28, 1), 10)
        x = np.random.default_rng(0).uniform(size=(FLAGS.num_images, 28, 28, 1))
        x = x.astype("float32")
    n, bs = len(x), FLAGS.batch_size
    y = evaluation.predict_labels(model, x)
    cam = GradCAM(model)
    feature_model = cam.resolved.keras_model([cam.layer])

    def pgd(xs, ys):
        return evaluation.run_attack("pgd", model, xs, ys, batch_size=bs, eps=0.1,
                                     nb_iter=FLAGS.nb_iter, seed=0)

    def gradcam(xs, ys):
        out = []
        for s in range(0, len(xs), bs):
            part = (tf.constant(xs[s:s + bs]), tf.constant(ys[s:s + bs]))
            out.append(distribute.split_run(_gradcam_kernel, part, feature_model).numpy())
        return np.concatenate(out)

    def sharded(fn):
        def run_shards(xs, ys):
            blocks = -(-len(xs) // bs)
            parts = []
            for i in range(FLAGS.num_shards):  # the slices of experiments.common.shard_slice
                lo = blocks * i // FLAGS.num_shards * bs
                hi = min(len(xs), blocks * (i + 1) // FLAGS.num_shards * bs)
                parts.append(fn(xs[lo:hi], ys[lo:hi]))
            return np.concatenate(parts)
        return run_shards

    scopes = {
        "1 device": None,
        "1 replica": tf.distribute.MirroredStrategy(["/cpu:0"]),
        "2 replicas": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
        "sharded": None,
    }
    results, outputs = {}, {}
    for task, fn in (("pgd", pgd), ("gradcam", gradcam)):
        calls = {k: (sharded(fn) if k == "sharded" else fn) for k in scopes}
        for k, strategy in scopes.items():  # warm-up: tracing
            outputs[task, k] = _under(strategy, calls[k], x, y)
        best = {k: float("inf") for k in scopes}
        for _ in range(FLAGS.repeats):  # interleaved: the machine's load hits all alike
            for k, strategy in scopes.items():
                start = time.perf_counter()
                _under(strategy, calls[k], x, y)
                best[k] = min(best[k], time.perf_counter() - start)
        ref = outputs[task, "1 device"]
        results[task] = {
            "images_per_s": {k: n / t for k, t in best.items()},
            "max_abs_diff_vs_1_device": {k: float(np.abs(outputs[task, k] - ref).max())
                                         for k in scopes},
            "overhead_1_replica": best["1 replica"] / best["1 device"] - 1,
            "speedup_2_replicas": best["1 device"] / best["2 replicas"],
            "overhead_sharded": best["sharded"] / best["1 device"] - 1,
        }
    # The fixed cost of one split_run at 1 replica, measured on a trivial kernel (less
    # sensitive to the machine's load than whole passes): per kernel call, in ms.
    xt = tf.constant(x[:bs])
    direct = _per_call(lambda: _first_pixel(xt, model))
    with scopes["1 replica"].scope():
        split = _per_call(lambda: distribute.split_run(_first_pixel, (xt,), model))
    results["split_run_call_ms"] = {"direct": direct, "1 replica": split,
                                    "added": split - direct}
    low = cam.low_res(x[:bs], y[:bs])
    results["gradcam"]["max_abs_diff_vs_GradCAM_low_res"] = float(
        np.abs(outputs["gradcam", "1 device"][:bs] - low).max())
    results["setup"] = {"num_images": n, "batch_size": bs, "nb_iter": FLAGS.nb_iter,
                        "num_shards": FLAGS.num_shards, "repeats": FLAGS.repeats,
                        "model": FLAGS.model_dir or "conv2_fc500 (random weights)",
                        "cpu_cores": os.cpu_count()}
    print(f"{'':10}" + "".join(f"{k:>12}" for k in scopes) + "   (images/s)")
    for task in ("pgd", "gradcam"):
        r = results[task]
        print(f"{task:10}" + "".join(f"{v:12.1f}" for v in r["images_per_s"].values()))
    for task in ("pgd", "gradcam"):
        r = results[task]
        print(f"{task}: overhead at 1 replica {100 * r['overhead_1_replica']:+.1f}% (goal <= "
              f"10%), 2 replicas {r['speedup_2_replicas']:.2f}x, {FLAGS.num_shards} shards in "
              f"turn {100 * r['overhead_sharded']:+.1f}%; max |diff| to 1 device "
              f"{max(r['max_abs_diff_vs_1_device'].values()):.2g}")
    c = results["split_run_call_ms"]
    print(f"one kernel call: {c['direct']:.3f} ms direct, {c['1 replica']:.3f} ms through "
          f"split_run at 1 replica ({c['added']:+.3f} ms)")
    print("Grad-CAM kernel vs GradCAM.low_res: max |diff| "
          f"{results['gradcam']['max_abs_diff_vs_GradCAM_low_res']:.2g}")
    if FLAGS.output_dir:
        os.makedirs(FLAGS.output_dir, exist_ok=True)
        with open(os.path.join(FLAGS.output_dir, "benchmark_scale.json"), "w") as f:
            json.dump(results, f, indent=2)


@tf.function
def _first_pixel(x, model):
    del model
    return x[:, 0, 0, 0]


def _per_call(fn, calls=300):
    fn()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls * 1e3)
    return best


def _under(strategy, fn, x, y):
    if strategy is None:
        return fn(x, y)
    with strategy.scope():
        return fn(x, y)


@tf.function(reduce_retracing=True)
def _gradcam_kernel(x, classes, feature_model):
    """Grad-CAM maps at the layer's resolution (Selvaraju et al. 2017, Eq. 1-2), compiled:
    the class score's gradient w.r.t. the feature maps, averaged per channel, weights them."""
    with tf.GradientTape() as tape:
        acts, logits = feature_model(x)
        score = tf.gather(logits, classes, axis=1, batch_dims=1)
    grads = tape.gradient(score, acts)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    return tf.nn.relu(tf.reduce_sum(weights * acts, axis=-1))


if __name__ == "__main__":
    app.run(main)
