r"""Robustness table: accuracy of several models clean and under growing attack budgets.

  python -m experiments.robustness --model_dirs=runs/vanilla,runs/adv1+runs/adv2 \
      --budget=snr --levels=50,45,40,33 --output_dir=runs/table

Rows are models (runs joined with ``+`` are repeats of one variant: cells show
mean ± std), columns are "Clean" then each level (Moreira Freitas 2018's table format), cells are
accuracies in percent. ``--budget=snr`` uses SNR-bounded FGSM; ``linf``/``l2`` use
``--attack`` (FGSM/FGM sweeps compute the gradient once). Writes ``table.md``,
``table.csv`` (numbers, unit in the header, sample std), ``config.json`` (effective
parameters, model fingerprints), ``figures/accuracy_vs_<budget>.png`` and, last,
``results.json`` (with gradient-masking sanity flags). SNR columns are achieved after
clipping; the achieved values are printed under the table.
"""

import os

import numpy as np
from absl import flags, logging

from cnnvis_tf import attacks, evaluation, rundir, tblog
from cnnvis_tf.errors import InputError
from cnnvis_tf.progress import Progress
from cnnvis_tf.vis import plotting as plots
from experiments import common

FLAGS = flags.FLAGS

DEFAULT_LEVELS = {"snr": "50,45,40,33", "linf": "0.05,0.1,0.2,0.3", "l2": "0.5,1,2,3"}

flags.DEFINE_string("model_dirs", None, "Comma-separated run directories or model files "
                    "(.keras, .h5, SavedModel; then --dataset); join repeats of "
                    "one variant with '+'.")
flags.DEFINE_string("names", None, "Comma-separated row names (default: directory names).")
flags.DEFINE_string("data_dir", None, "Dataset folder (default: each run's).")
flags.DEFINE_enum("budget", "snr", ["snr", "linf", "l2"], "Budget measure of the columns.")
flags.DEFINE_string("levels", None, "Comma-separated budgets (default by --budget: snr "
                    "50,45,40,33; linf 0.05,...,0.3; l2 0.5,...,3).")
flags.DEFINE_string("snr_db", None, "Shorthand for --budget=snr --levels=<these dB values>, "
                    "e.g. 50,45,40,33.")
flags.DEFINE_string("eps", None, "Shorthand for --budget=linf (l2 for L2 attacks) "
                    "--levels=<these eps values>.")
flags.DEFINE_string("attack", None, "Attack for linf/l2 budgets (default fgsm / fgm_l2).")
flags.DEFINE_string("params", "", "Extra attack arguments 'key=value,...'.")
flags.DEFINE_integer("num_examples", 1000, "First N test images.", lower_bound=1)
flags.DEFINE_integer("batch_size", 256, "Examples per attack call.", lower_bound=1)
common.define_defense_flags()
flags.DEFINE_bool("sanity", True, "Run gradient-masking sanity checks (PGD, unbounded BIM).")
common.define_source_flags()


def _budget():
    if FLAGS.snr_db:
        return "snr"
    if FLAGS.eps:
        return "l2" if (FLAGS.attack or "").endswith("l2") else "linf"
    return FLAGS.budget


def _levels():
    text = FLAGS.snr_db or FLAGS.eps or FLAGS.levels or DEFAULT_LEVELS[_budget()]
    try:
        levels = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--levels={text!r} is not a list of numbers; pass e.g. "
                         f"--levels={DEFAULT_LEVELS[_budget()]}.") from None
    if not levels or (_budget() != "snr" and min(levels) < 0):
        raise InputError(f"--levels={text!r} needs at least one budget, none negative.")
    return levels


def _curve(run, model, x, y, levels, attack, kwargs, bar, name):
    box = {"clip_min": run.clip_min, "clip_max": run.clip_max, "batch_size": FLAGS.batch_size}
    if _budget() == "snr":
        acc, achieved = evaluation.accuracy_vs_snr(model, x, y, levels, **box)
        budgets = [-s for s in levels]  # a lower SNR is a larger budget
        bar.advance(len(levels), f"{name}: SNR sweep (one gradient)")
    elif attack in ("fgsm", "fgm_l2") and not kwargs:
        acc = evaluation.accuracy_vs_eps(model, x, y, levels, attack=attack, **box)
        achieved, budgets = None, levels
        bar.advance(len(levels), f"{name}: {attack} sweep (one gradient)")
    else:  # one attack per level: progress per level
        acc, achieved, budgets = {}, None, levels
        for level in levels:
            acc.update(evaluation.accuracy_vs_eps(model, x, y, [level], attack=attack, **box,
                                                  **kwargs))
            bar.advance(1, f"{name}: {attack} at {level:g}")
    flags_ = evaluation.sanity_flags(budgets, [acc[v] for v in levels])
    if FLAGS.sanity:
        span = run.clip_max - run.clip_min
        eps = levels if _budget() == "linf" else [f * span for f in (0.05, 0.1, 0.2, 0.3)]
        checks = evaluation.sanity_checks(model, x, y, eps, **box)
        for key in ("iterative_weaker_than_single_step", "unbounded_attack_fails"):
            flags_[key] = checks[key]
        flags_["messages"] = sorted(set(flags_["messages"] + checks["messages"]))
        flags_["ok"] = not flags_["messages"]
        flags_["checks"] = checks
        bar.advance(1, f"{name}: sanity checks")
    return acc, achieved, flags_


def _col(level):
    return "Clean" if level == "Clean" else f"{level:g}"


