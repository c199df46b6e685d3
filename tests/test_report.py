"""experiments.report / cnnvis_tf.report: the HTML report rendered in a real browser
(headless Chromium), the Markdown report, partial run directories and bad input."""

import json
import os
import re
import shutil

import browser
import numpy as np
import pytest

from cnnvis_tf import datasets, evaluation, report, rundir
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import methods
from cnnvis_tf.vis import plotting as plots
from conftest import run_script

EPS = (0.1, 0.3)


def _copy_run(src, dest):
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(
        rundir.CHECKPOINTS, rundir.TENSORBOARD, "report"))
    return str(dest)


def _record(out, script, params, run, argv):
    rec = rundir.script_record(script, params, {run.path: run.fingerprint})
    rec["argv"] = argv
    rundir.write_record(out, rec)


@pytest.fixture(scope="module")
def study(mnist_run, tmp_path_factory):
    """The session's real MNIST run plus small outputs in the scripts' formats: an FGSM
    attack, a robustness table (one row made to fail a sanity check), a transfer matrix,
    two visualizations and an unfinished attack folder."""
    d = _copy_run(mnist_run["dir"], tmp_path_factory.mktemp("study") / "run")
    run = rundir.load_run(d)
    data = datasets.load_for_run(run.config)
    x, y = data.x_test[:32], data.y_test[:32].astype(np.int64)
    box = {"clip_min": run.clip_min, "clip_max": run.clip_max}

    out = rundir.ensure_dir(os.path.join(d, "attacks", "fgsm", "figures"))[:-len("/figures")]
    x_adv = evaluation.run_attack("fgsm", run.model, x, y, eps=0.2, **box)
    pred_clean, pred_adv = (evaluation.predict_labels(run.model, a) for a in (x, x_adv))
    metrics = evaluation.attack_metrics(y, x, x_adv, pred_clean, pred_adv)
    _record(out, "experiments.attack", {"attack": "fgsm"}, run,
            [f"--model_dir={d}", "--attack=fgsm", "--eps=0.2", f"--output_dir={out}"])
    rundir.write_json(os.path.join(out, rundir.CONFIG), {
        **rundir.read_json(os.path.join(out, rundir.CONFIG)),
        "attack_kwargs": {"eps": 0.2, "norm": "inf"}})
    rundir.write_adversarial(out, x=x, x_adv=x_adv, y=y, pred_clean=pred_clean,
                             pred_adv=pred_adv)
    plots.plot_examples(os.path.join(out, "figures", "examples.png"), x, x_adv, y, pred_clean,
                        pred_adv, run.class_names, **box)
    rundir.write_json(os.path.join(out, "metrics.json"), {**metrics, "defense": "none"})
    aa = shutil.copytree(out, os.path.join(d, "autoattack"))  # its report, one check failing
    rundir.write_json(os.path.join(aa, "metrics.json"), {**metrics, "autoattack": {
        "robust_accuracy_by_attack": {"apgd-ce": 0.5, "square": 0.25},
        "seconds_by_attack": {"apgd-ce": 1.0, "square": 2.0},
        "checks": {"square_stronger": True, "randomized": False,
                   "messages": ["Square beat the white-box attacks"]}}})

    out = rundir.ensure_dir(os.path.join(d, "robustness_linf", "figures"))[:-len("/figures")]
    acc = evaluation.accuracy_vs_eps(run.model, x, y, list(EPS), **box)
    real = evaluation.sanity_flags(EPS, [acc[e] for e in EPS])
    masked = evaluation.sanity_flags(EPS, [0.2, 0.6])  # accuracy rises with eps: a warning
    cols = ["Clean"] + [f"{e:g}" for e in EPS]
    rows = {"mnist": {c: 100 * acc[k] for c, k in zip(cols, ["Clean", *EPS])},
            "masked": {"Clean": 90.0, "0.1": 20.0, "0.3": 60.0}}
    stats = rundir.write_table(out, row_label="Model", columns=cols, rows=rows,
                               title="Accuracy (%) under fgsm.", unit="%")
    plots.plot_curves(os.path.join(out, "figures", "accuracy_vs_linf.png"),
                      {"mnist": acc}, xlabel="L-inf eps")
    _record(out, "experiments.robustness", {}, run, [f"--model_dirs={d}", "--eps=0.1,0.3"])
    rundir.write_json(os.path.join(out, "results.json"), {
        "budget": "linf", "levels": list(EPS), "attack": "fgsm", "table": stats,
        "models": {"mnist": {"runs": [{"sanity": real}]},
                   "masked": {"runs": [{"sanity": masked}]}}})

    out = rundir.ensure_dir(os.path.join(d, "transfer", "figures"))[:-len("/figures")]
    names, matrix = evaluation.transfer_matrix({"run": run.model, "copy": run.model}, x, y,
                                               "fgsm", eps=0.2, **box)
    rundir.write_table(out, row_label="source \\ target", columns=names, stem="matrix",
                       rows={s: {t: 100 * matrix[i, j] for j, t in enumerate(names)}
                             for i, s in enumerate(names)},
                       title="Accuracy (%) of targets.", unit="%")
    plots.plot_matrix(os.path.join(out, "figures", "transfer_matrix.png"), names, matrix)
    _record(out, "experiments.transfer", {}, run, [f"--model_dirs={d},{d}"])
    rundir.write_json(os.path.join(out, "results.json"), {"matrix": matrix})

    out = rundir.ensure_dir(os.path.join(d, "vis"))
    ctx = methods.Context(model=run.model, x=x, y=y, class_names=run.class_names, **box)
    for name in ("filters", "saliency"):
        methods.run(name, ctx, out)
    _record(out, "experiments.visualize", {"methods": ["filters", "saliency"]}, run,
            [f"--model_dir={d}", "--methods=filters,saliency"])

    out = rundir.ensure_dir(os.path.join(d, "attacks", "pgd"))  # killed before metrics.json
    _record(out, "experiments.attack", {"attack": "pgd"}, run, ["--attack=pgd"])
    return {"dir": d, "robust_acc": acc, "metrics": metrics, "matrix": matrix}


