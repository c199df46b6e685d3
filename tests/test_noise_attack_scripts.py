"""Seed 001's noise attacks (Sahoo 2019, section 4) from the library and experiments.attack:
images grown from noise with the beta = 1000 MSE term, iterative noise to a confidence, and
the noise re-used on other images."""

import json
import os

import keras
import numpy as np
import pytest

from cnnvis_tf import attacks, datasets, rundir
from cnnvis_tf.recipes import noise_study
from conftest import run_script


@pytest.fixture(scope="module")
def trained(mnist_run):
    run = rundir.load_run(mnist_run["dir"])
    data = datasets.load_for_run(run.config)
    return run, data


def _probs(model, x):
    return np.asarray(keras.ops.softmax(model(x)), "float64")


def test_beta_term_reaches_the_targets_and_stays_closer_than_plain(trained):
    run, data = trained
    ref, label = data.x_test[0], int(data.y_test[0])
    classes = [c for c in range(10) if c != label]
    study = noise_study.class_from_noise_study(run.model, classes, ref.shape, like=ref,
                                               beta=1000.0)
    assert study["reached"] >= 8 and study["num_targets"] == 9
    assert study["closer_than_plain"]
    assert study["mean_mse_to_reference"] < 0.5 * study["plain"]["mean_mse_to_reference"]
    # The reported confidence is the target's softmax probability of the returned image.
    p = _probs(run.model, study["images"])
    for i, row in enumerate(study["targets"]):
        assert row["confidence"] == pytest.approx(p[i, classes[i]], abs=1e-5)
        assert row["reached"] == (p[i].argmax() == classes[i])
        if row["reached"]:
            assert row["confidence"] >= 0.9 - 1e-6  # the kept iterates' confidence
        mse = np.mean((study["images"][i].astype("float64") - ref) ** 2)
        assert row["mse_to_reference"] == pytest.approx(mse, rel=1e-5)
    # Seed 001's loss with a constant beta = 1000 ends (near) the reference instead.
    const = attacks.class_from_noise(run.model, classes, ref.shape, like=ref, beta=1000.0,
                                     schedule="constant")
    assert np.mean((const - ref) ** 2) < study["mean_mse_to_reference"]
    assert np.sum(_probs(run.model, const).argmax(1) == classes) < study["reached"]


def test_iterative_noise_keeps_adding_until_the_confidence(trained):
    run, data = trained
    x, target = data.x_test[:6], np.full(6, 4)
    first = attacks.iterative_noise(run.model, x, y=target, step_size=0.01, max_iter=300)
    sure = attacks.iterative_noise(run.model, x, y=target, step_size=0.01, max_iter=300,
                                   confidence=0.99)
    assert np.all(_probs(run.model, sure)[:, 4] >= 0.99)
    assert np.all(_probs(run.model, first).argmax(1) == 4)
    l2 = [np.linalg.norm((a - x).reshape(6, -1), axis=1) for a in (first, sure)]
    assert np.all(l2[1] >= l2[0] - 1e-6) and l2[1].mean() > l2[0].mean()


def test_transfer_rate_counts_other_classes_only():
    pred = np.array([4, 4, 1, 4, 2])
    y = np.array([4, 0, 1, 3, 2])
    assert attacks.transfer_rate(pred, 4, y) == pytest.approx(2 / 4)
    assert attacks.transfer_rate(pred, 4) == pytest.approx(3 / 5)
    assert np.isnan(attacks.transfer_rate(pred[:1], 4, y[:1]))


def test_attack_script_class_from_noise_reports_every_target(mnist_run, tmp_path):
    out = str(tmp_path / "cfn")
    run_script("experiments.attack", f"--model_dir={mnist_run['dir']}",
               "--attack=class_from_noise", "--like_index=0", f"--output_dir={out}")
    result = json.load(open(os.path.join(out, "class_from_noise.json")))
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    rows = result["targets"]
    assert [r["target"] for r in rows] == [c for c in range(10) if c != result["reference_label"]]
    assert result["reached"] == sum(r["reached"] for r in rows) >= 8
    assert metrics["reached"] == result["reached"] and metrics["num_targets"] == 9
    assert metrics["success_rate"] == pytest.approx(result["reached"] / 9)
    assert result["mean_mse_to_reference"] < result["plain"]["mean_mse_to_reference"]
    assert result["attack_kwargs"]["beta"] == 1000.0
    arrays = np.load(os.path.join(out, "adversarial.npz"))
    assert np.all(arrays["pred_adv"] == [r["predicted"] for r in rows])
    assert os.path.exists(os.path.join(out, "figures", "class_from_noise.png"))


def test_attack_script_noise_reuse_from_a_source_to_a_confidence(mnist_run, tmp_path):
    out = str(tmp_path / "reuse")
    run_script("experiments.attack", f"--model_dir={mnist_run['dir']}",
               "--attack=iterative_noise", "--target_class=4", "--confidence=0.99",
               "--source_index=3", "--num_examples=10", "--params=max_iter=200",
               f"--output_dir={out}")
    reuse = json.load(open(os.path.join(out, "noise_reuse.json")))
    arrays = np.load(os.path.join(out, "adversarial.npz"))
    assert reuse["source_index"] == 3 and reuse["target"] == 4
    assert reuse["source_reached"] and reuse["source_confidence"] >= 0.99
    y_others = np.delete(arrays["y"], 3)
    pred = np.asarray(reuse["pred_noisy"])
    assert len(pred) == 9
    counted = y_others != 4
    assert reuse["num_counted"] == counted.sum()
    assert 0.0 <= reuse["transfer_rate"] <= 1.0
    assert reuse["transfer_rate"] == pytest.approx(np.mean(pred[counted] == 4))
    # --confidence reaches the attacked images too.
    model = rundir.load_run(mnist_run["dir"]).model
    p = _probs(model, arrays["x_adv"])[:, 4]
    assert np.all(p[arrays["pred_adv"] == 4] >= 0.99 - 1e-4)
