"""Randomized smoothing and CLEVER on a linear 1-pixel model with known margins."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from cnnvis_tf import certify, models, recipes
from cnnvis_tf.errors import InputError

SIGMA = 0.25


def linear(z):
    """Class 1 iff the single pixel exceeds 0.5: logits 10 (x - 0.5) * [-1, 1]."""
    v = tf.reshape(z, [-1, 1]) - 0.5
    return tf.concat([-10.0 * v, 10.0 * v], axis=1)


def _x(values):
    return np.asarray(values, np.float32).reshape(-1, 1, 1, 1)


def test_certify_matches_hand_computed_clopper_pearson():
    smooth = certify.Smoothed(linear, 2, SIGMA, batch_size=10_000, seed=0)
    pred, radius, p_lower = smooth.certify(_x([0.8]), n0=100, n=100_000, alpha=0.001)
    again = certify.Smoothed(linear, 2, SIGMA, batch_size=10_000, seed=0)
    again.counts(_x([0.8]), 100)  # the same draws: n0 first, then n
    n_a = int(again.counts(_x([0.8]), 100_000)[0, 1])
    # exact p_A = Phi(0.3 / sigma); the true radius of the smoothed linear model is 0.3
    assert abs(n_a / 100_000 - stats.norm.cdf(0.3 / SIGMA)) < 0.005
    low = stats.binomtest(n_a, 100_000).proportion_ci(0.998, method="exact").low
    assert p_lower[0] == pytest.approx(low, rel=1e-9)
    assert radius[0] == pytest.approx(SIGMA * stats.norm.ppf(low), rel=1e-9)
    assert pred[0] == 1 and 0.28 < radius[0] < 0.3


def test_certified_accuracy_decreases_and_abstentions_are_counted():
    x = _x([0.5, 0.5, 0.55, 0.7, 0.9, 0.1, 0.35])
    y = np.array([1, 0, 1, 1, 1, 0, 0])
    smooth = certify.Smoothed(linear, 2, SIGMA, seed=1)
    pred, radius, _ = smooth.certify(x, n0=100, n=2000, alpha=0.001)
    assert np.sum(pred == certify.ABSTAIN) >= 2  # the two points on the boundary
    assert np.all(radius[pred == certify.ABSTAIN] == -1)
    radii = [0.0, 0.1, 0.2, 0.3, 0.5]
    acc = certify.certified_accuracy(pred, radius, y, radii)
    assert acc == sorted(acc, reverse=True) and acc[0] > acc[-1]
    assert smooth.predict(_x([0.5]), n=1000)[0] == certify.ABSTAIN
    assert smooth.predict(_x([0.95]), n=1000)[0] == 1
    with pytest.raises(InputError, match="alpha"):
        smooth.certify(x, alpha=1.5)


def test_clever_of_a_linear_model_is_its_margin():
    scores = certify.clever(linear, _x([0.8, 0.3]), norm=2, nb_batch=5, batch_size=20)
    np.testing.assert_allclose(scores, [0.3, 0.2], rtol=1e-4)
    scores = certify.clever(linear, _x([0.8]), norm=np.inf, radius=0.1, nb_batch=5,
                            batch_size=20)
    np.testing.assert_allclose(scores, [0.1])  # capped at the sampling radius


def test_noise_sigma_training_option():
    assert recipes.TrainConfig(noise_sigma=0.25).validate().noise_sigma == 0.25
    with pytest.raises(InputError, match="noise_sigma"):
        recipes.TrainConfig(noise_sigma=-1.0).validate()
    model = models.add_input_noise(models.conv2_fc500(), 0.25, seed=0)
    x = np.full((2, 28, 28, 1), 0.5, np.float32)
    np.testing.assert_array_equal(model(x), model(x))  # inference: no noise
    assert not np.allclose(model(x, training=True), model(x, training=True))
    assert any(isinstance(layer, keras.layers.GaussianNoise) for layer in model.layers)
