"""APGD, FAB, Square and AutoAttack on a tiny trained CNN (4 classes, 64 images)."""

import numpy as np
import pytest
import tensorflow as tf

from cnnvis_tf import attacks, evaluation, testing
from cnnvis_tf.attacks.apgd import checkpoints
from cnnvis_tf.attacks.autoattack import run_checks
from cnnvis_tf.errors import InputError

EPS = 0.2
FAST = {"nb_iter": 20, "n_queries": 200, "n_target_classes": 3}


@pytest.fixture(scope="module")
def tiny():
    model, x, y = testing.trained_tiny_cnn(num_classes=4, epochs=8)
    return model, x[:64], y[:64]


def _acc(model_fn, x, y):
    return float(np.mean(evaluation.predict_labels(model_fn, x) == y))


def test_checkpoints_follow_the_reference_schedule():
    # p: 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (step shrinks by 0.03, at least 0.06)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_autoattack_at_most_its_components_at_most_pgd(tiny):
    model, x, y = tiny
    x_adv, report = attacks.autoattack(model, x, EPS, y=y, seed=0, return_report=True, **FAST)
    aa = _acc(model, x_adv, y)
    assert abs(aa - report["robust_accuracy"]) < 1e-9
    assert np.abs(x_adv - x).max() <= EPS + 1e-6
    parts = {
        "apgd_ce": attacks.apgd_ce(model, x, EPS, y=y, seed=0, nb_iter=20),
        "apgd_t": attacks.apgd_t(model, x, EPS, y=y, seed=0, nb_iter=20, n_target_classes=3),
        "fab_t": attacks.fab(model, x, EPS, y=y, seed=0, nb_iter=20, n_target_classes=3),
        "square": attacks.square(model, x, EPS, y=y, seed=0, n_queries=200),
    }
    components = {k: _acc(model, v, y) for k, v in parts.items()}
    pgd40 = _acc(model, attacks.pgd(model, x, EPS, y=y, seed=0, nb_iter=40), y)
    assert aa <= min(components.values()) <= pgd40, (aa, components, pgd40)
    accs = list(report["robust_accuracy_by_attack"].values())
    assert accs == sorted(accs, reverse=True)  # each attack only adds broken points
    assert list(report["robust_accuracy_by_attack"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert not report["checks"]["messages"]


def test_apgd_ce_not_weaker_than_pgd_at_equal_iterations(tiny):
    model, x, y = tiny
    for eps in (0.15, 0.3):
        apgd = _acc(model, attacks.apgd_ce(model, x, eps, y=y, seed=1, nb_iter=20), y)
        pgd = _acc(model, attacks.pgd(model, x, eps, y=y, seed=1, nb_iter=20), y)
        assert apgd <= pgd + 1.0 / len(x)


def test_apgd_l2_and_seeded(tiny):
    model, x, y = tiny
    a = attacks.apgd_ce(model, x[:16], 1.0, y=y[:16], norm=2, seed=3, nb_iter=10)
    b = attacks.apgd_ce(model, x[:16], 1.0, y=y[:16], norm=2, seed=3, nb_iter=10)
    np.testing.assert_array_equal(a, b)
    assert np.sqrt(((a - x[:16]) ** 2).sum(axis=(1, 2, 3))).max() <= 1.0 + 1e-4
    assert 0.0 <= a.min() and a.max() <= 1.0


def test_square_needs_no_gradient(tiny):
    model, x, y = tiny

    def numpy_only(z):  # no gradient can flow through numpy
        return model(np.asarray(z)).numpy()

    x_adv, queries = attacks.square(numpy_only, x, EPS, y=y, seed=0, n_queries=300,
                                    return_queries=True)
    assert np.abs(x_adv - x).max() <= EPS + 1e-6
    fgsm = _acc(model, attacks.fgsm(model, x, EPS, y=y), y)
    assert _acc(model, x_adv, y) <= fgsm - 0.15
    assert queries.min() >= 1 and queries.max() <= 300


def test_gradient_masking_trips_the_checks(tiny):
    model, x, y = tiny

    def scaled(z):  # logits x 1e4: the softmax saturates, CE gradients underflow to zero
        return model(z) * 1e4

    _, report = attacks.autoattack(scaled, x, EPS, y=y, seed=0, return_report=True,
                                   attacks_to_run=("apgd-ce", "square"), nb_iter=20,
                                   n_queries=300)
    checks = report["checks"]
    assert checks["zero_gradients"] and checks["zero_gradient_fraction"] > 0.5
    assert checks["square_stronger"]
    probs = run_checks(lambda z: tf.nn.softmax(model(z)), tf.constant(x), tf.constant(y),
                       np.asarray(model(x)))
    assert probs["probability_outputs"] is False  # the caller passes probabilities=...
    _, report = attacks.autoattack(lambda z: tf.nn.softmax(model(z)), x[:16], EPS, y=y[:16],
                                   return_report=True, attacks_to_run=("apgd-ce",),
                                   nb_iter=5)
    assert report["checks"]["probability_outputs"]
    assert any("probabilities" in m for m in report["checks"]["messages"])


def test_too_few_classes_is_flagged():
    model, x, y = testing.trained_tiny_cnn(num_classes=3, epochs=2)
    checks = run_checks(model, tf.constant(x[:8]), tf.constant(y[:8]), np.asarray(model(x[:8])))
    assert checks["too_few_classes"]


def test_randomized_model_detected_and_eot_beats_plain(tiny):
    model, x, y = tiny

    def noisy(z):
        return model(z + tf.random.normal(tf.shape(z), stddev=0.3))

    def expected_acc(x_adv):
        return np.mean([_acc(noisy, x_adv, y) for _ in range(30)])

    checks = run_checks(noisy, tf.constant(x), tf.constant(y), np.asarray(model(x)))
    assert checks["randomized"] and not checks["dynamic"]
    plain = attacks.apgd_ce(noisy, x, 0.15, y=y, seed=0, nb_iter=10)
    x_rand, report = attacks.autoattack(noisy, x, 0.15, y=y, version="rand", seed=0,
                                        nb_iter=10, attacks_to_run=("apgd-ce",),
                                        return_report=True)
    assert report["checks"]["randomized"]
    assert expected_acc(x_rand) < expected_acc(plain) - 0.03


def test_state_file_resumes(tiny, tmp_path):
    model, x, y = tiny
    path = str(tmp_path / "aa_state.npz")
    kw = dict(y=y[:16], seed=0, nb_iter=5, attacks_to_run=("apgd-ce", "apgd-t"),
              n_target_classes=2, state_path=path, return_report=True)
    a, rep_a = attacks.autoattack(model, x[:16], EPS, **kw)
    b, rep_b = attacks.autoattack(model, x[:16], EPS, **kw)  # everything is done: no attack
    np.testing.assert_array_equal(a, b)
    assert rep_a["robust_accuracy_by_attack"] == rep_b["robust_accuracy_by_attack"]
    assert rep_b["seconds_by_attack"] == rep_a["seconds_by_attack"]


def test_registry_and_bad_arguments(tiny):
    model, x, y = tiny
    for name in ("apgd_ce", "apgd_dlr", "apgd_t", "fab", "square", "autoattack"):
        assert attacks.budget_name(name) == "eps"
    assert attacks.attack_kwargs("apgd_ce", eps=0.1, params="nb_iter=5,eot_iter=2") == {
        "eps": 0.1, "nb_iter": 5, "eot_iter": 2}
    with pytest.raises(InputError, match="version"):
        attacks.autoattack(model, x[:4], 0.1, version="fast")
    with pytest.raises(InputError, match="targeted"):
        attacks.autoattack(model, x[:4], 0.1, y=y[:4], targeted=True)
    with pytest.raises(InputError, match="loss"):
        attacks.apgd(model, x[:4], 0.1, loss="hinge")


def test_fab_minimum_norm_is_adversarial_and_small(tiny):
    model, x, y = tiny
    for norm in (np.inf, 2):
        x_adv = attacks.fab(model, x[:16], None, y=y[:16], norm=norm, nb_iter=20,
                            n_target_classes=2, seed=0)
        pred = evaluation.predict_labels(model, x_adv)
        changed = np.any(x_adv != x[:16], axis=(1, 2, 3))
        assert changed.mean() > 0.8 and np.all(pred[changed] != y[:16][changed])
