"""Tests for the one adversarial kernel (cnnvis_tf.attacks._steps) and its users:
training-time PGD/FGSM equal the public attacks, the SNR step is exact after clipping, the
kernel runs in a graph with per-example budgets, DefenseModel checks its arguments."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnnvis_tf import attacks, testing
from cnnvis_tf.attacks import _steps
from cnnvis_tf.defenses import DefenseModel
from cnnvis_tf.errors import InputError


@pytest.fixture(scope="module")
def trained():
    model, x, y = testing.trained_tiny_cnn()
    return model, x[:16], y[:16]


def _snr(x, x_adv):
    return attacks.snr_db(x, np.asarray(x_adv))


# ---------------------------------------------------------------- training == attacks


@pytest.mark.parametrize("compiled", [False, True])
def test_training_pgd_equals_attacks_pgd_for_same_seed(trained, compiled):
    model, x, y = trained
    wrapper = DefenseModel(model, adv_training="pgd", adv_eps=0.1, pgd_steps=5, seed=7)
    make = wrapper.adversarial_examples  # what train_step calls
    if compiled:  # as inside the Keras train_step: a graph
        make = tf.function(make)
    ours = np.asarray(make(tf.constant(x), tf.constant(y)))
    public = attacks.pgd(model, x, 0.1, nb_iter=5, seed=7, y=y)
    np.testing.assert_allclose(ours, public, atol=1e-6, rtol=0)
    assert np.abs(ours - x).max() <= 0.1 + 1e-6 and np.any(ours != x)


def test_training_fgsm_equals_attacks_fgsm(trained):
    model, x, y = trained
    wrapper = DefenseModel(model, adv_training="fgsm", adv_eps=0.2, seed=0)
    ours = np.asarray(tf.function(wrapper.adversarial_examples)(tf.constant(x), tf.constant(y)))
    np.testing.assert_allclose(ours, attacks.fgsm(model, x, 0.2, y=y), atol=1e-6, rtol=0)


def test_training_snr_budget_is_the_clipped_snr_convention(trained):
    model, x, y = trained
    wrapper = DefenseModel(model, adv_training="fgsm", adv_snr_db=33.0, seed=0)
    grad = _steps.loss_gradient(model, tf.constant(x), tf.constant(y))
    direction = np.sign(grad.numpy())
    eps = _steps.snr_eps(tf.constant(x), direction, 33.0).numpy()
    np.testing.assert_allclose(_snr(x, np.clip(x + eps[:, None, None, None] * direction, 0, 1)),
                               33.0, atol=0.01)
    x_adv = np.asarray(wrapper.adversarial_examples(tf.constant(x), tf.constant(y)))
    budgets = np.abs(x_adv - x).max(axis=(1, 2, 3))
    assert budgets.max() <= 2 * eps.mean() + 1e-6  # |N(0, sigma)| truncated at 2 sigma


def test_training_loop_runs_the_kernel_in_a_graph():
    keras.utils.set_random_seed(0)
    x, y = testing.tiny_data(32)
    for kwargs in ({"adv_training": "pgd", "adv_eps": 0.1, "pgd_steps": 2},
                   {"adv_training": "pgd", "adv_snr_db": 30.0, "pgd_steps": 2},
                   {"adv_training": "fgsm", "adv_snr_db": 30.0}):
        wrapper = DefenseModel(testing.tiny_cnn(), seed=0, **kwargs)
        wrapper.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        hist = wrapper.fit(x, y[:, None], batch_size=16, epochs=1, verbose=0)  # (N, 1) ids
        assert np.isfinite(hist.history["loss"]).all()


# ---------------------------------------------------------------- kernel


def test_snr_eps_equals_a_bisection_on_the_clipped_norm():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (6, 5, 5, 1))
    x[:, :2] = 0.0  # saturated pixels, as in MNIST
    d = rng.choice([-1.0, 0.0, 1.0], size=x.shape, p=[0.45, 0.1, 0.45])
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    for snr in (45.0, 33.0, 20.0, 8.0):
        eps = _steps.snr_eps(tf.constant(x), d, snr).numpy()
        target = np.linalg.norm(flat(x), axis=1) / 10 ** (snr / 20)
        lo, hi = np.zeros(len(x)), np.ones(len(x))
        for _ in range(60):  # bisection on ||clip(x + eps d) - x||_2 = target
            mid = (lo + hi) / 2
            step = np.clip(x + mid[:, None, None, None] * d, 0, 1) - x
            norm = np.linalg.norm(flat(step), axis=1)
            lo, hi = np.where(norm < target, mid, lo), np.where(norm < target, hi, mid)
        reach = np.linalg.norm(flat(np.clip(x + d, 0, 1) - x), axis=1) >= target
        np.testing.assert_allclose(eps[reach], hi[reach], rtol=1e-9)
        graph = tf.function(lambda a, s=snr: _steps.snr_eps(a, tf.constant(d, tf.float32), s))
        np.testing.assert_allclose(graph(tf.constant(x, tf.float32)).numpy(), eps, rtol=1e-5)
        unclipped = _steps.snr_eps(tf.constant(x), d, snr, match_clipped=False).numpy()
        dnorm = np.linalg.norm(flat(d), axis=1)
        expected = np.linalg.norm(flat(x), axis=1) / (10 ** (snr / 20) * dnorm)
        np.testing.assert_allclose(unclipped, expected, rtol=1e-12)
        assert np.all(eps >= unclipped - 1e-12)  # clipping only shrinks the perturbation
    # Unreachable (the box is too small): the largest useful step; zero direction: 0.
    bright = np.full((2, 4, 4, 1), 0.9)  # room 0.1 upwards: 10 dB is out of reach
    np.testing.assert_allclose(_steps.snr_eps(tf.constant(bright), np.ones_like(bright), 10.0),
                               0.1)
    assert np.all(_steps.snr_eps(tf.constant(x), 0 * d, 33.0).numpy() == 0)


def test_kernel_per_example_budgets_in_a_graph(trained):
    model, x, y = trained
    eps = np.linspace(0.02, 0.3, len(x)).astype(np.float32)

    @tf.function
    def run(x, y, eps):
        return (_steps.fgm(model, x, y, eps),
                _steps.pgd(model, x, y, eps, nb_iter=3, seed=1),
                _steps.pgd(model, x, y, 10 * eps, nb_iter=3, norm=2, seed=1))

    fgm, pgd, pgd_l2 = (np.asarray(a) for a in run(tf.constant(x), tf.constant(y), eps))
    diff = lambda a: (a.astype(np.float64) - x).reshape(len(x), -1)  # noqa: E731
    for a in (fgm, pgd):
        assert np.all(np.abs(diff(a)).max(axis=1) <= eps + 1e-6)
        assert a.min() >= 0.0 and a.max() <= 1.0
    assert np.all(np.linalg.norm(diff(pgd_l2), axis=1) <= 10 * eps * (1 + 1e-5))
    # Per-example FGM equals the scalar step example by example.
    for i in (0, len(x) - 1):
        np.testing.assert_array_equal(fgm[i], attacks.fgsm(model, x, float(eps[i]), y=y)[i])


def test_random_start_is_uniform_in_the_ball():
    x = tf.zeros((2000, 3, 3, 1))
    linf = _steps.random_start(x, 0.5, np.inf, seed=keras.random.SeedGenerator(0)).numpy()
    assert np.abs(linf).max() <= 0.5 and abs(np.abs(linf).mean() - 0.25) < 0.01
    l2 = _steps.random_start(x, 2.0, 2, seed=keras.random.SeedGenerator(0)).numpy()
    radius = np.linalg.norm(l2.reshape(len(l2), -1), axis=1)
    assert radius.max() <= 2.0 + 1e-5
    # Uniform in a 9-dimensional ball: P(r <= R/2) = 2^-9.
    assert np.mean(radius <= 1.0) < 0.01 and np.mean(radius > 1.9) > 0.3


def test_only_one_snr_eps_in_the_package():
    import pathlib

    import cnnvis_tf

    root = pathlib.Path(cnnvis_tf.__file__).parent
    defined = [p.relative_to(root).as_posix() for p in root.rglob("*.py")
               if "def snr_eps(" in p.read_text()]
    assert defined == ["attacks/_steps.py"]


# ---------------------------------------------------------------- DefenseModel arguments


@pytest.mark.parametrize("kwargs,name", [
    ({"adv_training": "fgsm", "adv_eps": float("nan")}, "adv_eps"),
    ({"adv_training": "fgsm", "adv_eps": float("inf")}, "adv_eps"),
    ({"adv_training": "fgsm", "adv_eps": -0.1}, "adv_eps"),
    ({"adv_training": "fgsm", "adv_snr_db": 0.0}, "adv_snr_db"),
    ({"adv_training": "fgsm", "adv_snr_db": -3.0}, "adv_snr_db"),
    ({"adv_training": "fgsm", "adv_snr_db": float("nan")}, "adv_snr_db"),
    ({"adv_training": "pgd", "adv_eps": 0.1, "pgd_steps": 0}, "pgd_steps"),
    ({"adv_training": "pgd", "adv_eps": 0.1, "pgd_steps": 2.5}, "pgd_steps"),
    ({"adv_training": "fgsm", "adv_eps": 0.1, "adv_ratio": -0.1}, "adv_ratio"),
    ({"adv_training": "fgsm", "adv_eps": 0.1, "adv_ratio": 1.5}, "adv_ratio"),
    ({"adv_training": "fgsm", "adv_eps": 0.1, "adv_ratio": float("nan")}, "adv_ratio"),
    ({"adv_loss_weight": float("nan")}, "adv_loss_weight"),
    ({"adv_loss_weight": -1.0}, "adv_loss_weight"),
    ({"parseval_beta": -0.1}, "parseval_beta"),
    ({"parseval_beta": float("nan")}, "parseval_beta"),
    ({"smooth_gamma": -1.0}, "smooth_gamma"),
    ({"smooth_gamma": float("nan")}, "smooth_gamma"),
    ({"smooth_power": 0}, "smooth_power"),
    ({"clip_min": 1.0, "clip_max": 0.0}, "clip_max"),
    ({"clip_max": float("inf")}, "clip_max"),
    ({"adv_training": "cw", "adv_eps": 0.1}, "adv_training"),
])
def test_defense_model_rejects_bad_hyper_parameters(kwargs, name):
    value = {**{"clip_min": 0.0, "clip_max": 1.0}, **kwargs}[name]
    message = (rf"Invalid value received for argument `{name}`\. Expected .*"
               rf"Received: {name}={value!r}")
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DefenseModel(testing.tiny_cnn(), **kwargs)


def test_defense_model_config_round_trips(tmp_path):
    wrapper = DefenseModel(testing.tiny_cnn(), adv_training="pgd", adv_eps=0.1, pgd_steps=3,
                           seed=1)
    config = wrapper.get_config()
    assert {"adv_training", "adv_ratio", "adv_eps", "adv_snr_db", "adv_loss_weight",
            "pgd_steps", "parseval_beta", "smooth_gamma", "smooth_power", "smooth_layers",
            "clip_min", "clip_max", "seed"} <= set(config)
    again = DefenseModel.from_config(config)
    assert again.get_config()["pgd_steps"] == 3 and again.adv_eps == 0.1
