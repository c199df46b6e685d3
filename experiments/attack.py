r"""Attacks a trained run's test images and writes the numbers and pictures.

  python -m experiments.attack --model_dir=runs/mnist --attack=pgd --eps=0.1 \
      --params=nb_iter=40 --num_examples=500 --output_dir=runs/mnist/attack_pgd

Writes ``metrics.json`` (clean_accuracy, adversarial_accuracy, success_rate, mean_l2,
mean_linf, mean_snr_db, num_examples, seconds, ...), ``adversarial.npz`` (x, x_adv, y,
pred_clean, pred_adv, and targets for targeted attacks), ``config.json`` (the effective
attack parameters, defaults filled in, and the model fingerprint) and
``figures/examples.png``. ``metrics.json`` is written last: it marks a finished attack.
``--attack=iterative_noise`` also re-uses the noise found for the first image on the others
(Sahoo 2019, the course assignment): ``noise_reuse.json``, ``figures/noise_reuse.png``.
"""

import os
import time

import keras
import numpy as np
from absl import flags, logging

from cnnvis_tf import attacks, evaluation, rundir, tblog
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import plotting as plots
from experiments import common

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "Run directory written by experiments.train (or pass "
                    "--model_path/--model with --dataset).")
flags.DEFINE_string("data_dir", None, "Dataset folder (default: the run's).")
flags.DEFINE_enum("attack", "fgsm", sorted(attacks.ATTACKS) + sorted(attacks.GENERATORS),
                  "Attack to run (class_from_noise: images grown from noise, Sahoo 2019).")
flags.DEFINE_float("eps", None, "Budget of eps attacks (L-inf or L2 by attack).", lower_bound=0)
flags.DEFINE_float("snr_db", None, "Budget of snr_fgsm in dB (Moreira Freitas 2018: 50, 45, 40, "
                   "33).")
flags.DEFINE_string("params", "", "Extra attack arguments 'key=value,...', e.g. nb_iter=40.")
flags.DEFINE_bool("targeted", False, "Targeted attack (lbfgs, patch and iterative_noise "
                  "always are).")
flags.DEFINE_integer("target_class", None, "Target of every example (default: (y + 1) mod "
                     "num_classes).", lower_bound=0)
flags.DEFINE_bool("use_true_labels", True, "Untargeted: move away from the true label "
                  "(False: from the model's prediction, as cleverhans does by default).")
flags.DEFINE_integer("num_examples", 100, "First N test images are attacked.", lower_bound=1)
flags.DEFINE_integer("batch_size", 128, "Examples per attack call.", lower_bound=1)
# Seed 001's noise experiments (Sahoo 2019, section 4).
flags.DEFINE_integer("like_index", None, "class_from_noise: test image the generated images "
                     "must look like (the beta * MSE term; beta=1000 unless --params sets it); "
                     "the targets are then the other classes and the plain attack is run "
                     "beside for comparison.", lower_bound=0)
