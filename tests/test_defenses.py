"""Tests for cnnvis_tf.defenses: adversarial training, selective dropout, detection,
input reconstruction."""

import math

import keras
import numpy as np
import pytest

from cnnvis_tf.attacks import _steps, fgsm, pgd
from cnnvis_tf.defenses import (
    AdversarialDetector,
    DefenseModel,
    InputReconstruction,
    SelectiveDropout,
    classifier_of,
    make_defended,
    num_selected,
    p_schedule,
    penultimate_layer,
    truncated_normal_eps,
)
from cnnvis_tf.errors import InputError
from cnnvis_tf.layers import ParsevalConstraint, parseval_deviation
from cnnvis_tf.testing import tiny_cnn, tiny_data, trained_tiny_cnn

EPS = 0.3


@pytest.fixture(scope="module")
def trained():
    model, x, y = trained_tiny_cnn()
    x_adv = fgsm(model, x, EPS, y=y)
    return model, x, y, x_adv


def _accuracy(model, x, y):
    return float(np.mean(model.predict(x, verbose=0).argmax(1) == y))


def _train(epochs=8, **kwargs):
    keras.utils.set_random_seed(0)
    classifier = tiny_cnn()
    wrapper = DefenseModel(classifier, seed=0, **kwargs)
    wrapper.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x, y = tiny_data(192)
    hist = wrapper.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    return wrapper, hist.history


# ---------------------------------------------------------------- adversarial training


def test_adversarial_training_raises_fgsm_accuracy_over_vanilla():
    x_test, y_test = tiny_data(192, seed=1)
    accs = {}
    for name, kwargs in {"vanilla": {}, "adv": {"adv_training": "fgsm", "adv_eps": EPS}}.items():
        wrapper, _ = _train(**kwargs)
        model = wrapper.classifier
        x_adv = fgsm(model, x_test, EPS, y=y_test)
        accs[name] = (_accuracy(model, x_test, y_test), _accuracy(model, x_adv, y_test))
    assert accs["adv"][0] > 0.9  # clean accuracy kept
    assert accs["adv"][1] > accs["vanilla"][1] + 0.2, accs


def test_combined_pgd_snr_parseval_smoothness_trains_and_round_trips(tmp_path):
    wrapper, hist = _train(
        epochs=2,
        adv_training="pgd",
        adv_snr_db=20.0,
        pgd_steps=2,
        parseval_beta=0.1,
        smooth_gamma=0.01,
        smooth_power=2,
        smooth_layers=["conv1_relu", "conv2_relu", "fc1_relu"],
    )
    assert {"loss", "accuracy", "smooth_loss"} <= set(hist)
    assert np.isfinite(hist["loss"]).all() and hist["smooth_loss"][-1] > 0
    conv = wrapper.classifier.get_layer("conv1")
    assert isinstance(conv.kernel_constraint, ParsevalConstraint)
    initial = parseval_deviation(tiny_cnn().get_layer("conv1").kernel)
    assert parseval_deviation(conv.kernel) < 0.7 * initial
    path = str(tmp_path / "wrapper.keras")
    wrapper.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_config()["adv_snr_db"] == 20.0
    x, _ = tiny_data(8, seed=3)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), wrapper.predict(x, verbose=0))
    plain = str(tmp_path / "classifier.keras")
    wrapper.classifier.save(plain)
    assert type(keras.models.load_model(plain)).__name__ == "Functional"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"adv_training": "cw", "adv_eps": 0.1}, "`adv_training`"),
        ({"adv_training": "fgsm", "adv_eps": 0.1, "adv_ratio": 2.0}, "`adv_ratio`"),
        ({"adv_training": "fgsm"}, "exactly one of"),
        ({"adv_training": "fgsm", "adv_eps": 0.1, "adv_snr_db": 30}, "exactly one of"),
        ({"smooth_gamma": -1.0}, "`smooth_gamma`"),
        ({"smooth_gamma": 0.1, "smooth_layers": ["nope", "fc1_relu"]}, "Unknown layer"),
    ],
)
def test_defense_model_rejects_bad_arguments(kwargs, match):
    with pytest.raises(InputError, match=match):
        DefenseModel(tiny_cnn(), **kwargs)


