"""Seed 002's adversarial-training recipe (``adv_recipe="seed002"``), as its code defines it:
per-pixel FGSM magnitudes |clamp(N(0, sigma), +-2 sigma)|, sigma matched to the SNR once over
the data set, half of each batch adversarial, the clean half weighted 0.3."""

import json
import os

import keras
import numpy as np
import pytest

from cnnvis_tf import datasets, defenses, recipes, rundir
from cnnvis_tf.defenses import DefenseModel
from cnnvis_tf.errors import InputError
from cnnvis_tf.recipes import defense_table as dt
from cnnvis_tf.testing import tiny_cnn, tiny_data

SIGMA = 0.02


def _model(seed=0, **kwargs):
    model = DefenseModel(tiny_cnn(seed=0), adv_training="fgsm", adv_recipe="seed002",
                         adv_sigma=SIGMA, adv_snr_db=33.0, seed=seed, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_sigma_is_the_snr_matched_step_averaged_over_the_data_set():
    x = np.random.default_rng(0).uniform(0, 1, (300, 12, 12, 1)).astype("float32")
    x[:100] *= 0.1  # images of different norms: the mean of the per-image steps matters
    # Seed 002's test_adversarial_svhn.py: diff_limit = ||x|| / 10^(snr/20) * D^-0.5, averaged.
    reference = np.mean([np.linalg.norm(xi.astype("float64")) / 10 ** (33 / 20) / np.sqrt(144)
                         for xi in x])
    assert defenses.snr_sigma(x, 33) == pytest.approx(reference, rel=1e-12)
    assert defenses.snr_sigma(x, 33, batch_size=7) == pytest.approx(reference, rel=1e-12)
    # An FGSM step of that size has the target SNR on an image of the mean norm.
    norms = np.linalg.norm(x.reshape(300, -1), axis=1)
    step = reference * np.sqrt(144)
    assert 20 * np.log10(norms.mean() / step) == pytest.approx(33.0, abs=1e-5)
    with pytest.raises(InputError, match="snr_db"):
        defenses.snr_sigma(x, 0.0)


def test_per_pixel_magnitudes_are_a_clamped_absolute_gaussian():
    m = np.asarray(defenses.seed002_magnitudes((200, 28, 28, 1), SIGMA, seed=1))
    assert m.min() >= 0 and m.max() <= 2 * SIGMA * (1 + 1e-6)
    at_bound = np.mean(np.isclose(m, 2 * SIGMA))  # clamped, not redrawn: P(|Z| > 2) = 4.55%
    assert at_bound == pytest.approx(0.0455, abs=0.004)
    # E|clamp(Z, -2, 2)| = sqrt(2/pi) (1 - e^-2) + 2 P(|Z| > 2) = 0.7810
    assert m.mean() / SIGMA == pytest.approx(0.7810, abs=0.005)
    assert len(np.unique(m[0])) > 700  # one draw per pixel, not per image


def test_adversarial_examples_follow_the_gradient_sign_within_the_clamp():
    x, y = tiny_data(64)
    x = (0.2 + 0.6 * x).astype("float32")  # away from the box: no clipping
    model = _model()
    x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
    x_adv = np.asarray(model.adversarial_examples(x, y))
    x = np.asarray(x)
    delta = x_adv - x
    assert np.abs(delta).max() <= 2 * SIGMA + 1e-6
    grad = np.asarray(defenses.adversarial_training._steps.loss_gradient(
        model._logits, keras.ops.convert_to_tensor(x), y))
    moved = np.abs(delta) > 1e-7
    assert moved.mean() > 0.9
    assert np.all(np.sign(delta[moved]) == np.sign(grad[moved]))
    # Different pixels of one image move by different amounts (per-pixel magnitudes).
    assert np.std(np.abs(delta[0][moved[0]])) > 0.2 * SIGMA


def test_batch_is_half_adversarial_half_clean_with_the_seeds_weights():
    x, y = tiny_data(32)
    model = _model()
    mixed, weights, clean = (np.asarray(t) for t in model.training_batch(
        keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)))
    assert np.all(clean == (np.arange(32) >= 16))
    assert np.all(mixed[16:] == x[16:])  # the second half is clean
    changed = np.abs(mixed[:16] - x[:16]).reshape(16, -1).max(axis=1)
    assert np.all(changed > 0) and changed.max() <= 2 * SIGMA + 1e-6
    # Weights 1 (adversarial) : 0.3 (clean), normalized to mean 1.
    np.testing.assert_allclose(weights[16:] / weights[:16], 0.3, rtol=1e-6)
    assert weights.mean() == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("adv_loss_weight,clean_weight", [(None, 0.3), (2.0, 0.5)])
