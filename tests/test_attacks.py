"""Tests for cnnvis_tf.attacks: budgets, clip box, cleverhans parity, targeting, CW, L-BFGS."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method as ch_fgm
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent
from cleverhans.tf2.utils import clip_eta as ch_clip_eta

from cnnvis_tf import attacks, testing
from cnnvis_tf.attacks.projected_gradient_descent import default_step_size
from cnnvis_tf.errors import InputError

TOL = 1e-6


@pytest.fixture(scope="module")
def trained():
    model, x, y = testing.trained_tiny_cnn()
    return model, x[:16], y[:16]


def _norms(x, x_adv):
    d = (x_adv.astype(np.float64) - x).reshape(len(x), -1)
    return np.abs(d).max(axis=1), np.linalg.norm(d, axis=1)


BUDGETED = [
    ("fgsm", {"eps": 0.2}, np.inf),
    ("fgm_l2", {"eps": 1.5}, 2),
    ("bim", {"eps": 0.2, "nb_iter": 5}, np.inf),
    ("bim", {"eps": 1.5, "nb_iter": 5, "norm": 2}, 2),
    ("pgd", {"eps": 0.2, "nb_iter": 5}, np.inf),
    ("pgd_l2", {"eps": 1.5, "nb_iter": 5}, 2),
    ("mim", {"eps": 0.2, "nb_iter": 5}, np.inf),
    ("mim", {"eps": 1.5, "nb_iter": 5, "norm": 2}, 2),
    ("spsa", {"eps": 0.2, "nb_iter": 3, "spsa_samples": 16}, np.inf),
]


@pytest.mark.parametrize("name,kwargs,norm", BUDGETED)
def test_attack_within_budget_and_box(trained, name, kwargs, norm):
    model, x, y = trained
    x_adv = attacks.ATTACKS[name](model, x[:6], y=y[:6], **kwargs)
    assert x_adv.dtype == np.float32 and x_adv.shape == x[:6].shape
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    linf, l2 = _norms(x[:6], x_adv)
    bound = linf if norm == np.inf else l2
    assert np.all(bound <= kwargs["eps"] * (1 + 1e-5) + TOL)
    assert np.any(bound > 0)


def test_fgsm_equals_cleverhans(trained):
    model, x, y = trained
    ours = attacks.fgsm(model, x, 0.3)
    theirs = ch_fgm(model, tf.constant(x), 0.3, np.inf, clip_min=0.0, clip_max=1.0).numpy()
    np.testing.assert_array_equal(ours, theirs)


def test_pgd_without_random_start_equals_cleverhans(trained):
    model, x, y = trained
    ours = attacks.pgd(model, x, 0.3, eps_iter=0.05, nb_iter=5, rand_init=False)
    theirs = projected_gradient_descent(
        model, tf.constant(x), 0.3, 0.05, 5, np.inf, clip_min=0.0, clip_max=1.0,
        rand_init=False,
    ).numpy()
    np.testing.assert_array_equal(ours, theirs)


def test_pgd_random_start_is_seeded_and_followed_by_cleverhans_steps(trained):
    model, x, y = trained
    ours = attacks.pgd(model, x, 0.3, eps_iter=0.05, nb_iter=5, seed=7)
    np.testing.assert_array_equal(ours, attacks.pgd(model, x, 0.3, eps_iter=0.05, nb_iter=5,
                                                    seed=7))
    assert not np.array_equal(ours, attacks.pgd(model, x, 0.3, eps_iter=0.05, nb_iter=5, seed=8))
    # Reference: the uniform L-inf start drawn from SeedGenerator(7), then cleverhans' PGD
    # iteration (its FGM step, clip_eta projection and clipping) run eagerly.
    xt = tf.constant(x)
    start = 0.3 * keras.random.uniform(xt.shape, -1.0, 1.0, seed=keras.random.SeedGenerator(7))
    x_adv = tf.clip_by_value(xt + ch_clip_eta(start, np.inf, 0.3), 0.0, 1.0)
    labels = model(xt).numpy().argmax(1)
    for _ in range(5):
        x_adv = ch_fgm(model, x_adv, 0.05, np.inf, clip_min=0.0, clip_max=1.0, y=labels)
        x_adv = tf.clip_by_value(xt + ch_clip_eta(x_adv - xt, np.inf, 0.3), 0.0, 1.0)
    np.testing.assert_allclose(ours, x_adv.numpy(), atol=1e-6)


def test_pgd_defaults_are_40_steps_with_capped_step():
    params = inspect.signature(attacks.projected_gradient_descent).parameters
    assert params["nb_iter"].default == 40
    assert default_step_size(0.1, 40) == pytest.approx(0.00625)
    assert default_step_size(0.1, 2) == 0.1  # 2.5 eps / 2 would overshoot the ball


def test_labels_of_shape_n_by_1_are_class_ids(trained):
    model, x, y = trained
    column = y[:, None]
    for name, kwargs in [("fgsm", {"eps": 0.2}), ("pgd", {"eps": 0.2, "nb_iter": 3, "seed": 0}),
                         ("snr_fgsm", {"snr": 33.0}), ("mim", {"eps": 0.2, "nb_iter": 3})]:
        fn = attacks.ATTACKS[name]
        np.testing.assert_array_equal(fn(model, x, y=column, **kwargs), fn(model, x, y=y, **kwargs))


def test_fgsm_lowers_accuracy_and_untargeted_uses_prediction(trained):
    model, x, y = trained
    x_adv = attacks.fgsm(model, x, 0.5)
    assert np.mean(model(x_adv).numpy().argmax(1) == y) < 0.5


@pytest.mark.parametrize("name,kwargs", [
    ("pgd", {"eps": 0.6, "nb_iter": 20}),
    ("bim", {"eps": 0.6, "nb_iter": 20}),
    ("mim", {"eps": 0.6, "nb_iter": 20}),
    ("cw_l2", {"max_iterations": 100, "binary_search_steps": 4}),
])
def test_targeted_attacks_hit_target(trained, name, kwargs):
    model, x, y = trained
    target = (y + 1) % 3
    x_adv = attacks.ATTACKS[name](model, x, y=target, targeted=True, **kwargs)
    assert np.mean(model(x_adv).numpy().argmax(1) == target) >= 0.9


@pytest.mark.parametrize("channels", [1, 3])
def test_cw_l2_channels_and_several_batches(channels):
    model, x, y = testing.trained_tiny_cnn(input_shape=(12, 12, channels), epochs=6)
    x, y = x[:10], y[:10]
    kwargs = {"max_iterations": 50, "binary_search_steps": 3, "batch_size": 4,
              "initial_const": 1.0, "learning_rate": 0.1}
    for _ in range(2):  # a second call must work too (cleverhans' does not)
        x_adv = attacks.cw_l2(model, x, **kwargs)
        assert x_adv.shape == x.shape and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
        pred = model(x_adv).numpy().argmax(1)
        clean = model(x).numpy().argmax(1)
        assert np.mean(pred != clean) >= 0.9
        # Unsuccessful examples are returned unchanged; successful ones moved.
        _, l2 = _norms(x, x_adv)
        assert np.all(l2[pred != clean] > 0) and np.all(l2[pred == clean] == 0)


def test_lbfgs_reaches_target_with_less_l2_than_fgsm(trained):
    model, x, y = trained
    x, y = x[:12], y[:12]
    target = (y + 1) % 3
    x_adv = attacks.lbfgs(model, x, y=target, binary_search_steps=5, max_iterations=60)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    hit = model(x_adv).numpy().argmax(1) == target
    assert hit.mean() >= 0.95
    _, l2_lbfgs = _norms(x, x_adv)
    # Smallest targeted-FGSM step (on a grid) that reaches the target, per example.
    l2_fgsm = np.full(len(x), np.inf)
    for eps in np.linspace(0.02, 1.0, 50)[::-1]:
        xf = attacks.fgsm(model, x, eps, y=target, targeted=True)
        ok = model(xf).numpy().argmax(1) == target
        l2_fgsm[ok] = _norms(x, xf)[1][ok]
    both = hit & np.isfinite(l2_fgsm)
    assert both.sum() >= len(x) // 2
    assert l2_lbfgs[both].mean() < l2_fgsm[both].mean()


def test_snr_fgsm_hits_requested_snr_when_no_clipping():
    model, x, _ = testing.trained_tiny_cnn(epochs=2)
    x = (0.25 + 0.5 * x[:20]).astype(np.float32)  # far from 0 and 1: clipping never binds
    for snr in (50.0, 40.0, 33.0):
        achieved = attacks.snr_db(x, attacks.snr_fgsm(model, x, snr))
        np.testing.assert_allclose(achieved, snr, atol=0.01)


def test_snr_fgsm_clipping_only_raises_snr(trained):
    model, x, _ = trained
    unmatched = attacks.snr_db(x, attacks.snr_fgsm(model, x, 33.0, match_clipped=False))
    assert np.all(unmatched >= 33.0 - 0.01) and unmatched.max() > 33.05  # clipping binds here
    x_adv = attacks.snr_fgsm(model, x, 33.0)  # default: step raised until the clipped
    np.testing.assert_allclose(attacks.snr_db(x, x_adv), 33.0, atol=0.01)  # SNR matches
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    with pytest.raises(InputError, match="snr"):
        attacks.snr_fgsm(model, x, 0.0)


def test_probability_model_wrapped_on_request():
    model = testing.tiny_cnn()  # untrained: softmax not saturated, gradients comparable
    x, _ = testing.tiny_data(16)
    x_adv = attacks.fgsm(lambda t: tf.nn.softmax(model(t)), x, 0.1, from_probabilities=True)
    same = np.abs(x_adv - attacks.fgsm(model, x, 0.1)) < 1e-6
    assert same.mean() > 0.99
