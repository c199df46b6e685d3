"""Smoke runs of the experiment scripts, as a user runs them (subprocesses)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np

from cnnvis_tf import rundir
from conftest import ROOT, run_script


def _metrics(run_dir):
    return rundir.read_json(os.path.join(run_dir, rundir.METRICS))


def test_train_script_writes_contract_files(mnist_run):
    out = mnist_run["dir"]
    assert "799,078 parameters" in mnist_run["stdout"]
    for name in (rundir.MODEL, rundir.CONFIG, rundir.METRICS, rundir.HISTORY,
                 rundir.INITIAL_WEIGHTS, "figures/loss.png", "figures/accuracy.png",
                 "checkpoints/state.json"):
        assert os.path.exists(os.path.join(out, name)), name
    assert os.listdir(os.path.join(out, rundir.TENSORBOARD))
    m = _metrics(out)
    for key in ("test/accuracy", "test/loss", "train/accuracy", "train/loss", "params", "epochs",
                "train_seconds"):
        assert key in m, key
    assert m["params"] == 799_078 and m["epochs"] == 1 and m["test/accuracy"] > 0.8
    cfg = rundir.read_json(os.path.join(out, rundir.CONFIG))
    assert cfg["flags"]["batch_size"] == 32 and cfg["model"] == "conv2_fc500"
    assert cfg["versions"]["keras"].startswith("3.") and "git_commit" in cfg
    assert "Using the embedded MNIST subset" in mnist_run["stderr"]


def test_model_reloads_in_fresh_process(mnist_run):
    path = os.path.join(mnist_run["dir"], rundir.MODEL)
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    expected = np.asarray(keras.models.load_model(path)(x))
    code = (
        "import sys, json, numpy as np, cnnvis_tf, keras\n"
        "m = keras.models.load_model(sys.argv[1])\n"
        "x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype('float32')\n"
        "print(json.dumps(np.asarray(m(x)).tolist()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                          cwd="/", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = np.array(json.loads(proc.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_missing_dataset_exits_with_one_line(tmp_path):
    proc = run_script("experiments.train", "--dataset=cifar10", "--data_dir=/nonexistent",
                      f"--output_dir={tmp_path}", check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "cifar-10-batches-py/data_batch_1" in errors[0] and "--download" in errors[0]
    assert "Traceback" not in proc.stderr


def test_bad_flag_is_refused(tmp_path):
    proc = run_script("experiments.train", "--model=vgg99", f"--output_dir={tmp_path}",
                      check=False)
    assert proc.returncode != 0 and "vgg99" in proc.stderr


def test_same_seed_deterministic_gives_identical_metrics(tmp_path):
    args = ["--embedded", "--epochs=1", "--train_size=400", "--batch_size=32", "--seed=3",
            "--deterministic", "--augment"]
    for name in ("a", "b"):
        run_script("experiments.train", *args, f"--output_dir={tmp_path / name}")
    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    for key in ("test/accuracy", "test/loss", "train/accuracy", "train/loss"):
        assert a[key] == b[key], key
    with open(tmp_path / "a" / "history.csv") as fa, open(tmp_path / "b" / "history.csv") as fb:
        assert fa.read() == fb.read()


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    run_script("experiments.train", "--embedded", "--epochs=1", "--train_size=640",
               "--batch_size=32", "--strategy=mirrored", "--num_cpu_devices=2",
               f"--output_dir={tmp_path}")
    cfg = rundir.read_json(tmp_path / rundir.CONFIG)
    assert cfg["num_replicas"] == 2
    assert _metrics(tmp_path)["test/accuracy"] > 0.5
    assert os.path.exists(tmp_path / rundir.MODEL)
    assert ROOT


def test_train_with_defense_flags_saves_plain_classifier(tmp_path):
    proc = run_script(
        "experiments.train", "--embedded", "--epochs=1", "--train_size=320", "--batch_size=32",
        "--adv_training=fgsm", "--adv_snr_db=33", "--parseval_beta=0.01", "--smooth_gamma=0.01",
        f"--output_dir={tmp_path}",
    )
    assert "Model conv2_fc500: 799,078 parameters" in proc.stdout
    model = keras.models.load_model(tmp_path / rundir.MODEL)
    assert model.name == "conv2_fc500" and model.output_shape == (None, 10)
    cfg = rundir.read_json(tmp_path / rundir.CONFIG)
    assert cfg["settings"]["adv_training"] == "fgsm" and cfg["settings"]["adv_snr_db"] == 33
    with open(tmp_path / rundir.HISTORY) as f:
        assert "smooth_loss" in f.readline()
    bad = run_script("experiments.train", "--embedded", "--adv_training=pgd",
                     f"--output_dir={tmp_path / 'bad'}", check=False)
    assert bad.returncode != 0 and "--adv_eps or --adv_snr_db" in bad.stderr