flags.DEFINE_float("confidence", None, "iterative_noise: add noise until the target's "
                   "probability reaches this (default: until it is predicted); "
                   "class_from_noise with schedule=anneal: the probability kept images "
                   "reach (default 0.9).", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer("source_index", 0, "iterative_noise: test image (< --num_examples) "
                     "whose noise is re-used on the other attacked images.", lower_bound=0)
common.define_defense_flags()
common.define_compute_flags()  # --mixed_precision, --jit_compile
common.define_source_flags()
common.define_strategy_flags()
common.define_shard_flags()


def main(argv):
    with attacks.jit_compile(FLAGS.jit_compile):  # XLA attack kernels under --jit_compile
        return _attack(argv)


def _attack(argv):
    del argv
    common.check_shard_flags()
    strategy = common.strategy_from_flags()  # logical devices first, before TF starts
    kwargs = attacks.attack_kwargs(FLAGS.attack, eps=FLAGS.eps, snr=FLAGS.snr_db,
                                   params=FLAGS.params)
    if FLAGS.attack == "autoattack" and common.sharded():
        raise InputError("--attack=autoattack runs its attacks in turn on the whole set (one "
                         "report) and cannot be sharded: drop --num_shards, or shard its "
                         "parts (--attack=apgd_ce, apgd_t, fab, square).")
    run, data = common.load_source(data_dir=FLAGS.data_dir)
    out_dir = common.make_output_dir(FLAGS.output_dir)
    dest = common.shard_dir(out_dir) if common.sharded() else out_dir
    if common.finished_shard(out_dir, dest, [run.fingerprint]):
        return
    if not common.sharded():
        common.begin(out_dir, "metrics.json")
    n = min(FLAGS.num_examples, len(data.x_test))
    x, y = data.x_test[:n], data.y_test[:n].astype(np.int64)
    if FLAGS.attack in attacks.GENERATORS:  # seed 001: no input images, one per target
        return _generate(run, data, kwargs, out_dir)
    targeted = FLAGS.targeted or FLAGS.attack in attacks.TARGETED_ONLY
    targets = None
    if targeted:
        if FLAGS.target_class is not None and FLAGS.target_class >= data.num_classes:
            raise InputError(f"--target_class={FLAGS.target_class} is out of range: the model "
                             f"has {data.num_classes} classes (0..{data.num_classes - 1}).")
        targets = (np.full(n, FLAGS.target_class, np.int64) if FLAGS.target_class is not None
                   else (y + 1) % data.num_classes)
        kwargs["targeted"] = True
    if FLAGS.attack == "iterative_noise" and FLAGS.confidence is not None:
        kwargs["confidence"] = FLAGS.confidence
    if FLAGS.attack == "iterative_noise" and FLAGS.source_index >= n:
        raise InputError(f"--source_index={FLAGS.source_index} is not an attacked image: pass "
                         f"an index below --num_examples={n}.")
    params = common.effective_attack_params(FLAGS.attack, kwargs, seed=FLAGS.seed)
    model, defense = common.apply_defense(common.compute_model(run.model), data,
                                          run.clip_min, run.clip_max)
    rec = common.record("experiments.attack", {
        "attack": FLAGS.attack, "attack_kwargs": params, "num_examples": n,
        "use_true_labels": FLAGS.use_true_labels, "targeted": targeted,
        "target_class": FLAGS.target_class, "dataset": run.dataset_name, **defense,
        "clip_min": run.clip_min, "clip_max": run.clip_max, **common.source_facts(run),
        **common.compute_facts()},
        {run.path: run.fingerprint})
    rec.update(attack_kwargs=params, dataset=run.dataset_name, clip_min=run.clip_min,
               clip_max=run.clip_max)
    # A shard computes whole batches of the unsharded run (same seeded batches).
    part = common.shard_slice(n, align=FLAGS.batch_size) if common.sharded() else slice(0, n)
    if common.sharded():
        common.begin_shard(dest, rec)
    call = common.attack_call_kwargs(FLAGS.attack, params)
    labels = targets if targeted else (y if FLAGS.use_true_labels else None)
    xs, ls = x[part], None if labels is None else labels[part]
    logging.info("%s on %d test images (%d..%d) of %s, %s", FLAGS.attack, len(xs), part.start,
                 part.stop, run.dataset_name, params)
    report = None
    with strategy.scope():  # batches split across the strategy's replicas
        start = time.time()
        if FLAGS.attack == "autoattack":  # one call: its per-attack numbers and checks
            x_adv, report = attacks.autoattack(model, xs, y=ls, clip_min=run.clip_min,
                                               clip_max=run.clip_max, **{
                                                   **call, "batch_size": FLAGS.batch_size,
                                                   "return_report": True})
        else:
            x_adv = evaluation.run_attack(FLAGS.attack, model, xs, ls, progress=True,
                                          batch_size=FLAGS.batch_size, clip_min=run.clip_min,
                                          clip_max=run.clip_max, **call)
        seconds = time.time() - start
        pred_clean = evaluation.predict_labels(model, xs)
        pred_adv = evaluation.predict_labels(model, x_adv)
        reuse = None
        if FLAGS.attack == "iterative_noise" and n > 1 and part.start == 0 and len(xs):
            reuse = _noise_reuse(model, run, x, y, x_adv[0], targets[0])
    shown = min(8, len(xs))
    conf_clean, conf_adv = (
        np.asarray(keras.ops.softmax(model(a[:shown]))).max(axis=1) for a in (xs, x_adv)
    )
    arrays = {"x": xs, "x_adv": x_adv, "y": y[part], "pred_clean": pred_clean,
              "pred_adv": pred_adv, "conf_clean": conf_clean, "conf_adv": conf_adv}
    if targets is not None:
        arrays["targets"] = targets[part]
    if common.sharded():
        arrays.update({f"reuse_{k}": v for k, v in (reuse or {}).items()})
        rundir.write_npz(os.path.join(dest, SHARD_ARRAYS), **arrays)
        common.finish_shard(dest, {"start": part.start, "stop": part.stop, "seconds": seconds,
                                   "class_names": run.class_names})
        logging.info("shard %d of %d: %d images in %.1fs", FLAGS.shard_index, FLAGS.num_shards,
                     len(xs), seconds)
        return
    write_outputs(out_dir, rec, arrays, class_names=run.class_names, seconds=seconds,
                  report=report, reuse=reuse)


SHARD_ARRAYS = "shard.npz"


def _noise_reuse(model, run, x, y, x_adv0, target):
    """Seed 001 figs. 14-16: the noise added to attacked image ``--source_index`` (until its
    target's probability reaches ``--confidence``, when given) is added to every other
    attacked image; the predictions and the transfer rate."""
    from cnnvis_tf.recipes import noise_study

    del x_adv0, target  # the source is attacked on its own (its --target_class or y + 1)
    k = FLAGS.source_index
    target = (FLAGS.target_class if FLAGS.target_class is not None
              else (int(y[k]) + 1) % len(run.class_names))
    others = np.arange(len(x)) != k
    params = attacks.attack_kwargs("iterative_noise", params=FLAGS.params)
    params.pop("confidence", None)
    study = noise_study.noise_reuse_study(
        model, x[k], target, x[others], y[others], confidence=FLAGS.confidence,
        clip_min=run.clip_min, clip_max=run.clip_max,
        **{key: v for key, v in params.items() if key in ("step_size", "max_iter")})
    return {"x": x[others], "noisy": study["noisy"], "y": y[others],
            "target": np.int64(target), "pred_clean": study["pred_clean"],
            "pred_noisy": study["pred_noisy"], "source_index": np.int64(k),
            "source_confidence": np.float64(study["source_confidence"]),
            "source_reached": np.bool_(study["source_reached"]),
            "transfer_rate": np.float64(study["transfer_rate"]),
            "num_counted": np.int64(study["num_counted"])}


def write_outputs(out_dir, rec, arrays, *, class_names, seconds, report=None, reuse=None):
    """Writes the files of a finished attack (also for ``experiments.merge``): config.json,
    adversarial.npz, figures, noise_reuse.json and, last, metrics.json."""
    a = arrays
    targets = a.get("targets")
    lo, hi = rec["clip_min"], rec["clip_max"]
    metrics = evaluation.attack_metrics(a["y"], a["x"], a["x_adv"], a["pred_clean"],
                                        a["pred_adv"], targets=targets)
    metrics["seconds"] = seconds
    metrics["model_fingerprint"] = next(iter(rec["models"].values()))
    if report is not None:
        metrics["autoattack"] = report
    metrics["defense"] = rec["params"]["defense"]
    rundir.write_record(out_dir, rec)
    rundir.write_adversarial(out_dir, x=a["x"], x_adv=a["x_adv"], y=a["y"],
                             pred_clean=a["pred_clean"], pred_adv=a["pred_adv"], targets=targets)
    fig_dir = os.path.join(out_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    plots.plot_examples(os.path.join(fig_dir, "examples.png"), a["x"], a["x_adv"], a["y"],
                        a["pred_clean"], a["pred_adv"], class_names, clip_min=lo, clip_max=hi,
                        conf_clean=a["conf_clean"][:8], conf_adv=a["conf_adv"][:8],
                        targets=targets, attack=rec["params"]["attack"],
                        budget=plots.budget_label(rec.get("attack_kwargs")),
                        success_rate=metrics["success_rate"])
    if reuse is not None:
        target = int(reuse["target"])
        rundir.write_json(os.path.join(out_dir, "noise_reuse.json"), {
            "target": target, "pred_clean": reuse["pred_clean"],
            "pred_noisy": reuse["pred_noisy"],
            "fraction_predicted_as_target": float(np.mean(reuse["pred_noisy"] == target)),
            **{k: np.asarray(reuse[k]).item() for k in (
                "source_index", "source_confidence", "source_reached", "transfer_rate",
                "num_counted") if k in reuse}})
        plots.plot_examples(os.path.join(fig_dir, "noise_reuse.png"), reuse["x"],
                            reuse["noisy"], reuse["y"], reuse["pred_clean"],
                            reuse["pred_noisy"], class_names, clip_min=lo, clip_max=hi,
                            targets=np.full(len(reuse["y"]), target),
                            attack="image 0's noise re-used",
                            success_rate=float(np.mean(reuse["pred_noisy"] == target)))
    tblog.log_images(list(rec["models"]), out_dir, "attack", x=a["x"], x_adv=a["x_adv"],
                     clip_min=lo, clip_max=hi, figures=[
                         os.path.join(fig_dir, f) for f in sorted(os.listdir(fig_dir))
                         if f.endswith(".png")])
    rundir.write_json(os.path.join(out_dir, "metrics.json"), metrics)  # completion marker
    logging.info("clean %.4f -> adversarial %.4f (success %.4f, mean L2 %.4f) in %.1fs",
                 metrics["clean_accuracy"], metrics["adversarial_accuracy"],
                 metrics["success_rate"], metrics["mean_l2"], seconds)


def merge_shards(out_dir, shards):
    """``experiments.merge``: joins the shards (``[(folder, config, summary), ...]`` in
    order) into the files of the unsharded run."""
    parts = [rundir.read_npz(os.path.join(folder, SHARD_ARRAYS), what="shard arrays")
             for folder, _, _ in shards]
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]
              if not k.startswith("reuse_")}
    reuse = {k[len("reuse_"):]: v for k, v in parts[0].items() if k.startswith("reuse_")}
    rec = common.merged_record(shards)
    write_outputs(out_dir, rec, arrays, class_names=shards[0][2]["class_names"],
                  seconds=float(sum(s["seconds"] for _, _, s in shards)), reuse=reuse or None)


