r"""Certified accuracy of a run under Gaussian randomized smoothing (Cohen et al. 2019).

  python -m experiments.certify --model_dir=runs/mnist_noise --sigma=0.25 --n=100000 \
      --num_examples=500 --output_dir=runs/mnist_noise/certify

Each test image gets CERTIFY's answer: a class and an L2 radius (Clopper-Pearson bound
on ``p_A`` from ``--n`` noisy copies, level ``1 - --alpha``), or an abstention. Writes
``table.md``/``table.csv`` (certified accuracy (%) at each radius of ``--radii``),
``predictions.csv`` (per image: label, prediction, p_A lower bound, radius),
``config.json``, ``figures/certified_accuracy.png`` and, last, ``results.json``. Train
the base model with ``experiments.train --noise_sigma=<sigma>`` for useful radii.
"""

import os
import time

import numpy as np
from absl import flags, logging

from cnnvis_tf import certify, rundir
from cnnvis_tf.checks import parse_floats
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import plotting as plots
from experiments import common

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "Run directory written by experiments.train (or pass "
                    "--model_path/--model with --dataset).")
flags.DEFINE_string("data_dir", None, "Dataset folder (default: the run's).")
flags.DEFINE_float("sigma", 0.25, "Noise standard deviation (input units).", lower_bound=0)
flags.DEFINE_integer("n0", 100, "Draws to guess the class.", lower_bound=1)
flags.DEFINE_integer("n", 100_000, "Draws to bound p_A.", lower_bound=1)
flags.DEFINE_float("alpha", 0.001, "Failure probability of each certificate.")
flags.DEFINE_integer("num_examples", 100, "First N test images.", lower_bound=1)
flags.DEFINE_integer("batch_size", 1000, "Noisy copies per forward pass.", lower_bound=1)
flags.DEFINE_string("radii", "0,0.25,0.5,0.75,1,1.5,2", "Radii of the table's columns.")
common.define_strategy_flags()
common.define_shard_flags()
common.define_source_flags()


def main(argv):
    del argv
    common.check_shard_flags()
    strategy = common.strategy_from_flags()  # logical devices first, before TF starts
    if FLAGS.sigma <= 0 or not 0 < FLAGS.alpha < 1:
        raise InputError(f"--sigma must be > 0 and --alpha in (0, 1); received --sigma="
                         f"{FLAGS.sigma:g} --alpha={FLAGS.alpha:g}.")
    radii = parse_floats("radii", FLAGS.radii, low=0.0)
    run, data = common.load_source(data_dir=FLAGS.data_dir)
    out_dir = common.make_output_dir(FLAGS.output_dir)
    n = min(FLAGS.num_examples, len(data.x_test))
    rec = common.record("experiments.certify", {
        "sigma": FLAGS.sigma, "n0": FLAGS.n0, "n": FLAGS.n, "alpha": FLAGS.alpha,
        "num_examples": n, "radii": radii, "dataset": run.dataset_name, "seed": FLAGS.seed,
        **common.source_facts(run)},
        {run.path: run.fingerprint})
    dest = common.shard_dir(out_dir) if common.sharded() else out_dir
    if common.finished_shard(out_dir, dest, [run.fingerprint]):
        return
    if common.sharded():
        common.begin_shard(dest, rec)
    else:
        common.begin(out_dir, "results.json")
    # Each image's noise is keyed by its index: a shard certifies as the unsharded run does.
    part = common.shard_slice(n) if common.sharded() else slice(0, n)
    x, y = data.x_test[:n][part], data.y_test[:n][part].astype(np.int64)
    smooth = certify.Smoothed(run.model, data.num_classes, FLAGS.sigma,
                              batch_size=FLAGS.batch_size, seed=FLAGS.seed)
    logging.info("Certifying %d images (%d..%d) of %s: sigma=%g, n0=%d, n=%d, alpha=%g",
                 len(x), part.start, part.stop, run.dataset_name, FLAGS.sigma, FLAGS.n0,
                 FLAGS.n, FLAGS.alpha)
    start = time.time()
    with strategy.scope():  # noisy batches split across the strategy's replicas
        pred, radius, p_lower = smooth.certify(x, n0=FLAGS.n0, n=FLAGS.n, alpha=FLAGS.alpha,
                                               start=part.start)
    seconds = time.time() - start
    arrays = {"y": y, "prediction": pred, "radius": radius, "p_lower": p_lower}
    if common.sharded():
        rundir.write_npz(os.path.join(dest, SHARD_ARRAYS), **arrays)
        common.finish_shard(dest, {"start": part.start, "stop": part.stop, "seconds": seconds})
        return
    write_outputs(out_dir, rec, arrays, seconds=seconds)


