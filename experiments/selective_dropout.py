r"""Hinthorn's selective-dropout experiment (Princeton thesis) on a run directory and its
L-BFGS pairs.

  python -m experiments.selective_dropout --model_dir=runs/mnist --output_dir=runs/sd
  python -m experiments.selective_dropout --model_dir=runs/mnist \
      --adversarial=runs/mnist/attack_lbfgs/adversarial.npz --output_dir=runs/sd

Without ``--adversarial``, ``--num_pairs`` correctly classified training images are attacked
with targeted L-BFGS (random targets). For each grouping of the pairs into perturbation
groups (both labels, source label, target label) one pair per group is held out; the control
(p = 1) and SD_p on each of ``--layers`` are fine-tuned from the run's model for each
learning rate, alternating adversarial and original batches. Writes ``table.md`` (Tables 1-3:
held-out adversarial accuracy; then the same on original images and the clean test split),
``table.csv``, ``results.json`` (splits, curves, per-unit selection frequencies),
``adversarial.npz`` (the pairs, reusable with ``--adversarial``) and
``figures/selection_frequency_<layer>.png`` (Fig. 13), ``figures/validation_curves.png``.
"""

import os
import time

import numpy as np
from absl import flags, logging

from cnnvis_tf import attacks, checks, datasets, rundir
from cnnvis_tf.errors import InputError
from cnnvis_tf.progress import Progress
from cnnvis_tf.recipes import selective_dropout as sdp
from cnnvis_tf.vis import plotting
from experiments import common

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "Run directory written by experiments.train.")
flags.DEFINE_string("data_dir", None, "Dataset folder (default: the run's).")
flags.DEFINE_string("adversarial", None, "adversarial.npz of experiments.attack (default: "
                    "attack --num_pairs training images with L-BFGS here).")
flags.DEFINE_integer("num_pairs", 128, "Images attacked when --adversarial is not given.",
                     lower_bound=2)
flags.DEFINE_string("lbfgs_params", "",
                    "Extra L-BFGS arguments 'key=value,...'. By default the attack searches c "
                    "by bisection (6 rounds), the smallest perturbation as in Hinthorn "
                    "(Szegedy et al. 2014); 'binary_search_steps=1,initial_const=0.1' gives "
                    "faster, more confident adversarials instead.")
