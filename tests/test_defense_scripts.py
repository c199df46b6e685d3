"""Seed 002's defense table and seed 004's selective-dropout protocol: library and scripts."""

import csv
import json
import os

import numpy as np
import pytest

from cnnvis_tf.errors import InputError
from cnnvis_tf.recipes import defense_table as protocols
from cnnvis_tf.recipes import selective_dropout as sdp
from conftest import run_script

SNR_HEADER = ["Clean", "50", "45", "40", "33", "25", "20"]


def _error_line(proc):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def test_parse_variants_defaults_and_overrides():
    vs = protocols.parse_variants("vanilla,adv_psv_smooth,smooth:gamma=0.003:m=1")
    assert [v.label for v in vs] == ["Vanilla", "Adv + Psv + Smooth", "Smooth"]
    assert (vs[1].adv, vs[1].beta, vs[1].gamma, vs[1].m) == (True, 0.01, 0.001, 1)
    assert vs[2].key == "smooth_g0.003_m1" and (vs[2].gamma, vs[2].m) == (0.003, 1)
    kw = protocols.train_kwargs(vs[1])
    assert kw["adv_training"] == "fgsm" and kw["adv_snr_db"] == 33.0
    assert protocols.train_kwargs(vs[0])["adv_training"] == "none"
    for bad in ("vanilla,nope", "smooth:zeta=1", "smooth:gamma=x", "adv,adv", "smooth:m=0"):
        with pytest.raises(InputError):
            protocols.parse_variants(bad)


def test_groups_and_split_hold_out_one_pair_per_group():
    y = np.array([0, 0, 0, 1, 1, 2])
    y_adv = np.array([5, 5, 6, 7, 7, 8])
    both = sdp.perturbation_groups(y, y_adv, "both")
    assert len(np.unique(both)) == 4  # (0,5) (0,6) (1,7) (2,8)
    assert len(np.unique(sdp.perturbation_groups(y, y_adv, "orig"))) == 3
    train, val = sdp.split_pairs(both, seed=0)
    assert len(val) == 4 and len(train) == 2 and not set(train) & set(val)
    assert {2, 5} <= set(val)  # singleton groups are held out (never trained on)
    with pytest.raises(InputError):
        sdp.perturbation_groups(y, y_adv, "target")
    with pytest.raises(InputError):
        sdp.pairs_from_arrays(np.zeros((3, 2)), np.zeros((3, 2)), y[:3], [1, 1, 1], [2, 2, 2])


def test_defense_table_script(tmp_path):
    out = str(tmp_path / "table")
    args = ["--dataset=mnist", "--embedded", "--train_size=400", "--epochs=1", "--seeds=1",
            "--variants=vanilla,adv", "--num_eval=200", "--batch_size=32", f"--output_dir={out}"]
    run_script("experiments.defense_table", *args)
    with open(os.path.join(out, "table.csv")) as f:
        header, *rows = list(csv.reader(f))
    assert header == ["Network type"] + [f"{c} (%)" for c in SNR_HEADER]
    assert [r[0] for r in rows] == ["Vanilla (beta=0, gamma=0, m=0)",
                                    "Adv (beta=0, gamma=0, m=0)"]
    for r in rows:
        for cell in r[1:]:
            assert 0 <= float(cell) <= 100
    table = open(os.path.join(out, "table.md")).read()
    assert "| Network type | Clean | 50 | 45 | 40 | 33 | 25 | 20 |" in table
    results = json.load(open(os.path.join(out, "results.json")))
    run = results["variants"]["adv"]["runs"][0]
    assert set(run["accuracy"]) == set(SNR_HEADER) and run["num_examples"] == 200
    assert os.path.exists(os.path.join(out, "runs", "vanilla_seed0", "model.keras"))
    for fig in ("accuracy_vs_snr.png", "loss_variants.png", "validation_accuracy_variants.png"):
        assert os.path.exists(os.path.join(out, "figures", fig))
    assert "gain over Vanilla" in table
    # Rerunning finds the finished runs (no training) and their cached evaluations (same
    # model fingerprints) and gives the same table.
    proc = run_script("experiments.defense_table", *args)
    assert proc.stderr.count("Resuming") == 2 and "Epoch 1/1" not in proc.stdout
    assert open(os.path.join(out, "table.md")).read() == table


@pytest.mark.parametrize("flag, words", [
    ("--variants=vanilla,bogus", "bogus"),
    ("--adv_training=fgsm", "--variants"),
])
def test_defense_table_bad_input(tmp_path, flag, words):
    proc = run_script("experiments.defense_table", flag, f"--output_dir={tmp_path}",
                      check=False)
    assert words in _error_line(proc)


