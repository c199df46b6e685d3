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
common.define_strategy_flags()
common.define_shard_flags()
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


def _per_example(run, model, x, y, levels, attack, kwargs, bar, name):
    """One run's results per example (shards concatenate them): ``{"correct": {level:
    bool array}, "snr": {level: achieved SNR per image} or None, "sanity": the arrays of
    :func:`cnnvis_tf.evaluation.sanity_correct` and their "eps", or None}``."""
    box = {"clip_min": run.clip_min, "clip_max": run.clip_max, "batch_size": FLAGS.batch_size}
    snr = None
    if _budget() == "snr":
        correct, snr = evaluation.correct_vs_snr(model, x, y, levels, **box)
        bar.advance(len(levels), f"{name}: SNR sweep (one gradient)")
    elif attack in ("fgsm", "fgm_l2") and not kwargs:
        correct = evaluation.correct_vs_eps(model, x, y, levels, attack=attack, **box)
        bar.advance(len(levels), f"{name}: {attack} sweep (one gradient)")
    else:  # one attack per level: progress per level
        correct = {}
        for level in levels:
            correct.update(evaluation.correct_vs_eps(model, x, y, [level], attack=attack,
                                                     **box, **kwargs))
            bar.advance(1, f"{name}: {attack} at {level:g}")
    sanity = None
    if FLAGS.sanity:
        span = run.clip_max - run.clip_min
        eps = levels if _budget() == "linf" else [f * span for f in (0.05, 0.1, 0.2, 0.3)]
        sanity = {**evaluation.sanity_correct(model, x, y, eps, **box), "eps": eps}
        bar.advance(1, f"{name}: sanity checks")
    return {"correct": correct, "snr": snr, "sanity": sanity}


def _curve(budget, levels, ex):
    """``(accuracy, achieved SNR, sanity flags)`` of one run from its per-example results."""
    acc = {k: float(np.mean(v)) for k, v in ex["correct"].items()}
    achieved = None if ex["snr"] is None else {
        k: evaluation.finite_mean(v) for k, v in ex["snr"].items()}
    budgets = [-s for s in levels] if budget == "snr" else levels  # lower SNR, larger budget
    flags_ = evaluation.sanity_flags(budgets, [acc[v] for v in levels])
    if ex["sanity"] is not None:
        checks = evaluation.sanity_summary(ex["sanity"]["eps"], ex["sanity"])
        for key in ("iterative_weaker_than_single_step", "unbounded_attack_fails"):
            flags_[key] = checks[key]
        flags_["messages"] = sorted(set(flags_["messages"] + checks["messages"]))
        flags_["ok"] = not flags_["messages"]
        flags_["checks"] = checks
    return acc, achieved, flags_


def _col(level):
    return "Clean" if level == "Clean" else f"{level:g}"


def main(argv):
    del argv
    common.check_shard_flags()
    strategy = common.strategy_from_flags()  # logical devices first, before TF starts
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
        given = dict(kwargs)
        kwargs = {k: v for k, v in common.effective_attack_params(
            attack, kwargs, seed=FLAGS.seed).items() if k not in (
            "eps", "norm", "targeted", "batch_size", "return_report", "return_queries")}
        if "eps_iter" in kwargs and given.get("eps_iter") is None:
            kwargs["eps_iter"] = None  # the default step follows each level's eps
    out_dir = common.make_output_dir(FLAGS.output_dir)
    sources = {d: common.load_source(d, data_dir=FLAGS.data_dir) for g in groups for d in g}
    fingerprints = {d: run.fingerprint for d, (run, _) in sources.items()}
    params = {"budget": _budget(), "levels": levels, "attack": attack, "attack_kwargs": kwargs,
              "num_examples": FLAGS.num_examples, "sanity": FLAGS.sanity, "names": names,
              "defense": FLAGS.defense, "defense_epochs": FLAGS.defense_epochs,
              "model_dirs": groups}
    rec = common.record("experiments.robustness", params, fingerprints)
    dest = common.shard_dir(out_dir) if common.sharded() else out_dir
    if common.finished_shard(out_dir, dest, fingerprints.values()):
        return
    if common.sharded():
        common.begin_shard(dest, rec)
    else:
        common.begin(out_dir, "results.json")
    bar = Progress(sum(map(len, groups)) * (len(levels) + bool(FLAGS.sanity)), "robustness",
                   unit="levels", interval=0, inplace=False)
    runs = []  # (facts, per-example results) of every run, in order
    for name, dirs in zip(names, groups, strict=True):
        for d in dirs:
            run, data = sources[d]
            n = min(FLAGS.num_examples, len(data.x_test))
            # A shard computes whole batches of the unsharded run (same seeded batches).
            part = common.shard_slice(n, FLAGS.batch_size) if common.sharded() else slice(0, n)
            x, y = data.x_test[:n][part], data.y_test[:n][part].astype(np.int64)
            model, defense = common.apply_defense(run.model, data, run.clip_min, run.clip_max)
            with strategy.scope():  # batches split across the strategy's replicas
                ex = _per_example(run, model, x, y, levels, attack, kwargs, bar, name)
            runs.append(({"dir": d, "model_fingerprint": run.fingerprint, **defense,
                          "num_examples": n}, ex))
    if common.sharded():
        rundir.write_npz(os.path.join(dest, SHARD_ARRAYS), **_flatten([ex for _, ex in runs]))
        common.finish_shard(dest, {"runs": [facts for facts, _ in runs],
                                   "eps": [ex["sanity"] and ex["sanity"]["eps"]
                                           for _, ex in runs]})
        return
    write_outputs(out_dir, rec, runs)