flags.DEFINE_string("p", "0.2,0.5,0.7", "Fractions of units trained by SD_p, each in (0, 1].")
flags.DEFINE_string("layers", "conv2,fc1", "Dense/Conv layers of SD (seed: 2nd conv, FC).")
flags.DEFINE_string("learning_rates", "0.001,0.003", "SGD learning rates (momentum 0.9).")
flags.DEFINE_string("groupings", ",".join(sdp.GROUPINGS), "Perturbation groupings.")
flags.DEFINE_integer("epochs", 10, "Passes over the training pairs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 16, "Pairs per step.", lower_bound=1)
flags.DEFINE_float("alpha", 0.0, "Rate of p_t = 1 - e^(-alpha t)(1 - p) (0: constant p).",
                   lower_bound=0.0)
flags.DEFINE_integer("num_test", 1000, "Clean test images scored after training.",
                     lower_bound=0)


def _pairs(run, data):
    if FLAGS.adversarial:
        data = rundir.read_adversarial(FLAGS.adversarial)
        missing = [k for k in ("pred_clean", "pred_adv") if k not in data]
        if missing:
            raise InputError(f"--adversarial={FLAGS.adversarial} lacks {', '.join(missing)}; "
                             "pass the adversarial.npz written by experiments.attack.")
        arrays = {k: data[k] for k in ("x", "x_adv", "y", "pred_clean", "pred_adv")}
        return sdp.pairs_from_arrays(**arrays), {"source": FLAGS.adversarial}
    kwargs = attacks.attack_kwargs("lbfgs", params=FLAGS.lbfgs_params)
    logging.info("L-BFGS on %d training images: %s", FLAGS.num_pairs, kwargs)
    pairs, info = sdp.make_lbfgs_pairs(
        run.model, data.x_train, data.y_train, FLAGS.num_pairs, num_classes=data.num_classes,
        seed=FLAGS.seed, clip_min=run.clip_min, clip_max=run.clip_max, progress=True, **kwargs)
    return pairs, {"source": "lbfgs", "lbfgs_kwargs": kwargs, **info}


def _figures(fig_dir, results, layers, p_values, learning_rates, groupings):
    os.makedirs(fig_dir, exist_ok=True)
    first = results[groupings[0]]["runs"][learning_rates[0]]
    where = f"{sdp.GROUPINGS[groupings[0]]} grouping, η={learning_rates[0]:g}"
    for layer in layers:
        lines = []
        for p in (p for p in p_values if p < 1):
            freq = np.asarray(first[f"SD_{p:g}^{layer}"]["selection_frequency"])
            lines.append((f"SD_{p:g}", np.arange(len(freq)), freq, ".", {"ms": 4}))
        if lines:
            plotting.save(plotting.series(lines, f"unit of {layer}", "selection frequency",
                                          f"Fig. 13: units selected per step ({where})"),
                          os.path.join(fig_dir, f"selection_frequency_{layer}.png"))
    lines = [(name, np.arange(len(r["curve"])), r["curve"], ".-", {})
             for name, r in first.items()]
    plotting.save(plotting.series(lines, "epoch", "held-out adversarial accuracy",
                                  f"Hard-negative training ({where})"),
                  os.path.join(fig_dir, "validation_curves.png"))


def main(argv):
    del argv
    p_values = checks.parse_floats("p", FLAGS.p, low=0.0, high=1.0, low_open=True)
    learning_rates = checks.parse_floats("learning_rates", FLAGS.learning_rates, low=0.0,
                                         low_open=True)
    layers = [s.strip() for s in FLAGS.layers.split(",") if s.strip()]
    groupings = [s.strip() for s in FLAGS.groupings.split(",") if s.strip()]
    bad = [g for g in groupings if g not in sdp.GROUPINGS]
    if bad or not groupings or not layers:
        raise InputError(f"--groupings must be a subset of {','.join(sdp.GROUPINGS)} and "
                         f"--layers non-empty; got --groupings={FLAGS.groupings!r}, "
                         f"--layers={FLAGS.layers!r}.")
    start = time.time()
    run = rundir.load_run(FLAGS.model_dir)
    sdp.check_layers(run.model, layers)
    data = datasets.load_for_run(run.config, FLAGS.data_dir)
    out_dir = common.make_output_dir(FLAGS.output_dir)
    common.begin(out_dir, "results.json")
    pairs, pair_info = _pairs(run, data)
    rundir.write_adversarial(out_dir, x=pairs["x"], x_adv=pairs["x_adv"], y=pairs["y"],
                             pred_clean=pairs["y"], pred_adv=pairs["y_adv"])
    n_test = min(FLAGS.num_test, len(data.x_test))
    # k/N with ETA per fine-tuning run: control + SD_p per layer, per grouping and rate.
    bar = Progress(len(groupings) * len(learning_rates) * (
        1 + len(layers) * sum(p < 1 for p in p_values)), "selective_dropout", unit="runs",
        interval=0, inplace=False)
    results = sdp.run_protocol(
        run.model, pairs, groupings=groupings, p_values=p_values, layers=layers,
        learning_rates=learning_rates, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
        alpha=FLAGS.alpha, seed=FLAGS.seed, x_test=data.x_test[:n_test] if n_test else None,
        y_test=data.y_test[:n_test].astype(np.int64) if n_test else None, log=bar.advance_note)
    metrics = {"adv_val": "held-out adversarial images (seed 004 Tables 1-3)",
               "orig_val": "their original images", "test": f"{n_test} clean test images"}
    lines, csv_rows, columns = [], [], None
    for metric, what in metrics.items():
        if metric == "test" and not n_test:
            continue
        for number, (grouping, (columns, rows)) in enumerate(
                sdp.protocol_tables(results, layers, p_values, metric).items(), 1):
            split = results[grouping]["split"]
            title = (f"Table {number} ({what}): grouping {sdp.GROUPINGS[grouping]}, "
                     f"{split['groups']} groups, {split['train']} training / {split['val']} "
                     "held-out pairs.")
            stem = f"table_{metric}_{grouping}"
            rundir.write_table(os.path.join(out_dir, "tables"), row_label="Learning rate",
                               columns=columns, rows=rows, title=title, unit="fraction",
                               stem=stem, digits=4)
            with open(os.path.join(out_dir, "tables", f"{stem}.md")) as f:
                lines.append(f.read())
            csv_rows += [[metric, sdp.GROUPINGS[grouping], lr] + [round(r[c], 6) for c in columns]
                         for lr, r in rows.items()]
    table = "\n".join(lines)
    with rundir.atomic_open(os.path.join(out_dir, "table.md")) as f:
        f.write(table)
    rundir.write_csv(os.path.join(out_dir, "table.csv"),
                     [["Metric", "Grouping", "Learning rate"] + [f"{c} (fraction)"
                                                               for c in columns]] + csv_rows)
    _figures(os.path.join(out_dir, "figures"), results, layers, p_values, learning_rates,
             groupings)
    params = {"layers": layers, "groupings": groupings, "p": p_values,
              "learning_rates": learning_rates, "epochs": FLAGS.epochs,
              "batch_size": FLAGS.batch_size, "alpha": FLAGS.alpha, "seed": FLAGS.seed,
              "num_test": n_test, "pairs": pair_info}
    rundir.write_record(out_dir, common.record("experiments.selective_dropout", params,
                                               {FLAGS.model_dir: run.fingerprint}))
    rundir.write_json(os.path.join(out_dir, "results.json"), {  # completion marker
        "pairs": {"num_pairs": int(len(pairs["y"])), **pair_info},
        "groupings": {g: {"split": r["split"], "runs": {f"{lr:g}": v for lr, v in
                                                        r["runs"].items()}}
                      for g, r in results.items()},
        "base": {"test/accuracy": run.metrics.get("test/accuracy")},
        "seconds": time.time() - start, "flags": common.script_flags(),
        "git_commit": rundir.git_commit(), "versions": rundir.versions(),
    })
    print(table, end="")
    print(f"Wrote {out_dir}/table.md, table.csv, results.json, adversarial.npz, figures/ in "
          f"{time.time() - start:.0f}s")


def console_main():
    common.run(main, required=("model_dir", "output_dir"))


if __name__ == "__main__":
    console_main()
