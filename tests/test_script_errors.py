"""Bad input to the scripts: one line naming the problem and the fix, exit 2, no traceback,
no output directory made for a command that cannot run."""

import os
import shlex
import subprocess
import sys

import pytest

from cnnvis_tf import datasets, recipes, rundir, testing, training
from cnnvis_tf.errors import InputError
from conftest import ROOT, run_script


def _fails(module, *args, match):
    proc = run_script(module, *args, check=False, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and match in lines[0], proc.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("change,name", [
    ({"learning_rate": float("nan")}, "learning_rate"),
    ({"learning_rate": float("inf")}, "learning_rate"), ({"learning_rate": -1.0}, "learning_rate"),
    ({"adv_training": "fgsm", "adv_eps": float("nan")}, "adv_eps"),
    ({"parseval_beta": float("nan")}, "parseval_beta"),
    ({"weight_decay": float("nan")}, "weight_decay"), ({"smooth_gamma": -1.0}, "smooth_gamma"),
    ({"validation_split": 1.5}, "validation_split"), ({"adv_training": "pgd"}, "exactly one"),
    ({"pgd_steps": 0}, "pgd_steps"), ({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch"),
    ({"adv_snr_db": 0.0, "adv_training": "fgsm"}, "adv_snr_db"),
])
def test_train_config_bad_numbers(change, name):
    with pytest.raises(InputError, match=name):
        recipes.TrainConfig(embedded=True, **change).validate()


@pytest.mark.parametrize("flag,name", [("--learning_rate=nan", "learning_rate"),
                                       ("--strategy=tpu", "no TPU")])
def test_train_bad_flags(tmp_path, flag, name):
    out = tmp_path / "out"
    _fails("experiments.train", "--embedded", flag, f"--output_dir={out}", match=name)
    assert not out.exists()  # refused before anything was written


def test_output_dir_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    _fails("experiments.train", "--embedded", f"--output_dir={f}", match="is a file")


def test_missing_required_flags_make_no_output(tmp_path):
    out = tmp_path / "out"
    _fails("experiments.attack", f"--output_dir={out}", match="--model_dir")
    _fails("experiments.robustness", f"--output_dir={out}", match="--model_dirs")
    assert not out.exists()


def test_bad_script_inputs(mnist_run, tmp_path):
    run = mnist_run["dir"]
    out = str(tmp_path / "o")
    _fails("experiments.attack", f"--model_dir={run}", "--attack=pgd", "--params=nb_iter=abc",
           f"--output_dir={out}", match="nb_iter")
    _fails("experiments.robustness", "--model_dirs=,", f"--output_dir={out}",
           match="empty entry")
    _fails("experiments.transfer", "--model_dirs=,", f"--output_dir={out}",
           match="at least two")
    _fails("experiments.attack", f"--model_dir={tmp_path}/nope", f"--output_dir={out}",
           match="does not exist")


def test_corrupt_run_files(mnist_run, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(mnist_run["dir"], bad)
    model = bad / rundir.MODEL
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(InputError, match="corrupt or truncated"):
        rundir.load_run(str(bad))
    _fails("experiments.attack", f"--model_dir={bad}", f"--output_dir={tmp_path}/o",
           match="corrupt")
    shutil.copy(os.path.join(mnist_run["dir"], rundir.MODEL), model)
    (bad / rundir.CONFIG).write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        rundir.load_run(str(bad))
    (bad / rundir.CONFIG).write_text("[]")
    with pytest.raises(InputError, match="experiments.train"):
        rundir.load_run(str(bad))


def test_library_train_bad_arguments(tmp_path):
    x, y = testing.tiny_data(40)
    data = datasets.Dataset("tiny", x, y, x, y, ["a", "b", "c"], "synthetic")
    for kw, name in (({"epochs": 0, "batch_size": 8}, "epochs"),
                     ({"epochs": 1, "batch_size": 0}, "batch_size"),
                     ({"epochs": 1.5, "batch_size": 8}, "epochs")):
        with pytest.raises(InputError, match=name):
            training.train(str(tmp_path / "r"), data, testing.tiny_cnn, **kw)
    with pytest.raises(InputError, match="learning_rate"):
        training.make_optimizer("adam", float("nan"))


def test_ctrl_c_says_how_to_resume(tmp_path):
    out = str(tmp_path / "run")
    code = ("import sys; sys.path.insert(0, 'tests'); import runpy; from faults import kill_at\n"
            f"sys.argv = ['experiments.train', '--embedded', '--train_size=200', '--epochs=2',"
            f" '--batch_size=50', '--output_dir={out}']\n"
            "with kill_at('state.json', 'after', exc=KeyboardInterrupt):\n"
            "    runpy.run_module('experiments.train', run_name='__main__', alter_sys=True)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    # One line, naming the exact command to rerun.
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("interrupted:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    head = "interrupted: rerun the same command to resume where it stopped: "
    assert lines[0].startswith(head)
    command = shlex.split(lines[0][len(head):])
    args = ["--embedded", "--train_size=200", "--epochs=2", "--batch_size=50",
            f"--output_dir={out}"]
    assert command[0] in ("python", sys.executable)
    assert command[1:] == ["-m", "experiments.train", *args]
    state = rundir.read_json(os.path.join(out, rundir.CHECKPOINTS, "state.json"))
    assert state["epochs_done"] == 1
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Resuming" in proc.stderr
    assert rundir.read_json(os.path.join(out, rundir.METRICS))["epochs"] == 2