@pytest.fixture(scope="module")
def built(study):
    rep = report.collect(study["dir"])
    out = os.path.join(study["dir"], "report")
    html, md = report.write(rep, out)
    return {"report": rep, "html": html, "md": md, "dir": out}


def test_report_renders_in_chromium(built):
    """Opened from file:// in headless Chromium: no console error (the page's CSP would log
    any network load), every image decoded, the tables and badges there; screenshot saved."""
    shot = os.path.join(built["dir"], "report.png")
    page = browser.open_page(built["html"], screenshot=shot)
    assert page["severe"] == []
    figures = [f for f in re.findall(r'<img src="([^"]+)"', open(built["html"]).read())]
    assert len(page["images"]) == len(figures) == 8  # 2 training, 2 attacks, 1 robustness,
    # 1 transfer, 2 visualizations
    assert all(i["src"].startswith("data:image/png;base64,") for i in page["images"])
    assert all(i["complete"] and i["width"] > 0 and i["height"] > 0 for i in page["images"])
    tables = {t["section"]: [] for t in page["tables"]}
    for t in page["tables"]:
        tables[t["section"]].append(t)
    robust = [t for t in tables["robustness"] if "robustness" in t["cls"]]
    assert len(robust) == 1 and robust[0]["rows"] == 3  # header + 2 models
    assert "masked" in robust[0]["text"] and "0.3 L-inf eps" in robust[0]["text"]
    assert any("adversarial_accuracy" in t["text"] for t in tables["attacks"])
    assert any("copy" in t["text"] and "run" in t["text"] for t in tables["transfer"])
    assert any("conv1" in t["text"] and "logits" in t["text"] for t in tables["model"])
    assert {"model", "training", "attacks", "robustness", "transfer", "visualizations",
            "defenses", "config", "missing"} <= set(page["sections"])
    assert "badge warn" in page["badges"] and "badge ok" in page["badges"]
    with open(shot, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert width == 1280 and height > 2000  # the whole page, not the viewport


def test_html_is_self_contained_and_escaped(built, study, tmp_path):
    text = open(built["html"]).read()
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert not re.search(r'(src|href)="(?!data:|#)', text)  # no file or network reference
    assert "<script" not in text
    rep = dict(built["report"], model={**built["report"]["model"],
                                       "name": "<script>alert(1)</script>"})
    html, md = report.write(rep, str(tmp_path))
    assert "<script>alert(1)" not in open(html).read()
    assert "&lt;script&gt;alert(1)" in open(html).read()


def test_markdown_report(built, study):
    text = open(built["md"]).read()
    for heading in ("# cnnvis_tf report: run", "## Model card", "## Attacks", "### fgsm",
                    "## Robustness", "## Transfer", "## Visualizations", "### saliency",
                    "## Defenses", "## Configuration and versions", "## Not in this run"):
        assert heading + "\n" in text or heading + " " in text, heading
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert len(links) == 8 and not any(os.path.isabs(p) for p in links)
    assert all(os.path.isfile(os.path.join(built["dir"], p)) for p in links)
    assert "../attacks/fgsm/figures/examples.png" in links
    acc = study["metrics"]["adversarial_accuracy"]
    assert f"| adversarial_accuracy | {acc:.4g} |" in text
    row = next(line for line in text.splitlines() if line.startswith("| masked |"))
    assert "| 90.00 | 20.00 | 60.00 |" in row and "✗ monotonic in the budget" in row
    mine = next(line for line in text.splitlines() if line.startswith("| mnist |"))
    assert f"{100 * study['robust_acc'][0.3]:.2f}" in mine and "✓ monotonic" in mine
    assert report.VIS_DESCRIPTIONS["saliency"] in text
    assert "| apgd-ce | 0.5 | 1 |" in text and "| square | 0.25 | 2 |" in text
    assert "Evaluation checks: ✓ randomized, ✗ square stronger." in text
    assert "- warning: Square beat the white-box attacks" in text
    assert "**attacks/pgd**: unfinished experiments.attack output" in text
    assert "**certified robustness**: none in this run directory" in text
    assert "tensorflow" in text and "| optimizer |" in text


def test_partial_run_reports_what_it_has(mnist_run, tmp_path):
    d = _copy_run(mnist_run["dir"], tmp_path / "bare")
    os.remove(os.path.join(d, rundir.METRICS))  # as if training was interrupted
    rep = report.collect(d, load_model=False)
    assert not rep["attacks"] and not rep["robustness"] and not rep["visualizations"]
    missing = {m["what"] for m in rep["missing"]}
    assert {"test metrics", "attacks", "robustness tables", "transfer matrix",
            "visualizations", "defenses"} <= missing
    html, md = report.write(rep, str(tmp_path / "out"))
    text = open(html).read()
    assert "No attack outputs in this run directory." in text and "training did not finish" in text
    assert "--attack=pgd --eps=0.2" in open(md).read()


def test_not_a_run_directory_is_a_clear_error(study, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        report.collect(str(tmp_path / "nope"))
    with pytest.raises(InputError, match="is not a run directory"):
        report.collect(str(tmp_path))
    with pytest.raises(InputError, match="output of experiments.attack, not a run directory"):
        report.collect(os.path.join(study["dir"], "attacks", "fgsm"))


def test_inputs_fingerprint_follows_the_outputs(study, tmp_path):
    d = _copy_run(study["dir"], tmp_path / "fp")
    before = report.inputs_fingerprint(d)
    assert report.inputs_fingerprint(d) == before
    rundir.ensure_dir(os.path.join(d, "report"))  # a report of its own is no input
    rundir.write_json(os.path.join(d, "report", "config.json"), {"script": "experiments.report"})
    assert report.inputs_fingerprint(d) == before
    path = os.path.join(d, "attacks", "fgsm", "metrics.json")
    rundir.write_json(path, {**json.load(open(path)), "adversarial_accuracy": 0.5})
    assert report.inputs_fingerprint(d) != before


def test_every_visualization_method_is_described():
    assert set(methods.METHODS) <= set(report.VIS_DESCRIPTIONS)


def test_script_writes_report_and_record(study, tmp_path):
    d = _copy_run(study["dir"], tmp_path / "cli")
    proc = run_script("experiments.report", f"--run_dir={d}")
    out = os.path.join(d, "report")
    assert os.path.getsize(os.path.join(out, "report.html")) > 10_000
    assert os.path.isfile(os.path.join(out, "report.md"))
    assert os.stat(os.path.join(out, "report.html")).st_mode & 0o044 == 0o044  # shareable
    rec = json.load(open(os.path.join(out, "config.json")))
    assert rec["script"] == "experiments.report" and rec["argv"] == [f"--run_dir={d}"]
    assert rec["models"] == {d: report.inputs_fingerprint(d)}
    assert rundir.artifact_is_current(out, "report.html", [f"--run_dir={d}"],
                                      [report.inputs_fingerprint(d)])
    assert "report.html" in proc.stdout
    bad = run_script("experiments.report", f"--run_dir={os.path.join(d, 'vis')}", check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "not a run directory" in bad.stderr


def test_explain_eval_output_is_reported_once_finished(mnist_run, tmp_path):
    d = _copy_run(mnist_run["dir"], tmp_path / "run")
    run = rundir.load_run(d)
    out = os.path.join(d, "explain")
    _record(out, "experiments.explain_eval", {"methods": ["saliency"]}, run,
            [f"--model_dir={d}"])
    with open(os.path.join(out, "table.csv"), "w") as f:
        f.write("Method,Deletion (AUC)\nsaliency,0.21\n")
    rep = report.collect(d, load_model=False)
    assert [u["dir"] for u in rep["unfinished"]] == ["explain"]  # no results.json yet
    rundir.write_json(os.path.join(out, "results.json"), {"num_examples": 2})
    rep = report.collect(d, load_model=False)
    assert not rep["unfinished"]
    [item] = rep["others"]
    assert item["script"] == "experiments.explain_eval" and item["table"]
    assert "saliency" in open(report.write(rep, str(tmp_path / "out"))[1]).read()