SHARD_ARRAYS = "shard.npz"


def write_outputs(out_dir, rec, arrays, *, seconds):
    """Table, predictions.csv, figure, config.json and, last, results.json (also for
    ``experiments.merge``)."""
    p = rec["params"]
    y, pred, radius, p_lower = (arrays[k] for k in ("y", "prediction", "radius", "p_lower"))
    n, radii, sigma = len(y), p["radii"], p["sigma"]
    (path, fingerprint), = rec["models"].items()
    acc = certify.certified_accuracy(pred, radius, y, radii)
    name = os.path.basename(os.path.normpath(path))
    cols = [f"{r:g}" for r in radii]
    rundir.write_record(out_dir, rec)
    abstain = int(np.sum(pred == certify.ABSTAIN))
    rundir.write_table(out_dir, row_label="Model", columns=cols,
                       rows={name: {c: 100 * a for c, a in zip(cols, acc)}},
                       title=f"Certified accuracy (%) at each L2 radius (sigma={sigma:g}, "
                             f"n={p['n']}, alpha={p['alpha']:g}).", unit="%",
                       notes=["", f"{abstain} of {n} images abstained."])
    rundir.write_csv(os.path.join(out_dir, "predictions.csv"),
                     [["label", "prediction", "p_lower", "radius"]]
                     + [[int(a), int(b), float(c), float(d)]
                        for a, b, c, d in zip(y, pred, p_lower, radius)])
    fig_dir = os.path.join(out_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    plots.plot_certified_accuracy(os.path.join(fig_dir, "certified_accuracy.png"), radii,
                                  {f"{name} (sigma={sigma:g})": acc})
    correct = (pred == y) & (pred != certify.ABSTAIN)
    results = {
        "certified_accuracy": dict(zip(cols, acc)), "abstentions": abstain,
        "abstention_rate": abstain / n, "num_examples": n, "sigma": sigma,
        "n0": p["n0"], "n": p["n"], "alpha": p["alpha"], "seconds": seconds,
        "mean_radius_correct": float(radius[correct].mean()) if correct.any() else 0.0,
        "model_fingerprint": fingerprint,
    }
    rundir.write_json(os.path.join(out_dir, "results.json"), results)  # completion marker
    logging.info("certified accuracy %s; %d abstentions; %.1f s", results[
        "certified_accuracy"], abstain, seconds)


def merge_shards(out_dir, shards):
    """``experiments.merge``: joins the shards (``[(folder, config, summary), ...]`` in
    order) into the files of the unsharded run."""
    parts = [rundir.read_npz(os.path.join(folder, SHARD_ARRAYS), what="shard arrays")
             for folder, _, _ in shards]
    rec = common.merged_record(shards)
    write_outputs(out_dir, rec, {k: np.concatenate([p[k] for p in parts]) for k in parts[0]},
                  seconds=float(sum(s["seconds"] for _, _, s in shards)))


def console_main():
    common.run(main, required=(common.MODEL_SOURCE_FLAGS, "output_dir"))


if __name__ == "__main__":
    console_main()
