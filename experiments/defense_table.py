r"""Seed 002's defense table: train every variant for several seeds, attack, aggregate.

  python -m experiments.defense_table --dataset=mnist --epochs=2 --seeds=2 \
      --output_dir=runs/defense_table

Trains each variant (Vanilla, Adv, Smooth, Adv + Psv, Adv + Smooth, Adv + Psv + Smooth;
beta, gamma, m from seed 002 Table 1; Adv = FGSM adversarial training with per-example eps
from a Gaussian truncated at 2 sigma, sigma matched to ``--adv_snr_db``) for each seed into
``<output_dir>/runs/<variant>_seed<k>`` with ``experiments.train.train_run``, then measures
accuracy clean and under SNR-bounded FGSM on the test split. Writes ``table.md``,
``table.csv``, ``results.json`` (per-run numbers, mean and std per variant) and
``figures/accuracy_vs_snr.png``. Rerunning skips finished runs and evaluations and resumes
an interrupted one. All training flags of ``experiments.train`` apply to every run except
the defense flags, which ``--variants`` sets.
"""

import os
import time

import keras
from absl import flags, logging

from cnnvis_tf import rundir
from cnnvis_tf.attacks import plots
from cnnvis_tf.defenses import protocols
from cnnvis_tf.errors import InputError
from experiments import common, train

FLAGS = flags.FLAGS

flags.DEFINE_string("variants", ",".join(protocols.VARIANTS),
                    "Comma-separated variants (" + ", ".join(protocols.VARIANTS) + "); "
                    "override beta/gamma/m like 'smooth:gamma=0.003:m=2'.")
flags.DEFINE_integer("seeds", 2, "Runs per variant, with seeds --seed, --seed+1, ...",
                     lower_bound=1)
flags.DEFINE_string("snr_db", "50,45,40,33", "SNR levels (dB) of the FGSM columns.")
flags.DEFINE_integer("num_eval", 2000, "First N test images evaluated.", lower_bound=1)
flags.DEFINE_integer("eval_batch_size", 256, "Examples per attack call.", lower_bound=1)

# Defaults sized for 2 CPU cores: 12 runs of conv2_fc500 on MNIST in a few minutes.
FLAGS.set_default("epochs", 2)
FLAGS.set_default("batch_size", 32)
FLAGS.set_default("adv_snr_db", protocols.ADV_SNR_DB)
# Seed 002's code mixes 50 adversarial and 50 clean images per batch and weights the clean
# loss by 0.3, so 77% of the loss is on adversarial images; 0.75 of the batch matches that.
FLAGS.set_default("adv_ratio", 0.75)

_SET_BY_VARIANT = ("adv_training", "adv_eps", "parseval_beta", "smooth_gamma", "smooth_power",
                   "filter_loss_weight")
_TRAIN_ARGS = ("dataset", "data_dir", "download", "embedded", "model", "batch_norm",
               "normalize", "epochs", "batch_size", "optimizer", "learning_rate", "momentum",
               "lr_schedule", "weight_decay", "augment", "train_size", "deterministic",
               "strategy", "tpu", "adv_ratio", "pgd_steps", "smooth_layers")


def _train(run_dir, variant, seed):
    """Trains (or resumes, or skips) one run; returns its directory."""
    metrics_path = os.path.join(run_dir, rundir.METRICS)
    if os.path.exists(metrics_path) and rundir.read_json(metrics_path).get("epochs") == \
            FLAGS.epochs:
        logging.info("%s is finished; skipping its training.", run_dir)
        return run_dir
    kwargs = {k: getattr(FLAGS, k) for k in _TRAIN_ARGS}
    kwargs.update(protocols.train_kwargs(variant, FLAGS.adv_snr_db))
    logging.info("Training %s (seed %d): %s", variant.label, seed, kwargs)
    train.train_run(run_dir, seed=seed, config={"flags": common.script_flags(),
                                                "variant": variant._asdict()}, **kwargs)
    keras.backend.clear_session()
    return run_dir


