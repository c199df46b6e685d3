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
flags.DEFINE_enum("attack", "fgsm", sorted(attacks.ATTACKS), "Attack to run.")
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
common.define_defense_flags()
common.define_compute_flags()  # --mixed_precision, --jit_compile
common.define_source_flags()


def main(argv):
    with attacks.jit_compile(FLAGS.jit_compile):  # XLA attack kernels under --jit_compile
        return _attack(argv)


def _attack(argv):
    del argv
    kwargs = attacks.attack_kwargs(FLAGS.attack, eps=FLAGS.eps, snr=FLAGS.snr_db,
                                   params=FLAGS.params)
    run, data = common.load_source(data_dir=FLAGS.data_dir)
    out_dir = common.make_output_dir(FLAGS.output_dir)
    common.begin(out_dir, "metrics.json")
    n = min(FLAGS.num_examples, len(data.x_test))
    x, y = data.x_test[:n], data.y_test[:n].astype(np.int64)
    targeted = FLAGS.targeted or FLAGS.attack in attacks.TARGETED_ONLY
    targets = None
    if targeted:
        if FLAGS.target_class is not None and FLAGS.target_class >= data.num_classes:
            raise InputError(f"--target_class={FLAGS.target_class} is out of range: the model "
                             f"has {data.num_classes} classes (0..{data.num_classes - 1}).")
        targets = (np.full(n, FLAGS.target_class, np.int64) if FLAGS.target_class is not None
                   else (y + 1) % data.num_classes)
        kwargs["targeted"] = True
    params = common.effective_attack_params(FLAGS.attack, kwargs, seed=FLAGS.seed)
    model, defense = common.apply_defense(common.compute_model(run.model), data,
                                          run.clip_min, run.clip_max)
    call = common.attack_call_kwargs(FLAGS.attack, params)
    labels = targets if targeted else (y if FLAGS.use_true_labels else None)
    logging.info("%s on %d test images of %s, %s", FLAGS.attack, n, run.dataset_name, params)
    start = time.time()
    report = None
    if FLAGS.attack == "autoattack":  # one call: its per-attack numbers and checks
        x_adv, report = attacks.autoattack(model, x, y=labels, clip_min=run.clip_min,
                                           clip_max=run.clip_max, **{
                                               **call, "batch_size": FLAGS.batch_size,
                                               "return_report": True})
    else:
        x_adv = evaluation.run_attack(FLAGS.attack, model, x, labels, progress=True,
                                      batch_size=FLAGS.batch_size, clip_min=run.clip_min,
                                      clip_max=run.clip_max, **call)
    seconds = time.time() - start
    pred_clean = evaluation.predict_labels(model, x)
    pred_adv = evaluation.predict_labels(model, x_adv)
    metrics = evaluation.attack_metrics(y, x, x_adv, pred_clean, pred_adv, targets=targets)
    metrics["seconds"] = seconds
    metrics["model_fingerprint"] = run.fingerprint
    if report is not None:
        metrics["autoattack"] = report
    metrics["defense"] = defense["defense"]
    rec = common.record("experiments.attack", {
        "attack": FLAGS.attack, "attack_kwargs": params, "num_examples": n,
        "use_true_labels": FLAGS.use_true_labels, "targeted": targeted,
        "target_class": FLAGS.target_class, "dataset": run.dataset_name, **defense,
        "clip_min": run.clip_min, "clip_max": run.clip_max, **common.source_facts(run),
        **common.compute_facts()},
        {run.path: run.fingerprint})
    rec.update(attack_kwargs=params, dataset=run.dataset_name, clip_min=run.clip_min,
               clip_max=run.clip_max)
    rundir.write_record(out_dir, rec)
    rundir.write_adversarial(out_dir, x=x, x_adv=x_adv, y=y, pred_clean=pred_clean,
                             pred_adv=pred_adv, targets=targets)
    fig_dir = os.path.join(out_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    shown = min(8, n)
    conf_clean, conf_adv = (
        np.asarray(keras.ops.softmax(model(a[:shown]))).max(axis=1) for a in (x, x_adv)
    )
    plots.plot_examples(os.path.join(fig_dir, "examples.png"), x, x_adv, y, pred_clean,
                        pred_adv, run.class_names, clip_min=run.clip_min, clip_max=run.clip_max,
                        conf_clean=conf_clean, conf_adv=conf_adv, targets=targets,
                        attack=FLAGS.attack, budget=plots.budget_label(params),
                        success_rate=metrics["success_rate"])
    if FLAGS.attack == "iterative_noise" and n > 1:  # seed 001 fig. 16: re-use image 0's noise
        reused = attacks.apply_noise(x[1:], x_adv[:1] - x[:1], clip_min=run.clip_min,
                                     clip_max=run.clip_max)
        pred_reused = evaluation.predict_labels(model, reused)
        rundir.write_json(os.path.join(out_dir, "noise_reuse.json"), {
            "target": int(targets[0]), "pred_clean": pred_clean[1:], "pred_noisy": pred_reused,
            "fraction_predicted_as_target": float(np.mean(pred_reused == targets[0]))})
        plots.plot_examples(os.path.join(fig_dir, "noise_reuse.png"), x[1:], reused, y[1:],
                            pred_clean[1:], pred_reused, run.class_names,
                            clip_min=run.clip_min, clip_max=run.clip_max)
    tblog.log_images(FLAGS.model_dir, out_dir, "attack", x=x, x_adv=x_adv,
                     clip_min=run.clip_min, clip_max=run.clip_max, figures=[
                         os.path.join(fig_dir, f) for f in sorted(os.listdir(fig_dir))
                         if f.endswith(".png")])
    rundir.write_json(os.path.join(out_dir, "metrics.json"), metrics)  # completion marker
    logging.info("clean %.4f -> adversarial %.4f (success %.4f, mean L2 %.4f) in %.1fs",
                 metrics["clean_accuracy"], metrics["adversarial_accuracy"],
                 metrics["success_rate"], metrics["mean_l2"], seconds)


def console_main():
    common.run(main, required=(common.MODEL_SOURCE_FLAGS, "output_dir"))


if __name__ == "__main__":
    console_main()
