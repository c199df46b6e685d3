r"""Scores attribution maps of a trained run: fidelity, sanity checks, simplicity.

  python -m experiments.explain_eval --model_dir=runs/mnist --methods=all \
      --num_examples=100 --output_dir=runs/mnist/explain

For each method (and the controls ``edge`` and ``random``) and each of the first
``--num_examples`` test images (explaining the true class): Deletion and Insertion AUC,
MuFidelity, the cascading model-parameter randomization check (Spearman rho per layer),
the random-logit check, sparseness (Gini) and complexity (entropy); see
:mod:`cnnvis_tf.vis.metrics`. Writes ``table.md``/``table.csv`` (method x metric,
mean ± std), ``per_image.npz``, ``figures/{deletion,insertion,randomization,
randomization_maps}.png``, ``config.json`` and, last, ``results.json``.

With ``--num_shards=K --shard_index=i`` the process scores only its part of the images
into ``<output_dir>/shards/shard-<i>-of-<K>/per_image.npz`` (a finished shard is skipped
when rerun); ``python -m experiments.merge --output_dir=...`` (:func:`merge_shards`) joins
the parts into the files above.
"""

import os
import time

import numpy as np
from absl import flags, logging

from cnnvis_tf import rundir
from cnnvis_tf.checks import check_fraction
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import _model, attribution, explain_report, metrics
from experiments import common

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "Run directory written by experiments.train (or pass "
                    "--model_path/--model with --dataset).")
flags.DEFINE_string("data_dir", None, "Dataset folder (default: the run's).")
flags.DEFINE_string("methods", "all", "Comma-separated attribution methods and controls, or "
                    "'all': " + ", ".join(list(attribution.ATTRIBUTIONS) +
                                          list(attribution.CONTROLS)) + ".")
flags.DEFINE_integer("num_examples", 100, "First N test images.", lower_bound=1)
flags.DEFINE_string("layer", None, "Layer of the CAM methods (default: the last spatial one).")
flags.DEFINE_integer("batch_size", 256, "Perturbed images per model call.", lower_bound=1)
flags.DEFINE_integer("attribution_batch", 64, "Images per call of an attribution method "
                     "(shards start at multiples of it, so seeded noise matches an unsharded "
                     "run).", lower_bound=1)
flags.DEFINE_integer("deletion_step", None, "Pixels removed/inserted per step of the "
                     "Deletion/Insertion curves (default: the image width).", lower_bound=1)
flags.DEFINE_enum("deletion_baseline", "zeros", list(metrics.BASELINES),
                  "What deleted pixels become (and MuFidelity's removed subsets).")
flags.DEFINE_enum("insertion_baseline", "blur", list(metrics.BASELINES),
                  "The image Insertion starts from (Petsiuk et al.: blur).")
flags.DEFINE_float("blur_sigma", None, "Blur std in pixels (default: image side / 10).",
                   lower_bound=0)
flags.DEFINE_integer("mufidelity_samples", 128, "Random subsets per image for MuFidelity.",
                     lower_bound=2)
flags.DEFINE_integer("mufidelity_grid", 7, "MuFidelity subsets are cells of this grid (0: "
                     "single pixels).", lower_bound=0)
flags.DEFINE_float("mufidelity_fraction", 0.2, "Fraction of cells in each subset.")
flags.DEFINE_integer("rise_masks", 1000, "Masks per image of RISE.", lower_bound=1)
flags.DEFINE_enum("randomization", "cascading", ["cascading", "independent"],
                  "Randomize the layers cumulatively from the top, or one at a time.")
common.define_shard_flags()
common.define_source_flags()


def parse_methods(text):
    """``--methods`` -> list of names; ``all`` is every attribution method and control."""
    valid = list(attribution.ATTRIBUTIONS) + list(attribution.CONTROLS)
    names = [n.strip() for n in str(text or "").split(",") if n.strip()]
    if names == ["all"]:
        return valid
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise InputError(f"Unknown method(s) {bad or names} in --methods. Choose from: "
                         f"{', '.join(valid)} (or all).")
    return list(dict.fromkeys(names))


def evaluate(name, model, model_fn, x, y, other, num_classes, clip):
    """The per-image arrays of one method (keys ``<name>/<metric>``), its curve fractions
    and randomized layers."""
    explain = attribution.explainer(name, model, layer=FLAGS.layer, seed=FLAGS.seed,
                                    batch_size=FLAGS.attribution_batch, num_masks=FLAGS.rise_masks,
                                    **clip)
    maps = explain(x, y)
    common_kw = {"batch_size": FLAGS.batch_size, "blur_sigma": FLAGS.blur_sigma,
                 "seed": FLAGS.seed}
    dele = metrics.deletion(model_fn, x, maps, y, step=FLAGS.deletion_step,
                            baseline=FLAGS.deletion_baseline, **common_kw)
    ins = metrics.insertion(model_fn, x, maps, y, step=FLAGS.deletion_step,
                            baseline=FLAGS.insertion_baseline, **common_kw)
    mu = metrics.mu_fidelity(model_fn, x, maps, y, num_samples=FLAGS.mufidelity_samples,
                             subset_fraction=FLAGS.mufidelity_fraction,
                             grid_size=FLAGS.mufidelity_grid or None,
                             baseline=FLAGS.deletion_baseline, **common_kw)
    rnd = metrics.randomization_check(model, explain, x, y, mode=FLAGS.randomization,
                                      seed=FLAGS.seed, maps=maps)
    logit, _ = metrics.random_logit(explain, x, y, num_classes, maps=maps, other=other)
    rho = rnd.spearman.T  # (N, L)
    return {
        f"{name}/deletion_auc": dele.auc, f"{name}/insertion_auc": ins.auc,
        f"{name}/deletion_curve": dele.scores, f"{name}/insertion_curve": ins.scores,
        f"{name}/mu_fidelity": mu, f"{name}/randomization": rho,
        f"{name}/randomization_top": rho[:, 0], f"{name}/randomization_all": rho[:, -1],
        f"{name}/random_logit": logit, f"{name}/sparseness": metrics.sparseness(maps),
        f"{name}/complexity": metrics.complexity(maps),
        f"meta/{name}/cascade_maps": rnd.maps[:, 0],
    }, dele.fractions, rnd.layers


