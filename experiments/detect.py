r"""Adversarial detection (Bhagwat 2019's seminar report §1.3.2): a detector on the
classifier's penultimate features learns clean (0) vs adversarial (1) from attacked
*training* images, then is scored on attacked *test* images it never saw.

  python -m experiments.detect --model_dir=runs/mnist --attack=fgsm --eps=0.2 \
      --output_dir=runs/mnist/detect

Writes ``detector.keras`` (inputs -> detector logit), ``figures/roc.png``, ``config.json``
(effective parameters, model fingerprint) and, last, ``metrics.json`` (detection_rate,
false_positive_rate, balanced accuracy at 0.5, ROC AUC, num_clean, num_adversarial). The
detector is evaluated against the attack it was trained on (a non-adaptive evaluation:
an attacker who knows the detector can evade it; Carlini & Wagner 2017).
"""

import os
import time

import numpy as np
from absl import flags, logging
from sklearn.metrics import roc_auc_score, roc_curve

from cnnvis_tf import attacks, defenses, evaluation, rundir
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import plotting
from experiments import common

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "Run directory written by experiments.train (or pass "
                    "--model_path/--model with --dataset).")
flags.DEFINE_string("data_dir", None, "Dataset folder (default: the run's).")
flags.DEFINE_enum("attack", "fgsm", sorted(n for n in attacks.ATTACKS
                                           if n not in attacks.TARGETED_ONLY),
                  "Attack whose examples the detector learns and is scored on.")
flags.DEFINE_float("eps", None, "Budget of eps attacks.", lower_bound=0)
flags.DEFINE_float("snr_db", None, "Budget of snr_fgsm in dB.")
flags.DEFINE_string("params", "", "Extra attack arguments 'key=value,...'.")
flags.DEFINE_integer("num_train", 1000, "Training images attacked to fit the detector.",
                     lower_bound=10)
flags.DEFINE_integer("num_examples", 500, "Test images attacked to score it.", lower_bound=10)
flags.DEFINE_integer("epochs", 20, "Detector training epochs.", lower_bound=1)
flags.DEFINE_string("feature_layer", None, "Layer feeding the detector (default: the "
                    "penultimate layer).")
flags.DEFINE_integer("batch_size", 256, "Examples per attack call.", lower_bound=1)
common.define_source_flags()


def main(argv):
    del argv
    kwargs = attacks.attack_kwargs(FLAGS.attack, eps=FLAGS.eps, snr=FLAGS.snr_db,
                                   params=FLAGS.params)
    run, data = common.load_source(data_dir=FLAGS.data_dir)
    if len(data.x_train) == 0:
        raise InputError(f"--dataset={FLAGS.dataset} has no training images (x_train, "
                         "y_train) to fit the detector on; add them to the .npz.")
    detector = defenses.AdversarialDetector(run.model, feature_layer=FLAGS.feature_layer,
                                            seed=FLAGS.seed)
    out_dir = common.make_output_dir(FLAGS.output_dir)
    common.begin(out_dir, "metrics.json")
    params = common.effective_attack_params(FLAGS.attack, kwargs, seed=FLAGS.seed)
    call = common.attack_call_kwargs(FLAGS.attack, params)
    box = {"clip_min": run.clip_min, "clip_max": run.clip_max, "batch_size": FLAGS.batch_size}
    start = time.time()
    n_tr = min(FLAGS.num_train, len(data.x_train))
    n_te = min(FLAGS.num_examples, len(data.x_test))
    x_tr, y_tr = data.x_train[:n_tr], data.y_train[:n_tr].astype(np.int64)
    x_te, y_te = data.x_test[:n_te], data.y_test[:n_te].astype(np.int64)
    adv_tr = evaluation.run_attack(FLAGS.attack, run.model, x_tr, y_tr, **box, **call)
    adv_te = evaluation.run_attack(FLAGS.attack, run.model, x_te, y_te, **box, **call)
    history = detector.fit(x_tr, adv_tr, epochs=FLAGS.epochs, seed=FLAGS.seed)
    metrics = detector.evaluate(x_te, adv_te)
    scores = np.concatenate([detector.predict_proba(x_te), detector.predict_proba(adv_te)])
    truth = np.concatenate([np.zeros(n_te), np.ones(n_te)])
    metrics["roc_auc"] = float(roc_auc_score(truth, scores))
    metrics["adversarial_accuracy"] = float(np.mean(
        evaluation.predict_labels(run.model, adv_te) == y_te))
    metrics["seconds"] = time.time() - start
    metrics["model_fingerprint"] = run.fingerprint
    fpr, tpr, _ = roc_curve(truth, scores)
    fig_dir = os.path.join(out_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    plotting.save(plotting.series(
        [(f"{FLAGS.attack} (AUC {metrics['roc_auc']:.3f})", fpr, tpr, "-", {}),
         ("chance", [0, 1], [0, 1], "--", {"color": "gray"})],
        "false positive rate (clean flagged)", "detection rate (adversarial flagged)",
        f"Detector on {FLAGS.feature_layer or 'penultimate'} features, {n_te} test pairs"),
        os.path.join(fig_dir, "roc.png"))
    tmp = os.path.join(out_dir, "detector.tmp.keras")
    detector.detection_model().save(tmp)
    os.replace(tmp, os.path.join(out_dir, "detector.keras"))
    rundir.write_record(out_dir, common.record("experiments.detect", {
        "attack": FLAGS.attack, "attack_kwargs": params, "num_train": n_tr,
        "num_examples": n_te, "epochs": FLAGS.epochs, "feature_layer": FLAGS.feature_layer,
        "final_train_loss": float(history["loss"][-1]) if "loss" in history else None,
        **common.source_facts(run)},
        {run.path: run.fingerprint}))
    rundir.write_json(os.path.join(out_dir, "metrics.json"), metrics)  # completion marker
    logging.info("detection rate %.3f at false-positive rate %.3f (AUC %.3f)",
                 metrics["detection_rate"], metrics["false_positive_rate"],
                 metrics["roc_auc"])
    print(f"detection_rate={metrics['detection_rate']:.3f} "
          f"false_positive_rate={metrics['false_positive_rate']:.3f} "
          f"roc_auc={metrics['roc_auc']:.3f}")


def console_main():
    common.run(main, required=(common.MODEL_SOURCE_FLAGS, "output_dir"))


if __name__ == "__main__":
    console_main()