def test_selective_dropout_script(mnist_run, tmp_path):
    out = str(tmp_path / "sd")
    run_script("experiments.selective_dropout", f"--model_dir={mnist_run['dir']}",
               "--num_pairs=24", "--lbfgs_params=max_iterations=15,binary_search_steps=2",
               "--p=0.5", "--learning_rates=0.001,0.003", "--epochs=2", "--num_test=100",
               f"--output_dir={out}")
    table = open(os.path.join(out, "table.md")).read()
    for name in ("Both", "Orig", "Adv"):
        assert f"grouping {name}," in table
    assert table.count("| Learning rate | C^conv2 | SD_0.5^conv2 | C^fc1 | SD_0.5^fc1 |") == 9
    with open(os.path.join(out, "table.csv")) as f:
        header, *rows = list(csv.reader(f))
    assert header[:3] == ["Metric", "Grouping", "Learning rate"]
    assert len(rows) == 3 * 3 * 2  # metrics x groupings x learning rates
    assert all(0 <= float(c) <= 1 for r in rows for c in r[3:])
    res = json.load(open(os.path.join(out, "results.json")))
    runs = res["groupings"]["both"]["runs"]["0.001"]
    freq = np.array(runs["SD_0.5^fc1"]["selection_frequency"])
    assert freq.shape == (500,) and 0 <= freq.min() and freq.max() <= 1
    assert np.isclose(np.mean(runs["C"]["selection_frequency"]), 1.0)  # control: every unit
    for name in ("selection_frequency_conv2.png", "selection_frequency_fc1.png",
                 "validation_curves.png"):
        assert os.path.exists(os.path.join(out, "figures", name))
    # The saved pairs feed a second run through --adversarial.
    out2 = str(tmp_path / "sd2")
    run_script("experiments.selective_dropout", f"--model_dir={mnist_run['dir']}",
               f"--adversarial={out}/adversarial.npz", "--groupings=orig", "--p=0.2",
               "--layers=fc1", "--learning_rates=0.001", "--epochs=1", "--num_test=0",
               f"--output_dir={out2}")
    second = open(f"{out2}/table.md").read()
    assert "grouping Orig," in second and "| Learning rate | C^fc1 | SD_0.2^fc1 |" in second
    cfg = json.load(open(os.path.join(out2, "config.json")))
    assert list(cfg["models"]) == [mnist_run["dir"]] and cfg["params"]["p"] == [0.2]


def test_parse_floats_range():
    assert protocols.parse_floats("p", "0.2, 1", low=0, high=1, low_open=True) == [0.2, 1.0]
    for bad in ("0", "1.5", "x", ""):
        with pytest.raises(InputError, match="--p"):
            protocols.parse_floats("p", bad, low=0, high=1, low_open=True)


@pytest.mark.parametrize("flag, words", [
    ("--p=0,0.5", "(0, 1]"),
    ("--layers=conv9", "conv9"),
])
def test_selective_dropout_bad_input(mnist_run, tmp_path, flag, words):
    proc = run_script("experiments.selective_dropout", f"--model_dir={mnist_run['dir']}",
                      "--num_pairs=4", "--epochs=1", flag, f"--output_dir={tmp_path}",
                      check=False)
    assert words in _error_line(proc)


def test_variants_with_data_augmentation_and_gain_criterion():
    vs = protocols.parse_variants("vanilla,adv+da")
    assert vs[1].da and vs[1].key == "adv_da" and vs[1].label == "Adv + da"
    assert protocols.train_kwargs(vs[1])["augment"] is True
    stats = {"vanilla": {"mean": {"33": 0.90, "20": 0.50}, "std": {"33": 0.01, "20": 0.02},
                         "num_runs": 3, "adv": False, "label": "Vanilla"},
             "adv": {"mean": {"33": 0.905, "20": 0.60}, "std": {"33": 0.01, "20": 0.02},
                     "num_runs": 3, "adv": True, "label": "Adv"}}
    gains = protocols.adversarial_gains(stats)
    assert not gains["adv"]["33"]["exceeds_std"] and gains["adv"]["20"]["exceeds_std"]
    assert gains["adv"]["20"]["gain"] == pytest.approx(0.10)
    single = {k: {**v, "num_runs": 1} for k, v in stats.items()}
    assert not protocols.adversarial_gains(single)["adv"]["20"]["exceeds_std"]
    assert "at 20 (+10.00 > 2.00)" in "\n".join(protocols.gain_notes(gains, stats))


def test_snr_curves_carry_the_clean_level_drawn_dashed():
    from cnnvis_tf.vis import plotting

    vs = protocols.parse_variants("vanilla,adv")
    per_run = {"vanilla": [{"Clean": 0.98, "33": 0.90, "20": 0.50},
                           {"Clean": 0.96, "33": 0.88, "20": 0.40}],
               "adv": [{"Clean": 0.97, "33": 0.93, "20": 0.70}]}
    stats = protocols.variant_stats(vs, per_run, [33.0, 20.0])
    curves, errors = protocols.snr_curves(vs, stats, [33.0, 20.0])
    assert curves["Vanilla"] == pytest.approx({33.0: 0.89, 20.0: 0.45, "Clean": 0.97})
    assert curves["Adv"]["Clean"] == pytest.approx(0.97)
    assert errors["Vanilla"][20.0] == pytest.approx(np.std([0.5, 0.4], ddof=1))
    assert "Clean" not in errors["Vanilla"]
    fig = plotting.curves_figure(curves, errors=errors, xlabel="SNR (dB)", reverse_x=True)
    dashed = sorted(round(line.get_ydata()[0], 6) for line in fig.axes[0].get_lines()
                    if line.get_linestyle() == "--")
    assert dashed == pytest.approx([97.0, 97.0])  # one clean line per variant, in percent
    assert sorted(float(t) for t in fig.axes[0].get_xticks()) == [20.0, 33.0]
    plotting.plt.close(fig)