def _evaluate(run_dir, levels):
    """Evaluates one run (cached in ``<run_dir>/snr_eval.json``)."""
    path = os.path.join(run_dir, "snr_eval.json")
    settings = {"levels": levels, "num_eval": FLAGS.num_eval,
                "epochs": rundir.read_json(os.path.join(run_dir, rundir.METRICS))["epochs"]}
    if os.path.exists(path):
        cached = rundir.read_json(path)
        if cached.get("settings") == settings:
            return cached
    run = rundir.load_run(run_dir)
    data = run.load_dataset(FLAGS.data_dir)
    n = min(FLAGS.num_eval, len(data.x_test))
    result = protocols.evaluate_snr(run.model, data.x_test[:n], data.y_test[:n], levels,
                                    clip_min=run.clip_min, clip_max=run.clip_max,
                                    batch_size=FLAGS.eval_batch_size)
    result.update(settings=settings, num_examples=n, dir=run_dir,
                  test_accuracy=run.metrics.get("test/accuracy"),
                  train_seconds=run.metrics.get("train_seconds"))
    rundir.write_json(path, result)
    keras.backend.clear_session()
    return result


def main(argv):
    del argv
    out_dir = common.make_output_dir(FLAGS.output_dir)
    present = [f"--{k}" for k in _SET_BY_VARIANT if FLAGS[k].present]
    if present:
        raise InputError(f"{', '.join(present)} cannot be set here: each variant sets its "
                         "defenses; choose them with --variants (e.g. 'smooth:gamma=0.003').")
    variants = protocols.parse_variants(FLAGS.variants)
    levels = protocols.parse_floats("snr_db", FLAGS.snr_db)
    start = time.time()
    per_run, runs = {}, {}
    for v in variants:
        for seed in range(FLAGS.seed, FLAGS.seed + FLAGS.seeds):
            run_dir = _train(os.path.join(out_dir, "runs", f"{v.key}_seed{seed}"), v, seed)
            result = _evaluate(run_dir, levels)
            logging.info("%s seed %d: %s", v.label, seed, result["accuracy"])
            per_run.setdefault(v.key, []).append(result["accuracy"])
            runs.setdefault(v.key, []).append(result)
    header, rows, stats = protocols.summarize(variants, per_run, levels)
    title = (f"Accuracy (%) clean and under SNR-bounded FGSM (columns: SNR in dB), mean ± std "
             f"over {FLAGS.seeds} seed(s); {FLAGS.dataset}, {FLAGS.epochs} epoch(s); Adv: FGSM on "
             f"{FLAGS.adv_ratio:.0%} of each batch, eps matched to {FLAGS.adv_snr_db:g} dB.")
    table = protocols.markdown_table(header, rows, title)
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(table)
    protocols.write_csv(os.path.join(out_dir, "table.csv"), header, rows)
    for v in variants:
        stats[v.key].update(variant=v._asdict(), runs=runs[v.key])
    rundir.write_json(os.path.join(out_dir, "results.json"), {
        "levels": levels, "variants": stats, "seconds": time.time() - start,
        "flags": common.script_flags(), "git_commit": rundir.git_commit(),
        "versions": rundir.versions(),
    })
    fig_dir = os.path.join(out_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    cols = [f"{s:g}" for s in levels]
    plots.plot_curves(
        os.path.join(fig_dir, "accuracy_vs_snr.png"),
        {stats[v.key]["label"]: dict(zip(levels, (stats[v.key]["mean"][c] for c in cols)))
         for v in variants},
        errors={stats[v.key]["label"]: dict(zip(levels, (stats[v.key]["std"][c] for c in cols)))
                for v in variants},
        xlabel="SNR (dB)", reverse_x=True,
        title=f"SNR-bounded FGSM, {FLAGS.dataset}, {FLAGS.seeds} seed(s)",
    )
    print(table, end="")
    print(f"Wrote {out_dir}/table.md, table.csv, results.json, figures/accuracy_vs_snr.png "
          f"in {time.time() - start:.0f}s")


if __name__ == "__main__":
    flags.mark_flag_as_required("output_dir")
    common.run(main)
