"""Seed 000's reactive defenses from the scripts: detection and input reconstruction."""

import os

from cnnvis_tf import rundir
from conftest import run_script


def test_detect_script_learns_to_flag_fgsm(mnist_run, tmp_path):
    out = str(tmp_path / "det")
    proc = run_script("experiments.detect", f"--model_dir={mnist_run['dir']}",
                      "--attack=fgsm", "--eps=0.2", "--num_train=300", "--num_examples=100",
                      "--epochs=10", f"--output_dir={out}")
    m = rundir.read_json(os.path.join(out, "metrics.json"))
    assert m["num_clean"] == m["num_adversarial"] == 100
    assert m["roc_auc"] > 0.8 and m["detection_rate"] > m["false_positive_rate"] + 0.3
    assert "roc_auc=" in proc.stdout
    for name in ("detector.keras", "figures/roc.png", rundir.CONFIG):
        assert os.path.exists(os.path.join(out, name)), name
    cfg = rundir.read_json(os.path.join(out, rundir.CONFIG))
    assert cfg["params"]["attack_kwargs"]["eps"] == 0.2 and cfg["params"]["num_train"] == 300


def test_attack_behind_input_reconstruction(mnist_run, tmp_path):
    out = str(tmp_path / "recon")
    run_script("experiments.attack", f"--model_dir={mnist_run['dir']}", "--attack=fgsm",
               "--eps=0.1", "--num_examples=64", "--defense=reconstruction",
               "--defense_epochs=5", "--defense_train_size=900", f"--output_dir={out}")
    m = rundir.read_json(os.path.join(out, "metrics.json"))
    cfg = rundir.read_json(os.path.join(out, rundir.CONFIG))
    assert m["defense"] == "reconstruction" and cfg["params"]["defense"] == "reconstruction"
    assert cfg["params"]["defense_epochs"] == 5
    assert m["clean_accuracy"] > 0.5  # the autoencoder keeps clean images recognisable
    x = rundir.read_adversarial(os.path.join(out, rundir.ADVERSARIAL))
    assert abs(x["x_adv"] - x["x"]).max() <= 0.1 + 1e-6
