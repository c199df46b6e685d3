"""No crash point loses data: a kill at each named write, then a rerun (fault injection)."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from faults import Killed, kill_at

from cnnvis_tf import datasets, rundir, testing, training
from cnnvis_tf.errors import DataFilesError, InputError
from conftest import ROOT


def _data():
    x, y = testing.tiny_data(200, seed=2)
    return datasets.Dataset("tiny", x[:120], y[:120], x[150:], y[150:], ["a", "b", "c"],
                            "synthetic", x_val=x[120:150], y_val=y[120:150])


def _train(run, data, epochs, **kw):
    return training.train(run, data, lambda: testing.tiny_cnn(seed=0), epochs=epochs,
                          batch_size=16, learning_rate=1e-2, settings={"model": "tiny"},
                          verbose=0, **kw)


@pytest.mark.parametrize("name,when", [
    ("epoch-0002.keras", "after"),   # checkpoint renamed, state.json not yet written
    ("state.json", "before"),        # the same point, seen from the state file
    ("state.json", "after"),         # committed, old checkpoint not yet deleted
    (rundir.HISTORY, "before"),      # history rewrite of epoch 2 never lands
    (rundir.HISTORY_STEPS, "before"),
    (rundir.MODEL, "before"),        # final model save
    (rundir.METRICS, "before"),      # completion marker
])
def test_training_killed_at_a_write_resumes_exactly(tmp_path, name, when):
    data = _data()
    ref_dir = str(tmp_path / "ref")
    training.set_seed(0)
    _, ref = _train(ref_dir, data, 3)
    run = str(tmp_path / "run")
    training.set_seed(0)
    with pytest.raises(Killed), kill_at(name, when):
        _train(run, data, 3)
    training.set_seed(0)
    _, metrics = _train(run, data, 3)
    hist = rundir.read_history(run)
    assert list(hist["epoch"]) == [0, 1, 2] and metrics["epochs"] == 3
    steps = rundir.read_history(run, rundir.HISTORY_STEPS)
    assert sorted(set(steps["epoch"])) == [0, 1, 2] and np.all(np.diff(steps["step"]) > 0)
    # No extra epoch was trained: same weights as the uninterrupted run.
    assert metrics["model_fingerprint"] == ref["model_fingerprint"]
    state = rundir.read_json(os.path.join(run, rundir.CHECKPOINTS, "state.json"))
    ckpts = [f for f in os.listdir(os.path.join(run, rundir.CHECKPOINTS)) if
             f.endswith(".keras")]
    assert state["epochs_done"] == 3 and ckpts == [state["checkpoint"]]
    assert rundir.model_fingerprint(rundir.load_run(run).model) == ref["model_fingerprint"]


def test_history_rewrite_is_atomic(tmp_path):
    data = _data()
    run = str(tmp_path / "run")
    _train(run, data, 1)
    before = open(os.path.join(run, rundir.HISTORY)).read()
    with pytest.raises(Killed), kill_at(rundir.HISTORY, "before"):
        _train(run, data, 2)
    assert open(os.path.join(run, rundir.HISTORY)).read() == before
    assert not [f for f in os.listdir(run) if f.endswith(".tmp")]


def test_second_training_into_a_locked_dir_is_refused(tmp_path):
    run = str(tmp_path / "run")
    os.makedirs(run)
    with rundir.locked(run):
        proc = subprocess.run(
            [sys.executable, "-c", "import sys; sys.path.insert(0, 'tests');"
             "from cnnvis_tf import rundir\n"
             f"with rundir.locked({run!r}): pass"],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and "Another process is writing" in proc.stderr
        with pytest.raises(InputError, match="Another process"):
            _train(run, _data(), 1)
    _train(run, _data(), 1)  # free again once the holder is gone


def _run_killed(name, when, module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, os.path.join(ROOT, "tests", "faults.py"), name,
                           when, module, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_attack_killed_before_its_marker_is_redone(mnist_run, tmp_path):
    out = str(tmp_path / "pgd")
    args = [f"--model_dir={mnist_run['dir']}", "--attack=fgsm", "--eps=0.1",
            "--num_examples=20", f"--output_dir={out}"]
    proc = _run_killed(rundir.ADVERSARIAL, "after", "experiments.attack", *args)
    assert proc.returncode == 137, proc.stderr[-2000:]
    assert os.path.exists(os.path.join(out, rundir.ADVERSARIAL))
    assert not os.path.exists(os.path.join(out, "metrics.json"))  # not marked done
    assert not rundir.artifact_is_current(out, "metrics.json", args, [])
    from conftest import run_script

    run_script("experiments.attack", *args)
    m = rundir.read_json(os.path.join(out, "metrics.json"))
    cfg = rundir.read_json(os.path.join(out, rundir.CONFIG))
    assert m["num_examples"] == 20 and cfg["argv"] == args
    assert m["model_fingerprint"] == rundir.read_json(
        os.path.join(mnist_run["dir"], rundir.METRICS))["model_fingerprint"]
    # A rerun killed at its first write leaves no stale completion marker behind.
    proc = _run_killed(rundir.CONFIG, "before", "experiments.attack", *args)
    assert proc.returncode == 137
    assert not os.path.exists(os.path.join(out, "metrics.json"))


def test_robustness_killed_before_results_is_not_done(mnist_run, tmp_path):
    out = str(tmp_path / "rob")
    args = [f"--model_dirs={mnist_run['dir']}", "--eps=0.1", "--num_examples=20",
            "--nosanity", f"--output_dir={out}"]
    proc = _run_killed("results.json", "before", "experiments.robustness", *args)
    assert proc.returncode == 137, proc.stderr[-2000:]
    assert os.path.exists(os.path.join(out, "table.md"))
    assert not os.path.exists(os.path.join(out, "results.json"))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_malicious_cifar_pickle_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": _Evil(), b"labels": [0]}, f)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(DataFilesError, match="refused"):
            datasets.load("cifar10", data_dir=str(tmp_path))
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_plain_cifar_pickle_still_loads(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                         b"labels": [0, 1, 2, 3]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    data = datasets.load("cifar10", data_dir=str(tmp_path))
    assert data.x_train.shape == (20, 32, 32, 3) and data.y_test.tolist() == [0, 1, 2, 3]