def main(argv):
    del argv
    groups = [[d for d in g.split("+") if d.strip()]
              for g in FLAGS.model_dirs.split(",")] if FLAGS.model_dirs else []
    groups += [[spec] for spec in (FLAGS.model_path, FLAGS.model) if spec]
    if not groups or any(not g for g in groups):
        raise InputError(f"--model_dirs={FLAGS.model_dirs!r} has an empty entry; pass run "
                         "directories separated by ',' (repeats of one variant by '+').")
    names = FLAGS.names.split(",") if FLAGS.names else [
        os.path.basename(os.path.normpath(g[0])) for g in groups]
    if len(names) != len(groups) or len(set(names)) != len(names):
        raise InputError(f"--names has {len(names)} entries but --model_dirs has "
                         f"{len(groups)} models; give one distinct name per model.")
    levels = _levels()
    if _budget() == "snr" and FLAGS.attack not in (None, "fgsm", "snr_fgsm"):
        raise InputError(f"SNR budgets use FGSM (snr_fgsm, Moreira Freitas 2018); drop "
                         f"--attack={FLAGS.attack} or use --eps=... for other attacks.")
    attack = FLAGS.attack or {"linf": "fgsm", "l2": "fgm_l2"}.get(_budget(), "snr_fgsm")
    kwargs = {}
    if _budget() != "snr":
        kwargs = attacks.attack_kwargs(attack, params=FLAGS.params)
        if attacks.budget_name(attack) != "eps" or attack in attacks.TARGETED_ONLY:
            raise InputError(f"--attack={attack} has no eps budget to sweep; use one of: "
                             + ", ".join(n for n in sorted(attacks.ATTACKS)
                                         if attacks.budget_name(n) == "eps"
                                         and n not in attacks.TARGETED_ONLY) + ".")
        kwargs = {k: v for k, v in common.effective_attack_params(
            attack, kwargs, seed=FLAGS.seed).items() if k not in (
            "eps", "norm", "targeted", "batch_size", "return_report", "return_queries")}
    out_dir = common.make_output_dir(FLAGS.output_dir)
    common.begin(out_dir, "results.json")
    columns = ["Clean"] + levels
    results, curves, errors, fingerprints, cells = {}, {}, {}, {}, {}
    bar = Progress(sum(map(len, groups)) * (len(levels) + bool(FLAGS.sanity)), "robustness",
                   unit="levels", interval=0, inplace=False)
    for name, dirs in zip(names, groups, strict=True):
        per_run = []
        for d in dirs:
            run, data = common.load_source(d, data_dir=FLAGS.data_dir)
            fingerprints[d] = run.fingerprint
            n = min(FLAGS.num_examples, len(data.x_test))
            x, y = data.x_test[:n], data.y_test[:n].astype(np.int64)
            model, defense = common.apply_defense(run.model, data, run.clip_min, run.clip_max)
            acc, achieved, sanity = _curve(run, model, x, y, levels, attack, kwargs, bar, name)
            logging.info("%s (%s): %s; sanity %s", name, d, acc, sanity["messages"] or "ok")
            per_run.append({"dir": d, "model_fingerprint": run.fingerprint, **defense,
                            "accuracy": acc,
                            "achieved_snr_db": achieved, "sanity": sanity, "num_examples": n})
        cols = {c: [100.0 * r["accuracy"][c] for r in per_run] for c in columns}
        cells[name] = {_col(c): v for c, v in cols.items()}
        curves[name] = {c: float(np.mean(v)) / 100 for c, v in cols.items()}
        errors[name] = {c: (float(np.std(v, ddof=1)) / 100 if len(v) > 1 else 0.0)
                        for c, v in cols.items()}
        results[name] = {"runs": per_run, "mean": curves[name], "std": errors[name]}
    unit = {"snr": "SNR (dB)", "linf": "L-inf eps", "l2": "L2 eps"}[_budget()]
    notes = []
    if _budget() == "snr":
        notes.append("")
        for name in names:
            ach = [r["achieved_snr_db"] for r in results[name]["runs"]]
            text = ", ".join(f"{lv:g} dB -> {np.mean([a[lv] for a in ach]):.2f}" for lv in levels)
            notes.append(f"Achieved SNR (mean over images, after clipping), {name}: {text}.")
    warnings = [f"- {n}: {m}" for n in names for r in results[n]["runs"]
                for m in r["sanity"]["messages"]]
    notes += ["", "Sanity checks: " + ("all passed." if not warnings else "WARNINGS")] + warnings
    stats = rundir.write_table(
        out_dir, row_label="Model", columns=[_col(c) for c in columns], rows=cells,
        title=f"Accuracy (%) under {attack}; columns: budget in {unit}.", unit="%",
        notes=notes)
    fig_dir = os.path.join(out_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    figure = plots.plot_curves(
        os.path.join(fig_dir, f"accuracy_vs_{_budget()}.png"), curves, xlabel=unit,
        reverse_x=_budget() == "snr", errors=errors,
        title=f"{attack} ({results[names[0]]['runs'][0]['num_examples']} images)")
    tblog.log_images(list(fingerprints), out_dir, "robustness",
                     figures=[figure] if figure.endswith(".png") else [])
    params = {"budget": _budget(), "levels": levels, "attack": attack, "attack_kwargs": kwargs,
              "num_examples": FLAGS.num_examples, "sanity": FLAGS.sanity, "names": names,
              "defense": FLAGS.defense, "defense_epochs": FLAGS.defense_epochs,
              "model_dirs": groups}
    rundir.write_record(out_dir, common.record("experiments.robustness", params, fingerprints))
    rundir.write_json(os.path.join(out_dir, "results.json"), {  # completion marker
        **params, "models": results, "table": stats, "flags": common.script_flags()})
    with open(os.path.join(out_dir, "table.md")) as f:
        print(f.read(), end="")


def console_main():
    common.run(main, required=(("model_dirs", "model_path", "model"), "output_dir"))


if __name__ == "__main__":
    console_main()
