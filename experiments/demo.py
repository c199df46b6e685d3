r"""The main study on the embedded data (``make demo``), end to end in a few minutes.

1. Train the 2-conv MNIST CNN (Sahoo 2019 recipe: Adam, batch 16, 5 epochs) on the
   embedded MNIST subset into ``--output_dir`` and its batch-norm variant into
   ``<output_dir>_bn``; overlay their test-accuracy curves (that report's Fig. 4).
2. Attack the first with FGSM (eps 0.2), PGD (eps 0.2), box-constrained L-BFGS (32 targeted
   pairs, seed 004) and SNR-bounded FGSM (33 dB, seed 002): ``<output_dir>/attacks/<name>/``.
3. Robustness table of both runs, Clean/50/45/40/33 dB (seed 002 format) and L-inf eps:
   ``<output_dir>/robustness_snr/``, ``<output_dir>/robustness_linf/``.
4. Every visualization method on the first run, with the L-BFGS pairs for the
   clean-vs-adversarial views (seed 001, 003, 004): ``<output_dir>/vis/``.

Each step is an ``experiments`` script run as a user would run it; finished steps are
skipped on a rerun, so an interrupted demo resumes.

  python -m experiments.demo --output_dir=runs/demo
"""

import json
import os
import subprocess
import sys
import time

from absl import flags, logging

from cnnvis_tf.vis import curves
from experiments import common
from experiments import train as train_script

FLAGS = flags.FLAGS
flags.DEFINE_integer("demo_epochs", 5, "Epochs of each demo training run.", lower_bound=1)
flags.DEFINE_bool("study", True, "Run the attack, robustness and visualization steps too.")

ATTACKS = {
    "fgsm": ["--attack=fgsm", "--eps=0.2", "--num_examples=500"],
    "pgd": ["--attack=pgd", "--eps=0.2", "--num_examples=500"],
    "lbfgs": ["--attack=lbfgs", "--num_examples=32"],
    "snr_fgsm": ["--attack=snr_fgsm", "--snr_db=33", "--num_examples=500"],
}


def _script(module, args, done_file):
    """Runs ``python -m module args`` unless ``done_file`` exists (resume)."""
    if os.path.exists(done_file):
        logging.info("%s: already done (%s)", module, done_file)
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
        _, metrics = train_script.train_run(
            run_dir, dataset="mnist", embedded=True, model="conv2_fc500",
            batch_norm=label == "batch norm", epochs=FLAGS.demo_epochs, batch_size=16,
            optimizer="adam", learning_rate=1e-3, seed=FLAGS.seed,
        )
        results[label] = metrics
    curves.plot_runs_accuracy(
        list(runs.values()), list(runs), os.path.join(out, "figures", "accuracy_batch_norm.png")
    )
    summary = {"train": {k: {m: v[m] for m in ("test/accuracy", "params", "train_seconds")}
                         for k, v in results.items()}}
    if FLAGS.study:
        for name, args in ATTACKS.items():
            dest = os.path.join(out, "attacks", name)
            _script("experiments.attack", [f"--model_dir={out}", *args, f"--output_dir={dest}"],
                    os.path.join(dest, "metrics.json"))
            with open(os.path.join(dest, "metrics.json")) as f:
                summary.setdefault("attacks", {})[name] = json.load(f)
        both = ",".join(runs.values())
        for budget, flag in (("snr", "--snr_db=50,45,40,33"), ("linf", "--eps=0.05,0.1,0.2,0.3")):
            dest = os.path.join(out, f"robustness_{budget}")
            _script("experiments.robustness",
                    [f"--model_dirs={both}", "--names=conv2_fc500,conv2_fc500_bn", flag,
                     "--attack=fgsm", "--num_examples=1000", f"--output_dir={dest}"],
                    os.path.join(dest, "table.md"))
        dest = os.path.join(out, "vis")
        _script("experiments.visualize",
                [f"--model_dir={out}", "--methods=all", f"--output_dir={dest}",
                 f"--adversarial={os.path.join(out, 'attacks', 'lbfgs', 'adversarial.npz')}"],
                os.path.join(dest, "adversarial_diff.png"))
    with open(os.path.join(out, "study.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
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


if __name__ == "__main__":
    common.run(main)
