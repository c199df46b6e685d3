"""Tests for DeepFool, universal perturbations, one-pixel, patch, noise attacks (seed 001)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnnvis_tf import attacks, datasets, testing
from cnnvis_tf.errors import InputError


@pytest.fixture(scope="module")
def trained():
    model, x, y = testing.trained_tiny_cnn()
    return model, x[:16], y[:16]


@pytest.fixture(scope="module")
def mnist_tiny():
    """A tiny CNN briefly trained on embedded MNIST (digits are easy to perturb universally)."""
    data = datasets.load("mnist", embedded=True, seed=0)
    keras.utils.set_random_seed(0)
    model = testing.tiny_cnn((28, 28, 1), 10, filters=8, fc_units=32)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.x_train[:1000], data.y_train[:1000], epochs=2, batch_size=32, verbose=0)
    return model, data.x_test[:64], data.y_test[:64]


def _pred(model, x):
    return np.asarray(model(tf.constant(x))).argmax(1)


def _l2(x, x_adv):
    return np.linalg.norm((x_adv.astype(np.float64) - x).reshape(len(x), -1), axis=1)


def test_deepfool_fools_with_small_l2(trained):
    model, x, y = trained
    x_adv = attacks.deepfool(model, x)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.mean(_pred(model, x_adv) != _pred(model, x)) >= 0.9
    # Minimal-perturbation attack: far below an FGM step that fools as many.
    fgm = attacks.fgm_l2(model, x, 4.0 * _l2(x, x_adv).mean())
    assert _l2(x, x_adv).mean() < _l2(x, fgm).mean()


def test_cw_l2_defaults_converge(mnist_tiny):
    model, x, _ = mnist_tiny
    x = x[:8]
    x_adv = attacks.cw_l2(model, x)
    assert np.all(_pred(model, x_adv) != _pred(model, x))
    short = _l2(x, x_adv)
    long = _l2(x, attacks.cw_l2(model, x, max_iterations=400))  # twice the default
    assert abs(short.mean() - long.mean()) < 0.05 * long.mean(), (short.mean(), long.mean())


def test_universal_perturbation_in_ball_and_beats_random_noise(mnist_tiny):
    model, x, y = mnist_tiny
    v = attacks.universal_perturbation(model, x[:32], 0.25, max_passes=2)
    assert v.shape == x.shape[1:] and np.abs(v).max() <= 0.25 + 1e-6
    # Computed on 32 images, it fools held-out images more than noise of the same L-inf.
    fooled = np.mean(_pred(model, np.clip(x[32:] + v, 0, 1)) != y[32:])
    noise = attacks.gaussian_noise(model, x[32:], 0.25, norm=np.inf)
    assert fooled > np.mean(_pred(model, noise) != y[32:]) + 0.1
    x_adv = attacks.universal(model, x[:8], 0.25, max_passes=1)
    assert np.abs(x_adv - x[:8]).max() <= 0.25 + 1e-6


def test_one_pixel_finds_the_pixel_a_model_reads():
    def model_fn(t):  # class 1 iff pixel (3, 5) is bright: one pixel decides
        p = t[:, 3, 5, 0]
        return tf.stack([0.5 - p, p - 0.5], axis=1) * 10.0

    x = np.full((3, 8, 8, 1), 0.1, np.float32)
    x_adv = attacks.one_pixel(model_fn, x, pixels=1, maxiter=20, popsize=20)
    changed = (x_adv != x).reshape(3, -1).sum(axis=1)
    assert np.all(changed <= 1)
    assert np.all(_pred(model_fn, x_adv) == 1)


def test_one_pixel_changes_at_most_k_pixels(trained):
    model, x, _ = trained
    x_adv = attacks.one_pixel(model, x[:2], pixels=2, maxiter=3, popsize=10)
    assert np.all((x_adv != x[:2]).reshape(2, -1).sum(axis=1) <= 2)


def test_iterative_noise_reaches_target_and_transfers_to_other_images(trained):
    model, x, y = trained
    target = (y + 1) % 3
    x_adv = attacks.iterative_noise(model, x, y=target, step_size=0.02)
    assert np.all(_pred(model, x_adv) == target)
    noise = x_adv[:1] - x[:1]  # the seed-001 experiment: re-use one image's noise
    others = attacks.apply_noise(x[1:], noise)
    assert others.shape == x[1:].shape and others.min() >= 0 and others.max() <= 1


def test_class_from_noise_and_mse_term(trained):
    model, x, y = trained
    imgs = attacks.class_from_noise(model, [0, 1, 2], x.shape[1:], steps=80)
    assert np.all(_pred(model, imgs) == [0, 1, 2])
    like = x[y == 0][0]
    near = attacks.class_from_noise(model, [1, 2], x.shape[1:], like=like, beta=1000.0,
                                    steps=80, schedule="constant")  # seed 001's loss as is
    free = attacks.class_from_noise(model, [1, 2], x.shape[1:], steps=80)
    assert np.mean((near - like) ** 2) < np.mean((free - like) ** 2) / 4


def test_adversarial_patch_beats_random_patch(mnist_tiny):
    model, x, _ = mnist_tiny
    target = np.full(32, 3)
    p = attacks.adversarial_patch(model, x[:32], y=target, patch_size=0.4, steps=60,
                                  step_size=0.02, position=(10, 10))
    assert p.shape == (11, 11, 1) and p.min() >= 0 and p.max() <= 1
    where = np.tile([10, 10], (32, 1))
    hit = np.mean(_pred(model, attacks.apply_patch(x[32:], p, positions=where)) == 3)
    rand = np.random.default_rng(0).uniform(0, 1, p.shape).astype(np.float32)
    base = np.mean(_pred(model, attacks.apply_patch(x[32:], rand, positions=where)) == 3)
    assert hit > base + 0.3
    x_adv = attacks.patch(model, x[:4], y=target[:4], patch_size=0.4, steps=2)
    assert x_adv.shape == x[:4].shape and np.sum(np.any(x_adv != x[:4], axis=-1)) > 0


def test_gaussian_noise_has_exact_size(trained):
    model, x, _ = trained
    xm = (0.25 + 0.5 * x).astype(np.float32)  # no clipping
    np.testing.assert_allclose(_l2(xm, attacks.gaussian_noise(model, xm, 0.5)), 0.5, rtol=1e-4)
    linf = np.abs(attacks.gaussian_noise(model, xm, 0.05, norm="linf") - xm).max(axis=(1, 2, 3))
    np.testing.assert_allclose(linf, 0.05, rtol=1e-4)


FAST = {
    "bim": {"nb_iter": 2}, "pgd": {"nb_iter": 2}, "pgd_l2": {"nb_iter": 2}, "mim": {"nb_iter": 2},
    "spsa": {"nb_iter": 2, "spsa_samples": 8},
    "cw_l2": {"max_iterations": 5, "binary_search_steps": 1},
    "lbfgs": {"max_iterations": 5, "binary_search_steps": 1},
    "deepfool": {"max_iter": 3}, "universal": {"max_passes": 1, "deepfool_iter": 2},
    "one_pixel": {"maxiter": 2, "popsize": 5}, "patch": {"steps": 2},
    "iterative_noise": {"max_iter": 3},
}


@pytest.mark.parametrize("name", sorted(attacks.ATTACKS))
def test_every_registered_attack_keeps_the_contract(trained, name):
    model, x, y = trained
    x = x[:3]
    targeted = name in attacks.TARGETED_ONLY
    x_adv = attacks.ATTACKS[name](model, x, y=(y[:3] + 1) % 3 if targeted else None,
                                  targeted=targeted, **FAST.get(name, {}))
    assert isinstance(x_adv, np.ndarray) and x_adv.dtype == np.float32
    assert x_adv.shape == x.shape and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert attacks.budget_name(name) in ("eps", "snr", None)


def test_new_attacks_input_errors(trained):
    model, x, y = trained
    with pytest.raises(InputError, match="targeted"):
        attacks.deepfool(model, x, y=y, targeted=True)
    with pytest.raises(InputError, match="patch_size"):
        attacks.adversarial_patch(model, x, y=y, patch_size=1.5)
    with pytest.raises(InputError, match="position"):
        attacks.adversarial_patch(model, x, y=y, patch_size=0.5, position=(9, 0))
    with pytest.raises(InputError, match="target_fooling_rate"):
        attacks.universal_perturbation(model, x, 0.1, target_fooling_rate=2)
    with pytest.raises(InputError, match="pixels"):
        attacks.one_pixel(model, x, pixels=0)
    with pytest.raises(InputError, match="targeted"):
        attacks.iterative_noise(model, x, y=y, targeted=False)
    with pytest.raises(InputError, match=r"\[0, 2\]"):
        attacks.class_from_noise(model, [5], x.shape[1:])
