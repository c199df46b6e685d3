"""Smoke tests of experiments.attack / robustness / transfer on tiny MNIST run directories."""

import csv
import json
import os

import keras
import numpy as np
import pytest

from cnnvis_tf import datasets, rundir, testing
from conftest import run_script

CONTRACT = ["clean_accuracy", "adversarial_accuracy", "success_rate", "mean_l2", "mean_linf",
            "mean_snr_db", "num_examples", "seconds"]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two tiny CNNs trained briefly on embedded MNIST, saved as run directories."""
    data = datasets.load("mnist", embedded=True, seed=0)
    dirs = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        model = testing.tiny_cnn((28, 28, 1), 10, filters=8, fc_units=32, seed=seed)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(data.x_train[:1000], data.y_train[:1000], epochs=2, batch_size=32, verbose=0)
        out = str(tmp_path_factory.mktemp(f"run{seed}"))
        model.save(os.path.join(out, rundir.MODEL))
        rundir.write_json(os.path.join(out, rundir.CONFIG),
                          {**data.facts(), "seed": 0, "embedded": True})
        dirs.append(out)
    return dirs


def test_attack_script_writes_the_contract(tiny_runs, tmp_path):
    out = str(tmp_path / "atk")
    run_script("experiments.attack", f"--model_dir={tiny_runs[0]}", "--attack=pgd",
               "--eps=0.2", "--params=nb_iter=5", "--num_examples=24", f"--output_dir={out}")
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert set(CONTRACT) <= set(metrics) and metrics["num_examples"] == 24
    arrays = np.load(os.path.join(out, "adversarial.npz"))
    assert {"x", "x_adv", "y", "pred_clean", "pred_adv"} <= set(arrays.files)
    x, x_adv = arrays["x"], arrays["x_adv"]
    assert x.shape == x_adv.shape == (24, 28, 28, 1)
    assert np.abs(x_adv - x).max() <= 0.2 + 1e-6 and 0.0 <= x_adv.min() and x_adv.max() <= 1.0
    assert metrics["adversarial_accuracy"] == np.mean(arrays["pred_adv"] == arrays["y"])
    assert metrics["adversarial_accuracy"] < metrics["clean_accuracy"]
    assert os.path.exists(os.path.join(out, "figures", "examples.png"))


def test_attack_script_iterative_noise_reuse(tiny_runs, tmp_path):
    out = str(tmp_path / "noise")
    run_script("experiments.attack", f"--model_dir={tiny_runs[0]}", "--attack=iterative_noise",
               "--target_class=4", "--params=step_size=0.02", "--num_examples=8",
               f"--output_dir={out}")
    arrays = np.load(os.path.join(out, "adversarial.npz"))
    assert np.all(arrays["targets"] == 4)
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["success_rate"] == np.mean(arrays["pred_adv"] == 4) >= 0.75
    reuse = json.load(open(os.path.join(out, "noise_reuse.json")))
    assert reuse["target"] == 4 and len(reuse["pred_noisy"]) == 7
    assert os.path.exists(os.path.join(out, "figures", "noise_reuse.png"))


def test_robustness_script_snr_table_with_repeats(tiny_runs, tmp_path):
    out = str(tmp_path / "rob")
    proc = run_script("experiments.robustness", f"--model_dirs={tiny_runs[0]},"
                      f"{tiny_runs[0]}+{tiny_runs[1]}", "--names=one,two", "--budget=snr",
                      "--num_examples=40", f"--output_dir={out}")
    rows = list(csv.reader(open(os.path.join(out, "table.csv"))))
    assert rows[0] == ["Model"] + [f"{c}{s} (%)" for c in ("Clean", "50", "45", "40", "33")
                                   for s in ("", " std")]
    assert [r[0] for r in rows[1:]] == ["one", "two"]
    assert rows[1][2] == "" and 0 <= float(rows[2][2]) <= 100  # one run: no std
    assert 0 <= float(rows[1][1]) <= 100
    results = json.load(open(os.path.join(out, "results.json")))
    one = results["models"]["one"]
    accs = [one["mean"][k] for k in ("Clean", "50.0", "45.0", "40.0", "33.0")]
    assert accs == sorted(accs, reverse=True)  # more noise never helps here
    assert "unbounded_attack_fails" in one["runs"][0]["sanity"]
    md = open(os.path.join(out, "table.md")).read()
    assert "| one |" in md and "Sanity" in proc.stdout and "ddof=1" in md
    achieved = one["runs"][0]["achieved_snr_db"]
    for level in ("50.0", "45.0", "40.0", "33.0"):
        assert abs(achieved[level] - float(level)) < 0.05  # the column label is achieved
    assert "Achieved SNR" in md
    assert os.path.exists(os.path.join(out, "figures", "accuracy_vs_snr.png"))


def test_transfer_script_matrix(tiny_runs, tmp_path):
    out = str(tmp_path / "tr")
    run_script("experiments.transfer", f"--model_dirs={tiny_runs[0]},{tiny_runs[1]}",
               "--names=a,b", "--attack=fgsm", "--eps=0.15", "--num_examples=40",
               f"--output_dir={out}")
    results = json.load(open(os.path.join(out, "results.json")))
    m = np.array(results["matrix"])
    assert results["names"] == ["a", "b"] and m.shape == (2, 2)
    assert np.all((m >= 0) & (m <= 1))
    rows = list(csv.reader(open(os.path.join(out, "matrix.csv"))))
    assert rows[0] == ["source \\ target", "a (%)", "b (%)"] and len(rows) == 3
    assert float(rows[1][1]) == pytest.approx(100 * m[0, 0], abs=1e-4)
    assert os.path.exists(os.path.join(out, "figures", "transfer_matrix.png"))


@pytest.mark.parametrize("args,message", [
    (["--attack=cw_l2", "--eps=0.1"], "takes no eps budget"),
    (["--params=nb_iter"], "Malformed attack parameter"),
])
def test_attack_script_bad_input_is_one_line(tiny_runs, tmp_path, args, message):
    proc = run_script("experiments.attack", f"--model_dir={tiny_runs[0]}", *args,
                      f"--output_dir={tmp_path}", check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
