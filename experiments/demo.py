r"""The main study on the embedded data (``make demo``), end to end in a few minutes.

1. Train the 2-conv MNIST CNN (Sahoo 2019 recipe: Adam, batch 16, 5 epochs) on the
   embedded MNIST subset into ``--output_dir`` and its batch-norm variant into
   ``<output_dir>_bn``; overlay their test-accuracy curves (that report's Fig. 4).
2. Attack the first with FGSM (eps 0.2), PGD (eps 0.2), box-constrained L-BFGS (32 targeted
   pairs, Hinthorn's thesis) and SNR-bounded FGSM (33 dB, Moreira Freitas 2018):
   ``<output_dir>/attacks/<name>/``.
3. Robustness table of both runs, Clean/50/45/40/33 dB (Moreira Freitas 2018's format) and
   L-inf eps: ``<output_dir>/robustness_snr/``, ``<output_dir>/robustness_linf/``.
4. Every visualization method on the first run, with the L-BFGS pairs for the
   clean-vs-adversarial views (the course assignment, the lecture slides, Hinthorn):
   ``<output_dir>/vis/``.

Each step is an ``experiments`` script run as a user would run it; a step whose output
records the same arguments and the same model fingerprints is skipped on a rerun (so an
interrupted demo resumes), any other is recomputed. ``study.json`` records the
fingerprints of the models behind its numbers.

  python -m experiments.demo --output_dir=runs/demo
"""

import os
import subprocess
import sys
import time

from absl import flags, logging

from cnnvis_tf import recipes, report, rundir
from cnnvis_tf.vis import curves
from experiments import common

FLAGS = flags.FLAGS
flags.DEFINE_integer("demo_epochs", 5, "Epochs of each demo training run.", lower_bound=1)
flags.DEFINE_bool("study", True, "Run the attack, robustness and visualization steps too.")
flags.DEFINE_bool("overwrite", False, "Retrain the demo runs if they were made with other "
                  "settings.")

ATTACKS = {
    "fgsm": ["--attack=fgsm", "--eps=0.2", "--num_examples=500"],
    "pgd": ["--attack=pgd", "--eps=0.2", "--num_examples=500"],
    "lbfgs": ["--attack=lbfgs", "--num_examples=32"],
    "snr_fgsm": ["--attack=snr_fgsm", "--snr_db=33", "--num_examples=500"],
}


def _script(module, args, dest, marker, fingerprints):
    """Runs ``python -m module args --output_dir=dest`` unless ``dest`` is current."""
    args = [*args, f"--output_dir={dest}"]
    if rundir.artifact_is_current(dest, marker, args, fingerprints):
        logging.info("%s: up to date (%s)", module, dest)
        return
    start = time.time()
    subprocess.run([sys.executable, "-m", module, *args], check=True)
    logging.info("%s finished in %.1f s", module, time.time() - start)


def main(argv):
    del argv
    out = common.make_output_dir(FLAGS.output_dir)
    runs = {"no batch norm": out, "batch norm": f"{os.path.normpath(out)}_bn"}
    results = {}
    for label, run_dir in runs.items():
        config = recipes.TrainConfig(
            dataset="mnist", embedded=True, model="conv2_fc500",
            batch_norm=label == "batch norm", epochs=FLAGS.demo_epochs, batch_size=16,
            optimizer="adam", learning_rate=1e-3, seed=FLAGS.seed)
        _, metrics = recipes.train_run(config, run_dir, overwrite=FLAGS.overwrite)
        curves.plot_training_curves(run_dir)
        results[label] = metrics
    fp = {label: results[label]["model_fingerprint"] for label in runs}
    curves.plot_runs_accuracy(
        list(runs.values()), list(runs), os.path.join(out, "figures", "accuracy_batch_norm.png")
    )
    summary = {"train": {k: {m: v[m] for m in ("test/accuracy", "params", "train_seconds",
                                                "model_fingerprint")}
                         for k, v in results.items()}}
    if FLAGS.study:
        for name, args in ATTACKS.items():
            dest = os.path.join(out, "attacks", name)
            _script("experiments.attack", [f"--model_dir={out}", *args], dest, "metrics.json",
                    [fp["no batch norm"]])
            summary.setdefault("attacks", {})[name] = rundir.read_json(
                os.path.join(dest, "metrics.json"))
        both = ",".join(runs.values())
        for budget, flag in (("snr", "--snr_db=50,45,40,33"), ("linf", "--eps=0.05,0.1,0.2,0.3")):
            dest = os.path.join(out, f"robustness_{budget}")
            _script("experiments.robustness",
                    [f"--model_dirs={both}", "--names=conv2_fc500,conv2_fc500_bn", flag,
                     "--attack=fgsm", "--num_examples=1000"], dest, "results.json",
                    list(fp.values()))
        _script("experiments.transfer", [f"--model_dirs={both}", "--names=conv2_fc500,"
                "conv2_fc500_bn", "--attack=fgsm", "--eps=0.2", "--num_examples=500"],
                os.path.join(out, "transfer"), "results.json", list(fp.values()))
        # AutoAttack on 64 images (reduced iterations/queries: ~1 min) and smoothing
        # certificates of a handful of images (Croce & Hein 2020; Cohen et al. 2019).
        for name, module, args, marker in (
                ("autoattack", "experiments.attack",
                 ["--attack=autoattack", "--eps=0.2", "--num_examples=64",
                  "--params=nb_iter=25,n_queries=500"], "metrics.json"),
                ("certify", "experiments.certify",
                 ["--sigma=0.25", "--n=2000", "--num_examples=16"], "results.json")):
            _script(module, [f"--model_dir={out}", *args], os.path.join(out, name), marker,
                    [fp["no batch norm"]])
        dest = os.path.join(out, "vis")
        _script("experiments.visualize",
                [f"--model_dir={out}", "--methods=all",
                 f"--adversarial={os.path.join(out, 'attacks', 'lbfgs', 'adversarial.npz')}"],
                dest, rundir.CONFIG, [fp["no batch norm"]])
    rundir.write_json(os.path.join(out, "study.json"), summary)
    # Last: the report of everything above (rebuilt when any of its inputs changed).
    _script("experiments.report", [f"--run_dir={out}"], os.path.join(out, "report"),
            report.REPORT_HTML, [report.inputs_fingerprint(out)])
    for label, m in results.items():
        print(f"{label:>14}: test/accuracy={m['test/accuracy']:.4f} params={m['params']:,} "
              f"train_seconds={m['train_seconds']:.1f}")
    for name, m in summary.get("attacks", {}).items():
        print(f"{name:>14}: clean={m['clean_accuracy']:.3f} adversarial="
              f"{m['adversarial_accuracy']:.3f} mean_l2={m['mean_l2']:.3f} "
              f"mean_snr_db={m['mean_snr_db']:.2f}")
    for budget in ("snr", "linf"):
        table = os.path.join(out, f"robustness_{budget}", "table.md")
        if os.path.exists(table):
            with open(table) as f:
                print(f.read())
    print(f"Report: {os.path.join(out, 'report', report.REPORT_HTML)} (and report.md)")


def console_main():
    common.run(main, required=("output_dir",))


if __name__ == "__main__":
    console_main()