SHARD_ARRAYS = "shard.npz"


def _flatten(exs):
    """The per-example arrays of every run as flat npz keys ``<run>:<kind>:<key>``."""
    out = {}
    for i, ex in enumerate(exs):
        for kind in ("correct", "snr"):
            for key, v in (ex[kind] or {}).items():
                out[f"{i}:{kind}:{key!r}"] = v
        for key, v in (ex["sanity"] or {}).items():
            if key == "fgsm":
                out.update({f"{i}:fgsm:{j}": c for j, c in enumerate(v)})
            elif key != "eps":
                out[f"{i}:sanity:{key}"] = v
    return out


def _unflatten(arrays, eps):
    """Inverse of :func:`_flatten` (``eps``: each run's sanity budgets or None)."""
    exs = [{"correct": {}, "snr": None, "sanity": None if e is None else {
        "eps": e, "fgsm": [None] * len(e)}} for e in eps]
    for name, v in arrays.items():
        i, kind, key = name.split(":", 2)
        ex = exs[int(i)]
        if kind == "correct":
            ex["correct"][key.strip("'") if key.startswith("'") else float(key)] = v
        elif kind == "snr":
            ex["snr"] = {**(ex["snr"] or {}), float(key): v}
        elif kind == "fgsm":
            ex["sanity"]["fgsm"][int(key)] = v
        else:
            ex["sanity"][key] = v
    return exs


def merge_shards(out_dir, shards):
    """``experiments.merge``: joins the shards (``[(folder, config, summary), ...]`` in
    order) into the files of the unsharded run."""
    eps = shards[0][2]["eps"]
    parts = [_unflatten(rundir.read_npz(os.path.join(folder, SHARD_ARRAYS),
                                        what="shard arrays"), eps) for folder, _, _ in shards]
    joined = []
    for i, facts in enumerate(shards[0][2]["runs"]):
        exs = [p[i] for p in parts]
        ex = {"correct": {k: np.concatenate([e["correct"][k] for e in exs])
                          for k in exs[0]["correct"]},
              "snr": None if exs[0]["snr"] is None else {
                  k: np.concatenate([e["snr"][k] for e in exs]) for k in exs[0]["snr"]},
              "sanity": None if exs[0]["sanity"] is None else {
                  "eps": exs[0]["sanity"]["eps"],
                  "fgsm": [np.concatenate(c) for c in zip(*[e["sanity"]["fgsm"] for e in exs])],
                  **{k: np.concatenate([e["sanity"][k] for e in exs])
                     for k in ("pgd", "unbounded_bim")}}}
        joined.append((facts, ex))
    rec = common.merged_record(shards)
    write_outputs(out_dir, rec, joined)


def write_outputs(out_dir, rec, runs):
    """The table, figure, config.json and, last, results.json from every run's facts and
    per-example results (also for ``experiments.merge``)."""
    params = rec["params"]
    budget, levels, attack, names = (params[k] for k in ("budget", "levels", "attack", "names"))
    columns = ["Clean"] + levels
    results, curves, errors, cells = {}, {}, {}, {}
    todo = iter(runs)
    for name, dirs in zip(names, params["model_dirs"], strict=True):
        per_run = []
        for _ in dirs:
            facts, ex = next(todo)
            acc, achieved, sanity = _curve(budget, levels, ex)
            logging.info("%s (%s): %s; sanity %s", name, facts["dir"], acc,
                         sanity["messages"] or "ok")
            per_run.append({**facts, "accuracy": acc, "achieved_snr_db": achieved,
                            "sanity": sanity})
        cols = {c: [100.0 * r["accuracy"][c] for r in per_run] for c in columns}
        cells[name] = {_col(c): v for c, v in cols.items()}
        curves[name] = {c: float(np.mean(v)) / 100 for c, v in cols.items()}
        errors[name] = {c: (float(np.std(v, ddof=1)) / 100 if len(v) > 1 else 0.0)
                        for c, v in cols.items()}
        results[name] = {"runs": per_run, "mean": curves[name], "std": errors[name]}
    unit = {"snr": "SNR (dB)", "linf": "L-inf eps", "l2": "L2 eps"}[budget]
    notes = []
    if budget == "snr":
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
        os.path.join(fig_dir, f"accuracy_vs_{budget}.png"), curves, xlabel=unit,
        reverse_x=budget == "snr", errors=errors,
        title=f"{attack} ({results[names[0]]['runs'][0]['num_examples']} images)")
    tblog.log_images(list(rec["models"]), out_dir, "robustness",
                     figures=[figure] if figure.endswith(".png") else [])
    rundir.write_record(out_dir, rec)
    rundir.write_json(os.path.join(out_dir, "results.json"), {  # completion marker
        **params, "models": results, "table": stats, "flags": rec["flags"]})
    with open(os.path.join(out_dir, "table.md")) as f:
        print(f.read(), end="")


def console_main():
    common.run(main, required=(("model_dirs", "model_path", "model"), "output_dir"))


if __name__ == "__main__":
    console_main()
