"""TensorBoard logs: training scalars per step, weight histograms and hparams (once, also
across a resume); figures and adversarial examples of the analysis scripts as images; the
scripts' output through a pipe (plain progress lines, no terminal codes)."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from faults import Killed, kill_at
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from cnnvis_tf import datasets, rundir, tblog, testing, training
from conftest import ROOT

HPARAMS = "_hparams_/session_start_info"


def _events(folder):
    acc = EventAccumulator(folder, size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def _series(acc, tag):
    """``[(step, value)]`` of a scalar tag."""
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_training_logs_steps_histograms_hparams_once_across_a_resume(tmp_path):
    data = datasets.load("mnist", embedded=True, seed=0, train_size=200, validation_split=0.1)
    run = str(tmp_path / "run")

    def build():
        return testing.tiny_cnn((28, 28, 1), 10, filters=4, fc_units=16, seed=0)

    args = {"epochs": 3, "batch_size": 16, "verbose": 0, "settings": {"model": "tiny"}}
    training.set_seed(0)
    # Killed right after epoch 2's checkpoint commit, before its logs were written.
    with kill_at("checkpoints/state.json", "after", nth=2), pytest.raises(Killed):
        training.train(run, data, build, **args)
    _, metrics = training.train(run, data, build, **args)  # resumes at epoch 2 of 3
    training.train(run, data, build, **args)  # finished: nothing trained, nothing repeated

    tb = os.path.join(run, rundir.TENSORBOARD)
    root, train, val = (_events(os.path.join(tb, s)) for s in ("", "train", "validation"))
    # Hyper-parameters: one session record for the run, with its settings.
    assert len(root.Tensors(HPARAMS)) == 1
    info = plugin_data_pb2.HParamsPluginData.FromString(
        root.SummaryMetadata(HPARAMS).plugin_data.content).session_start_info
    assert info.hparams["model"].string_value == "tiny"
    assert info.hparams["optimizer"].string_value == "adam"
    assert info.hparams["learning_rate"].number_value == pytest.approx(1e-3)
    assert info.hparams["batch_size"].number_value == 16
    assert "epochs" not in info.hparams  # may grow on a rerun: the step axis tells it
    # Final metrics once, at the number of epochs.
    assert _series(root, "test/accuracy") == [(3, pytest.approx(metrics["test/accuracy"]))]
    # Per-step scalars: the sampled steps of all three epochs, increasing, none twice,
    # equal to history_steps.csv (the resumed epoch's steps continue from its checkpoint).
    steps = _csv(os.path.join(run, rundir.HISTORY_STEPS))
    logged = _series(train, "batch_loss")
    assert [s for s, _ in logged] == [int(r["step"]) for r in steps]
    assert [s for s, _ in logged] == sorted({s for s, _ in logged})
    assert {int(r["epoch"]) for r in steps} == {0, 1, 2}
    np.testing.assert_allclose([v for _, v in logged], [float(r["loss"]) for r in steps],
                               rtol=1e-6)
    assert [s for s, _ in _series(train, "batch_accuracy")] == [s for s, _ in logged]
    # The learning rate was sampled live (epochs 0 and 2; epoch 1's logs were rebuilt from
    # the history files after the interruption, which do not record it per step).
    lr = _series(train, "batch_learning_rate")
    live = [int(r["step"]) for r in steps if r["epoch"] in ("0", "2")]
    assert [s for s, _ in lr] == live and all(v == pytest.approx(1e-3) for _, v in lr)
    # Per-epoch scalars, validation too, equal to history.csv.
    history = _csv(os.path.join(run, rundir.HISTORY))
    for acc, tag, column in ((train, "epoch_loss", "loss"), (val, "epoch_accuracy",
                                                              "val_accuracy")):
        series = _series(acc, tag)
        assert [s for s, _ in series] == [0, 1, 2]
        np.testing.assert_allclose([v for _, v in series],
                                   [float(r[column]) for r in history], rtol=1e-6)
    # Weight histograms of every weight, every epoch (epoch 1's from the checkpoint).
    kernels = [t for t in train.Tags()["tensors"] if t.endswith("/kernel")]
    assert {"conv1/kernel", "fc1/kernel", "logits/kernel"} <= set(kernels)
    for tag in kernels:
        events = train.Tensors(tag)
        assert [e.step for e in events] == [0, 1, 2]
        assert train.SummaryMetadata(tag).plugin_data.plugin_name == "histograms"
        counts = tf.make_ndarray(events[-1].tensor_proto)[:, 2]  # (left, right, count) bins
        assert counts.sum() == np.prod(
            rundir.load_model(os.path.join(run, rundir.MODEL)).get_layer(
                tag.split("/")[0]).kernel.shape)


def test_flat_hparams_types():
    flat = tblog.flat_hparams({"a": {"b": 1, "c": None}, "d": [1, 2], "e": np.float32(0.5),
                               "f": True, "epochs": 3}, exclude=("epochs",))
    assert flat == {"a.b": 1, "a.c": "null", "d": "[1, 2]", "e": 0.5, "f": True}


def test_tensorboard_dir_is_the_runs_or_the_outputs(mnist_run, tmp_path):
    assert tblog.tensorboard_dir(mnist_run["dir"], str(tmp_path)) == os.path.join(
        mnist_run["dir"], "tensorboard")
    model = os.path.join(mnist_run["dir"], rundir.MODEL)  # a model file, not a run
    assert tblog.tensorboard_dir(model, str(tmp_path)) == str(tmp_path / "tensorboard")


# ------------------------------------------------------------------------ scripts

PROGRESS = re.compile(r"^(\w+) (\d+)/(\d+) (\w+)  elapsed \d+:\d\d  ETA (\d+:\d\d|\?)")


def _script(module, *args):
    """Runs a script with its output piped (not a terminal), TensorFlow's log level left to
    the scripts."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "\x1b[" not in out and "\r" not in out and "\b" not in out
    # The TensorFlow banner: not printed (errors at most once).
    assert "oneDNN" not in out and "InitializeLog" not in out
    assert sum("cuInit" in line for line in out.splitlines()) <= 1
    return [m.groups() for m in map(PROGRESS.match, out.splitlines()) if m]


def _images(folder):
    """``{tag: number of images}`` of an image-summary folder."""
    acc = _events(folder)
    return {t: len(acc.Tensors(t)[-1].tensor_proto.string_val) - 2
            for t in acc.Tags()["tensors"]
            if acc.SummaryMetadata(t).plugin_data.plugin_name == "images"}


def test_attack_script_progress_and_images(mnist_run, tmp_path):
    out = tmp_path / "tb_lbfgs"
    lines = _script("experiments.attack", f"--model_dir={mnist_run['dir']}", "--attack=lbfgs",
                    "--num_examples=4", "--batch_size=2",
                    "--params=binary_search_steps=2,max_iterations=5", f"--output_dir={out}")
    # k/N with an ETA per example, the last line once.
    assert lines and all(g[0] == "lbfgs" and g[2] == "4" and g[3] == "examples"
                         for g in lines)
    assert lines[-1][1] == "4" and [g[1] for g in lines].count("4") == 1
    assert lines[-1][4] == "0:00"
    images = _images(os.path.join(mnist_run["dir"], "tensorboard", "attack_tb_lbfgs"))
    assert images == {"figures/examples": 1, "adversarial/clean": 4,
                      "adversarial/adversarial": 4, "adversarial/perturbation": 4}
    # The logged figure is the PNG the script wrote, pixel for pixel.
    acc = _events(os.path.join(mnist_run["dir"], "tensorboard", "attack_tb_lbfgs"))
    png = acc.Tensors("figures/examples")[-1].tensor_proto.string_val[2]
    with open(out / "figures" / "examples.png", "rb") as f:
        np.testing.assert_array_equal(tf.io.decode_png(png), tf.io.decode_png(f.read()))
    # Perturbations on one shared scale: grey is zero, the largest |delta| reaches 0 or 255.
    adv = rundir.read_adversarial(str(out / rundir.ADVERSARIAL))
    pert = np.stack([tf.io.decode_png(p).numpy() for p in
                     acc.Tensors("adversarial/perturbation")[-1].tensor_proto.string_val[2:]])
    delta = (adv["x_adv"] - adv["x"])[:4]
    assert pert.min() == 0 or pert.max() == 255
    np.testing.assert_allclose(pert[..., 0] / 255.0,
                               0.5 + delta[..., 0] / (2 * np.abs(delta).max()), atol=1 / 255)


def test_robustness_and_visualize_scripts_progress_and_images(mnist_run, tmp_path):
    lines = _script("experiments.robustness", f"--model_dirs={mnist_run['dir']}",
                    "--attack=pgd", "--eps=0.05,0.1", "--params=nb_iter=2",
                    "--num_examples=8", "--nosanity", f"--output_dir={tmp_path / 'tb_rob'}")
    # No --params eps_iter: the default step follows each level's eps (it was once taken from
    # the attack's default eps=0.3 and refused for eps=0.05).
    rec = json.load(open(os.path.join(tmp_path, "tb_rob", "config.json")))
    assert rec["params"]["attack_kwargs"]["eps_iter"] is None
    assert [(g[0], g[1], g[2], g[3]) for g in lines] == [
        ("robustness", "1", "2", "levels"), ("robustness", "2", "2", "levels")]
    assert _images(os.path.join(mnist_run["dir"], "tensorboard", "robustness_tb_rob")) == {
        "figures/accuracy_vs_linf": 1}
    lines = _script("experiments.visualize", f"--model_dir={mnist_run['dir']}",
                    "--methods=saliency,gradcam", f"--output_dir={tmp_path / 'tb_vis'}")
    assert [(g[0], g[1], g[2], g[3]) for g in lines] == [
        ("visualize", "1", "2", "methods"), ("visualize", "2", "2", "methods")]
    images = _images(os.path.join(mnist_run["dir"], "tensorboard", "visualize_tb_vis"))
    assert {"figures/saliency", "figures/gradcam"} <= set(images)