def main(argv):
    del argv
    common.check_shard_flags()
    names = parse_methods(FLAGS.methods)
    check_fraction("mufidelity_fraction", FLAGS.mufidelity_fraction, low_open=True)
    run, data = common.load_source(data_dir=FLAGS.data_dir)
    out_dir = common.make_output_dir(FLAGS.output_dir)
    n = min(FLAGS.num_examples, len(data.x_test))
    part = common.shard_slice(n, align=FLAGS.attribution_batch)
    if part.stop <= part.start:
        raise InputError(f"Shard {FLAGS.shard_index} of {FLAGS.num_shards} gets no image of "
                         f"{n} (shards start at multiples of --attribution_batch="
                         f"{FLAGS.attribution_batch}); use fewer "
                         "--num_shards or more --num_examples.")
    folder = common.shard_dir(out_dir) if common.sharded() else out_dir
    fingerprints = {run.path: run.fingerprint}
    if common.finished_shard(out_dir, folder, fingerprints.values()):
        return
    params = {"methods": names, "num_examples": n, "layer": FLAGS.layer,
              "batch_size": FLAGS.batch_size,
              "attribution_batch": FLAGS.attribution_batch, "deletion_step": FLAGS.deletion_step,
              "deletion_baseline": FLAGS.deletion_baseline,
              "insertion_baseline": FLAGS.insertion_baseline, "blur_sigma": FLAGS.blur_sigma,
              "mufidelity_samples": FLAGS.mufidelity_samples,
              "mufidelity_grid": FLAGS.mufidelity_grid,
              "mufidelity_fraction": FLAGS.mufidelity_fraction,
              "rise_masks": FLAGS.rise_masks, "randomization": FLAGS.randomization,
              "seed": FLAGS.seed, "dataset": run.dataset_name, "explained_class": "label"}
    rec = common.record("experiments.explain_eval", params, fingerprints)
    if common.sharded():
        common.begin_shard(folder, rec)
    else:
        common.begin(out_dir, explain_report.RESULTS)
        rundir.write_record(out_dir, rec)
    x, y = data.x_test[:n][part], data.y_test[:n][part].astype("int64")
    other = metrics.other_classes(data.y_test[:n], data.num_classes, FLAGS.seed)[part]
    clip = {"clip_min": run.clip_min, "clip_max": run.clip_max}
    model_fn = attribution.compiled_logits(_model.ResolvedModel(run.model, "explain_eval"),
                                           FLAGS.batch_size)
    per_image = {"meta/methods": np.array(names), "index": np.arange(n)[part], "label": y,
                 "other_class": other}
    seconds = {}
    for k, name in enumerate(names, 1):
        start = time.time()
        arrays, fractions, layers = evaluate(name, run.model, model_fn, x, y, other,
                                             data.num_classes, clip)
        per_image.update(arrays)
        seconds[name] = time.time() - start
        logging.info("[%d/%d] %s on %d images: deletion %.3f, insertion %.3f, rho(all "
                     "layers) %.3f; %.1fs", k, len(names), name, len(x),
                     arrays[f"{name}/deletion_auc"].mean(),
                     arrays[f"{name}/insertion_auc"].mean(),
                     arrays[f"{name}/randomization_all"].mean(), seconds[name])
    per_image["meta/fractions"] = fractions
    per_image["meta/layers"] = np.array(layers)
    if common.sharded():
        rundir.write_npz(os.path.join(folder, explain_report.PER_IMAGE), **per_image)
        common.finish_shard(folder, {"start": part.start, "stop": part.stop,
                                     "seconds": seconds})
        return
    _log(explain_report.write(out_dir, per_image, {
        "seconds": seconds, "model_fingerprint": run.fingerprint, "params": params}))


def _log(results):
    for name, r in results["methods"].items():
        logging.info("%-22s deletion %.3f insertion %.3f mufidelity %.3f rho(top) %.3f "
                     "rho(all) %.3f", name, r["deletion_auc"]["mean"],
                     r["insertion_auc"]["mean"], r["mu_fidelity"]["mean"],
                     r["randomization_top"]["mean"], r["randomization_all"]["mean"])


def merge_shards(out_dir, shards):
    """``experiments.merge``: joins the finished shards (``[(folder, config, summary), ...]``
    in order) into the files of the unsharded run (``seconds`` summed over the shards)."""
    parts = [rundir.read_npz(os.path.join(folder, explain_report.PER_IMAGE),
                             what="shard arrays") for folder, _, _ in shards]
    rec = common.merged_record(shards)
    seconds = {}
    for _, _, summary in shards:
        for name, value in (summary.get("seconds") or {}).items():
            seconds[name] = seconds.get(name, 0.0) + value
    common.begin(out_dir, explain_report.RESULTS)
    rundir.write_record(out_dir, rec)
    fingerprint = next(iter((rec.get("models") or {None: None}).values()))
    _log(explain_report.write(out_dir, explain_report.concatenate(parts), {
        "seconds": seconds, "model_fingerprint": fingerprint, "params": rec.get("params")}))


def console_main():
    common.run(main, required=(common.MODEL_SOURCE_FLAGS, "output_dir"))


if __name__ == "__main__":
    console_main()