def test_loss_is_the_seeds_weighted_mean(adv_loss_weight, clean_weight):
    """loss = (sum CE_adv + 0.3 sum CE_clean) / (n_adv + 0.3 n_clean), by hand."""
    x, y = tiny_data(32)
    xt, yt = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
    twin, model = (_model(adv_loss_weight=adv_loss_weight) for _ in range(2))  # same seed
    for m in (twin, model):  # confident logits: per-example losses differ widely
        head = m.classifier.layers[-1]
        head.set_weights([50.0 * w for w in head.get_weights()])
    mixed = np.asarray(twin.training_batch(xt, yt)[0])  # the draw train_step makes
    logs = model.train_step((xt, yt))
    ce = np.asarray(keras.losses.sparse_categorical_crossentropy(
        y, model.classifier(mixed), from_logits=True), "float64")
    hand = (ce[:16].sum() + clean_weight * ce[16:].sum()) / (16 + clean_weight * 16)
    assert float(logs["loss"]) == pytest.approx(hand, rel=1e-5)
    assert hand != pytest.approx(ce.mean(), rel=1e-2)  # the weighting changes the number


def test_recipe_arguments_are_checked():
    base = {"adv_training": "fgsm", "adv_recipe": "seed002", "adv_snr_db": 33.0}
    with pytest.raises(InputError, match="adv_sigma"):
        DefenseModel(tiny_cnn(), **base)
    with pytest.raises(InputError, match="adv_training='fgsm'"):
        DefenseModel(tiny_cnn(), **{**base, "adv_training": "pgd", "adv_sigma": 0.01})
    with pytest.raises(InputError, match="adv_ratio must be 0.5"):
        DefenseModel(tiny_cnn(), **base, adv_sigma=0.01, adv_ratio=0.75)
    with pytest.raises(InputError, match="adv_recipe"):
        DefenseModel(tiny_cnn(), adv_training="fgsm", adv_eps=0.1, adv_recipe="kurakin")
    with pytest.raises(InputError, match="--adv_training=fgsm"):
        recipes.TrainConfig(adv_recipe="seed002", adv_training="pgd", adv_snr_db=33).validate()
    with pytest.raises(InputError, match="--adv_ratio must be 0.5"):
        recipes.TrainConfig(adv_recipe="seed002", adv_training="fgsm", adv_snr_db=33,
                            adv_ratio=0.75).validate()
    with pytest.raises(InputError, match="--adv_snr_db"):
        recipes.TrainConfig(adv_recipe="seed002", adv_training="fgsm", adv_eps=0.1).validate()
    config = _model().get_config()
    again = DefenseModel.from_config(config)
    assert (again.adv_recipe, again.adv_sigma) == ("seed002", SIGMA)
    assert again.adv_loss_weight == pytest.approx(1 / 0.3)


def test_defense_table_adv_variants_take_the_recipe():
    adv = dt.train_kwargs(dt.VARIANTS["adv_psv"], 33.0, "seed002")
    assert adv["adv_recipe"] == "seed002" and adv["adv_ratio"] == 0.5
    vanilla = dt.train_kwargs(dt.VARIANTS["vanilla"], 33.0, "seed002")
    assert vanilla["adv_recipe"] == "standard" and "adv_ratio" not in vanilla
    assert dt.run_name(dt.VARIANTS["adv"], 1, "seed002") == "adv_recipe-seed002_seed1"
    assert dt.run_name(dt.VARIANTS["smooth"], 1, "seed002") == "smooth_seed1"
    recipes.TrainConfig(**adv).validate()


def test_one_epoch_with_the_recipe_records_its_settings(tmp_path):
    out = str(tmp_path / "run")
    config = recipes.TrainConfig(embedded=True, train_size=600, epochs=1, batch_size=32,
                                 adv_training="fgsm", adv_snr_db=33.0, adv_recipe="seed002")
    _, metrics = recipes.train_run(config, out)
    assert metrics["test/accuracy"] > 0.6
    saved = json.load(open(os.path.join(out, rundir.CONFIG)))
    assert saved["settings"]["adv_recipe"] == "seed002"
    facts = saved["adversarial_training"]
    data = datasets.load("mnist", embedded=True, seed=0, train_size=600, validation_split=0.1)
    assert facts["sigma"] == pytest.approx(defenses.snr_sigma(data.x_train, 33.0), rel=1e-12)
    assert 0.005 < facts["sigma"] < 0.02  # MNIST at 33 dB: ~0.0115
    assert facts["loss_weight"] == pytest.approx(1 / 0.3) and facts["ratio"] == 0.5
    assert facts["recipe"] == "seed002" and facts["method"] == "fgsm"
