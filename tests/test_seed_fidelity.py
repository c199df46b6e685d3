"""Seed formulations as the seeds define them (issue "Seed fidelity")."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from cnnvis_tf import datasets, models, recipes, rundir, training
from cnnvis_tf.defenses import DefenseModel
from cnnvis_tf.testing import tiny_cnn, tiny_data
from conftest import ROOT


def _smooth_loss(weighting, gamma=0.1, power=2):
    keras.utils.set_random_seed(0)
    x, y = tiny_data(32)
    model = DefenseModel(tiny_cnn(seed=0), smooth_gamma=gamma, smooth_power=power,
                         smooth_weighting=weighting)
    training.compile_model(model, keras.optimizers.SGD(0.0))
    hist = model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    return hist.history["smooth_loss"][0]


def test_smoothness_weight_is_gamma_to_the_m_by_default():
    """Seed 002's code weights the Laplacian penalty by gamma**m, not gamma."""
    seed002, lassance = _smooth_loss("seed002"), _smooth_loss("gamma")
    assert lassance > 0
    assert seed002 == pytest.approx(lassance * 0.1, rel=1e-4)  # gamma**2 / gamma
    assert DefenseModel(tiny_cnn(), smooth_gamma=0.1).smooth_weighting == "seed002"
    cfg = DefenseModel(tiny_cnn(), smooth_gamma=0.1, smooth_weighting="gamma").get_config()
    assert DefenseModel.from_config(cfg).smooth_weighting == "gamma"


def test_filter_mask_model_scores_as_trained_after_reload(tmp_path):
    """Zhang et al. keep the interpretable filter mask at inference: model.keras, reloaded
    in a fresh process, scores within 0.5 point of the in-memory trained model."""
    out = str(tmp_path / "run")
    config = recipes.TrainConfig(embedded=True, train_size=800, epochs=1, batch_size=32,
                                 filter_loss_weight=0.1)
    model, metrics = recipes.train_run(config, out)
    names = [layer.name for layer in model.layers]
    assert any(n.endswith("_mask") for n in names), names
    data = datasets.load("mnist", embedded=True)
    # As trained = with the mask on (conv2_fc500 has no dropout or batch norm, so training
    # mode differs only by the mask).
    as_trained = np.concatenate([np.asarray(model(data.x_test[i:i + 250], training=True))
                                 for i in range(0, len(data.x_test), 250)])
    in_memory = float(np.mean(as_trained.argmax(1) == data.y_test))
    code = ("import sys, numpy as np, keras, cnnvis_tf\n"
            "from cnnvis_tf import datasets\n"
            f"m = keras.models.load_model({os.path.join(out, rundir.MODEL)!r})\n"
            "d = datasets.load('mnist', embedded=True)\n"
            "print(float(np.mean(m.predict(d.x_test, verbose=0).argmax(1) == d.y_test)))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    reloaded = float(proc.stdout.strip().splitlines()[-1])
    assert abs(reloaded - in_memory) <= 0.005 and abs(reloaded - metrics["test/accuracy"]) \
        <= 0.005


def test_neuron_count_matches_sahoo_2019():
    assert models.neuron_count(models.conv2_fc500()) == 2654


def test_lr_decay_is_inverse_time_per_step():
    opt = training.make_optimizer("sgd", 0.1, lr_decay=0.01)
    sched = opt._learning_rate
    assert float(sched(0)) == pytest.approx(0.1)
    assert float(sched(100)) == pytest.approx(0.1 / (1 + 0.01 * 100))
    assert training.make_optimizer("adam", 1e-3, weight_decay=5e-4).weight_decay == 5e-4