def _generate(run, data, kwargs, out_dir):
    """``--attack=class_from_noise``: one image grown from noise per target class (all
    classes; with ``--like_index`` the others than the reference's, and the plain attack
    beside), per target whether it was reached and with what confidence (seed 001, figs.
    11-13): ``class_from_noise.json``, ``figures/class_from_noise.png``,
    ``adversarial.npz`` (``x``: the reference, or the starting noise), ``metrics.json``."""
    import inspect

    from cnnvis_tf.recipes import noise_study

    like, like_label = None, None
    if FLAGS.like_index is not None:
        if FLAGS.like_index >= len(data.x_test):
            raise InputError(f"--like_index={FLAGS.like_index} is out of range: the test set "
                             f"has {len(data.x_test)} images.")
        like, like_label = data.x_test[FLAGS.like_index], int(data.y_test[FLAGS.like_index])
    if FLAGS.target_class is not None:
        if FLAGS.target_class >= data.num_classes:
            raise InputError(f"--target_class={FLAGS.target_class} is out of range: the model "
                             f"has {data.num_classes} classes (0..{data.num_classes - 1}).")
        classes = np.array([FLAGS.target_class])
    else:
        classes = np.array([c for c in range(data.num_classes) if c != like_label])
    if FLAGS.confidence is not None:
        kwargs["confidence"] = FLAGS.confidence
    fn = attacks.GENERATORS[FLAGS.attack]
    params = {p.name: p.default for p in inspect.signature(fn).parameters.values()
              if p.default is not inspect.Parameter.empty and p.name not in (
                  "like", "clip_min", "clip_max")}
    params.update(kwargs)
    box = {"clip_min": run.clip_min, "clip_max": run.clip_max}
    start = time.time()
    study = noise_study.class_from_noise_study(run.model, classes, data.x_test.shape[1:],
                                               like=like, **box, **kwargs)
    seconds = time.time() - start
    images = study["images"]
    x = np.repeat(like[None], len(classes), 0) if like is not None else study["start"]
    pred_clean = evaluation.predict_labels(run.model, x)
    pred_adv = evaluation.predict_labels(run.model, images)
    y = np.full(len(classes), like_label) if like is not None else pred_clean
    metrics = evaluation.attack_metrics(y, x, images, pred_clean, pred_adv, targets=classes)
    metrics.update(seconds=seconds, model_fingerprint=run.fingerprint, defense="none",
                   reached=study["reached"], num_targets=study["num_targets"])
    rec = common.record("experiments.attack", {
        "attack": FLAGS.attack, "attack_kwargs": params, "like_index": FLAGS.like_index,
        "targets": classes.tolist(), "dataset": run.dataset_name, **box},
        {FLAGS.model_dir or run.path: run.fingerprint})
    rec.update(attack_kwargs=params, dataset=run.dataset_name, **box)
    rundir.write_record(out_dir, rec)
    rundir.write_adversarial(out_dir, x=x, x_adv=images, y=y, pred_clean=pred_clean,
                             pred_adv=pred_adv, targets=classes)
    result = {k: v for k, v in study.items() if k not in ("images", "start", "plain_images")}
    result.update(like_index=FLAGS.like_index, reference_label=like_label,
                  attack_kwargs=params)
    rundir.write_json(os.path.join(out_dir, "class_from_noise.json"), result)
    fig_dir = os.path.join(out_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    imgs, titles = noise_study.figure_panels(study, like, run.class_names)
    title = (f"Images from noise, target → predicted (confidence): {study['reached']}/"
             f"{study['num_targets']} reached" + (
                 f"; beta={params['beta']:g} towards test image {FLAGS.like_index}, "
                 f"plain below" if like is not None else ""))
    cols = len(classes) + (1 if like is not None else 0)
    plots.save(plots.images(imgs, titles, title, cols, run.clip_min, run.clip_max),
               os.path.join(fig_dir, "class_from_noise.png"))
    rundir.write_json(os.path.join(out_dir, "metrics.json"), metrics)  # completion marker
    logging.info("class_from_noise: %d/%d targets reached (mean confidence %.3f)%s",
                 study["reached"], study["num_targets"], study["mean_confidence"],
                 "" if like is None else
                 f"; mean MSE to the reference {study['mean_mse_to_reference']:.4f}, plain "
                 f"{study['plain']['mean_mse_to_reference']:.4f}")


def console_main():
    common.run(main, required=(common.MODEL_SOURCE_FLAGS, "output_dir"))


if __name__ == "__main__":
    console_main()