def test_defense_model_saved_after_fit_without_validation_keeps_optimizer_state(tmp_path):
    """Regression: ``fit`` without validation data never calls the wrapper, which stayed
    unbuilt; Keras then skipped building the optimizer on load and dropped its state."""
    keras.utils.set_random_seed(0)
    wrapper = DefenseModel(tiny_cnn(), adv_training="pgd", adv_eps=0.1, pgd_steps=2, seed=0)
    wrapper.compile(keras.optimizers.Adam(1e-2),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = tiny_data(32)
    wrapper.fit(x, y, batch_size=16, epochs=1, verbose=0)  # no validation_data
    path = str(tmp_path / "wrapper.keras")
    wrapper.save(path)
    loaded = keras.models.load_model(path)
    assert int(loaded.optimizer.iterations) == int(wrapper.optimizer.iterations) == 2
    saved = {v.path: np.asarray(v) for v in wrapper.optimizer.variables}
    restored = {v.path: np.asarray(v) for v in loaded.optimizer.variables}
    assert saved.keys() == restored.keys() and len(saved) > 2  # moments, not just counters
    for key, value in saved.items():
        np.testing.assert_array_equal(restored[key], value, err_msg=key)
    # Training resumes from the same state: one more identical step on both.
    for model in (wrapper, loaded):
        model.fit(x[:16], y[:16], batch_size=16, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(wrapper.classifier.weights, loaded.classifier.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_snr_eps_gives_the_target_snr_and_truncated_budgets():
    x = np.random.default_rng(0).uniform(0.2, 0.8, (5, 6, 6, 1)).astype("float32")
    sign = np.sign(np.random.default_rng(1).normal(size=x.shape)).astype("float32")
    eps = np.asarray(_steps.snr_eps(x, sign, 33.0, match_clipped=False))
    delta = eps[:, None, None, None] * sign
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    snr = 20 * np.log10(np.linalg.norm(flat(x), axis=1) / np.linalg.norm(flat(delta), axis=1))
    np.testing.assert_allclose(snr, 33.0, rtol=1e-4)
    draws = np.asarray(truncated_normal_eps(0.05, 2000, seed=0))
    assert draws.min() >= 0 and draws.max() <= 0.1 + 1e-6
    half_normal_mean = math.sqrt(2 / math.pi) * (1 - math.exp(-2)) / math.erf(math.sqrt(2))
    assert abs(draws.mean() - 0.05 * half_normal_mean) < 0.003


def test_local_attacks_respect_budget_and_range(trained):
    model, x, y, _ = trained
    for x_adv in (
        fgsm(model, x[:16], 0.1, y=y[:16]),
        pgd(model, x[:16], 0.1, nb_iter=3, seed=0, y=y[:16]),
    ):
        x_adv = np.asarray(x_adv)
        assert np.abs(x_adv - x[:16]).max() <= 0.1 + 1e-6
        assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_make_defended_returns_plain_or_wrapped_models():
    plain = tiny_cnn()
    assert make_defended(plain, adv_training="none") is plain
    assert classifier_of(plain) is plain
    masked = make_defended(tiny_cnn(), filter_loss_weight=0.5)
    assert "conv2_relu_mask" in [layer.name for layer in masked.layers]
    wrapped = make_defended(
        tiny_cnn(),
        adv_training="fgsm",
        adv_eps=0.1,
        parseval_beta=0.01,
        smooth_gamma=0.01,
        smooth_layers="conv1_relu, fc1_relu",
        filter_loss_weight=0.5,
    )
    assert isinstance(wrapped, DefenseModel) and wrapped.smooth_layers == [
        "conv1_relu",
        "fc1_relu",
    ]
    inner = classifier_of(wrapped)
    assert "conv2_relu_mask" in [layer.name for layer in inner.layers]
    x, y = tiny_data(32)
    wrapped.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert np.isfinite(wrapped.fit(x, y, batch_size=16, verbose=0).history["loss"]).all()
    with pytest.raises(InputError, match="`filter_loss_weight`"):
        make_defended(tiny_cnn(), filter_loss_weight=-1.0)


# ---------------------------------------------------------------- selective dropout


def test_p_schedule_and_selection_count():
    assert p_schedule(0, 0.2, 0.5) == pytest.approx(0.2)
    assert p_schedule(3, 0.2, 0.5) == pytest.approx(1 - math.exp(-1.5) + 0.2 * math.exp(-1.5))
    assert p_schedule(10**6, 0.2, 0.5) == pytest.approx(1.0)
    assert num_selected(0.2, 16) == 4 and num_selected(0.21, 16) == 4
    assert num_selected(0.26, 16) == 5 and num_selected(1.0, 16) == 16
    assert num_selected(0.7, 10) == 7  # no float round-off surprise


@pytest.mark.parametrize("layer_name", ["fc1", "conv2"])
def test_selective_dropout_updates_only_selected_units(trained, layer_name):
    model, x, y, x_adv = trained
    model = keras.models.clone_model(model)
    model.set_weights(trained[0].get_weights())
    layer = model.get_layer(layer_name)
    sd = SelectiveDropout(
        model, layer_name, p0=0.25, alpha=0.3, optimizer=keras.optimizers.Adam(1e-2)
    )
    before = [
        np.array(layer.kernel),
        np.array(layer.bias),
        np.array(model.get_layer("conv1").kernel),
    ]
    out = sd.train_step(x[:32], x_adv[:32], y[:32])
    sel = out["selected"]
    assert out["num_selected"] == sel.sum() == math.ceil(0.25 * sel.size)
    kernel, bias = np.array(layer.kernel), np.array(layer.bias)
    np.testing.assert_array_equal(kernel[..., ~sel], before[0][..., ~sel])
    np.testing.assert_array_equal(bias[~sel], before[1][~sel])
    assert np.abs(kernel[..., sel] - before[0][..., sel]).max() > 0
    assert np.abs(np.array(model.get_layer("conv1").kernel) - before[2]).max() > 0
    # a second step (Adam momentum now non-zero) still leaves unselected units untouched
    kernel1 = kernel.copy()
    sel2 = sd.train_step(x[32:64], x_adv[32:64], y[32:64])["selected"]
    frozen = ~sel2
    np.testing.assert_array_equal(np.array(layer.kernel)[..., frozen], kernel1[..., frozen])


def test_selective_dropout_follows_schedule_and_learns(trained):
    model, x, y, x_adv = trained
    model = keras.models.clone_model(model)
    model.set_weights(trained[0].get_weights())
    sd = SelectiveDropout(model, "fc1", p0=0.2, alpha=0.25, optimizer=keras.optimizers.Adam(1e-2))
    hist = sd.fit(x, x_adv, y, epochs=2, batch_size=32)
    assert len(hist["p"]) == 12
    for t, (p, k) in enumerate(zip(hist["p"], hist["num_selected"])):
        assert p == pytest.approx(1 - math.exp(-0.25 * t) + 0.2 * math.exp(-0.25 * t))
        assert k == math.ceil(p * 16 - 1e-9)
    assert _accuracy(model, x_adv, y) > _accuracy(trained[0], x_adv, y)
    assert _accuracy(model, x, y) > 0.9


def test_selective_dropout_control_trains_every_unit_and_rejects_bad_args(trained):
    model, x, y, x_adv = trained
    model = keras.models.clone_model(model)
    model.set_weights(trained[0].get_weights())
    sd = SelectiveDropout(model, "fc1", p0=1.0, train_other_layers=False)
    conv_before = np.array(model.get_layer("conv2").kernel)
    bias_before = np.array(model.get_layer("fc1").bias)
    out = sd.train_step(x[:32], x_adv[:32], y[:32])
    assert out["selected"].all() and out["p"] == 1.0
    np.testing.assert_array_equal(np.array(model.get_layer("conv2").kernel), conv_before)
    assert (np.array(model.get_layer("fc1").bias) != bias_before).mean() > 0.5
    with pytest.raises(InputError, match="`layer_name`"):
        SelectiveDropout(model, "pool1")
    with pytest.raises(InputError, match="`p0`"):
        SelectiveDropout(model, "fc1", p0=0.0)


# ---------------------------------------------------------------- reactive defenses


def test_detector_reports_detection_and_false_positive_rates(trained, tmp_path):
    model, x, y, x_adv = trained
    assert penultimate_layer(model) == "fc1_relu"
    detector = AdversarialDetector(model, seed=0)
    detector.fit(x[:128], x_adv[:128], epochs=20)
    report = detector.evaluate(x[128:], x_adv[128:])
    assert set(report) >= {"detection_rate", "false_positive_rate", "accuracy"}
    assert report["detection_rate"] > 0.8 and report["false_positive_rate"] < 0.2, report
    pipeline = detector.detection_model()
    path = str(tmp_path / "detector.keras")
    pipeline.save(path)
    probs = 1 / (1 + np.exp(-keras.models.load_model(path).predict(x_adv[128:], verbose=0)[:, 0]))
    np.testing.assert_allclose(probs, detector.predict_proba(x_adv[128:]), rtol=1e-4, atol=1e-5)


def test_input_reconstruction_defended_model(trained, tmp_path):
    model, x, y, x_adv = trained
    defense = InputReconstruction(model, seed=0)
    hist = defense.fit(x, x_adv, epochs=8, batch_size=32)
    assert hist["loss"][-1] < hist["loss"][0]
    recon = defense.reconstruct(x_adv)
    assert recon.shape == x.shape and recon.min() >= 0.0 and recon.max() <= 1.0
    defended = defense.defended_model()
    assert _accuracy(defended, x_adv, y) > _accuracy(model, x_adv, y)
    assert _accuracy(defended, x, y) > 0.9
    path = str(tmp_path / "defended.keras")
    defended.save(path)
    np.testing.assert_allclose(
        keras.models.load_model(path).predict(x[:8], verbose=0),
        defended.predict(x[:8], verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )
