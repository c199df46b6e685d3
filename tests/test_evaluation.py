"""Tests for cnnvis_tf.evaluation."""

import numpy as np
import pytest

from cnnvis_tf import attacks, evaluation, testing
from cnnvis_tf.errors import InputError


@pytest.fixture(scope="module")
def trained():
    model, x, y = testing.trained_tiny_cnn()
    return model, x[:48], y[:48]


def _acc(model, x, y):
    return float(np.mean(model(x).numpy().argmax(1) == y))


@pytest.mark.parametrize("name,norm,eps_list", [
    ("fgsm", np.inf, [0.0, 0.1, 0.3, 0.5]),
    ("fgm_l2", 2, [0.5, 2.0, 4.0]),
])
def test_sweep_equals_per_eps_fgsm(trained, name, norm, eps_list):
    model, x, y = trained
    sweep = evaluation.fgsm_sweep(model, x, y, eps_list, norm=norm, batch_size=20)
    per_eps = [_acc(model, attacks.ATTACKS[name](model, x, e, y=y), y) for e in eps_list]
    assert sweep == per_eps
    curve = evaluation.accuracy_vs_eps(model, x, y, eps_list, attack=name)
    assert list(curve) == ["Clean"] + eps_list and curve["Clean"] == _acc(model, x, y)


def test_accuracy_vs_eps_with_iterative_attack(trained):
    model, x, y = trained
    curve = evaluation.accuracy_vs_eps(model, x, y, [0.1, 0.6], attack="pgd", nb_iter=5, seed=0)
    assert curve[0.6] <= curve[0.1] <= curve["Clean"] and curve[0.6] < 0.2


def test_accuracy_vs_snr_table_row(trained):
    model, x, y = trained
    acc, achieved = evaluation.accuracy_vs_snr(model, x, y)
    assert list(acc) == ["Clean", 50.0, 45.0, 40.0, 33.0]
    # A column labelled "33 dB" is 33 dB after clipping (the clipped-match step).
    for level in evaluation.DEFAULT_SNR_LEVELS:
        assert abs(achieved[level] - level) < 0.05, achieved
    xa = attacks.snr_fgsm(model, x, 33.0, y=y)
    assert acc[33.0] == _acc(model, xa, y)
    assert acc[33.0] <= acc[50.0] <= acc["Clean"]


def test_accuracy_vs_snr_unclipped_mode_is_seed_002_formula(trained):
    model, x, y = trained
    acc, achieved = evaluation.accuracy_vs_snr(model, x, y, (40.0, 33.0), snr_mode="unclipped")
    assert achieved[33.0] > 33.05  # clipping binds on this data: the achieved SNR is higher
    xa = attacks.snr_fgsm(model, x, 33.0, y=y, match_clipped=False)
    assert acc[33.0] == _acc(model, xa, y)
    with pytest.raises(InputError, match="snr_mode"):
        evaluation.accuracy_vs_snr(model, x, y, snr_mode="before")


def test_labels_of_shape_n_by_1(trained):
    model, x, y = trained
    column = y[:, None]
    assert evaluation.fgsm_sweep(model, x, column, [0.1, 0.3]) == evaluation.fgsm_sweep(
        model, x, y, [0.1, 0.3])
    assert evaluation.accuracy_vs_snr(model, x, column, (40.0,)) == evaluation.accuracy_vs_snr(
        model, x, y, (40.0,))
    assert evaluation.accuracy_vs_eps(model, x, column, [0.2], attack="pgd", nb_iter=2,
                                      seed=0) == evaluation.accuracy_vs_eps(
        model, x, y, [0.2], attack="pgd", nb_iter=2, seed=0)


def test_attack_metrics_hand_computed():
    x = np.zeros((4, 2, 2, 1), np.float32) + 0.5
    x_adv = x.copy()
    x_adv[0, 0, 0, 0] = 0.8  # l2 = linf = 0.3
    x_adv[1] += 0.1  # l2 = 0.2, linf = 0.1
    y = np.array([0, 1, 2, 0])
    m = evaluation.attack_metrics(y, x, x_adv, np.array([0, 1, 1, 0]), np.array([2, 1, 1, 0]))
    assert m["clean_accuracy"] == 0.75 and m["adversarial_accuracy"] == 0.5
    assert m["success_rate"] == pytest.approx(1 / 3)
    assert m["mean_l2"] == pytest.approx(0.5 / 4) and m["mean_linf"] == pytest.approx(0.1)
    snr = [20 * np.log10(1.0 / 0.3), 20 * np.log10(1.0 / 0.2)]  # ||x||2 = 1
    assert m["mean_snr_db"] == pytest.approx(np.mean(snr))
    assert m["num_examples"] == 4
    targeted = evaluation.attack_metrics(y, x, x_adv, y, np.array([2, 1, 1, 0]),
                                         targets=np.array([2, 2, 2, 2]))
    assert targeted["success_rate"] == 0.25


def test_transfer_matrix_diagonal_is_white_box(trained):
    model, x, y = trained
    other, _, _ = testing.trained_tiny_cnn(seed=1, epochs=4)
    names, m = evaluation.transfer_matrix({"a": model, "b": other}, x, y, "fgsm", eps=0.4)
    assert names == ["a", "b"] and m.shape == (2, 2)
    assert m[0, 0] == _acc(model, attacks.fgsm(model, x, 0.4, y=y), y)
    assert m[0, 1] == _acc(other, attacks.fgsm(model, x, 0.4, y=y), y)


def test_aggregate_runs_uses_sample_std():
    agg = evaluation.aggregate_runs([{"acc": 0.5, "l2": 1.0}, {"acc": 0.7, "l2": 3.0}])
    assert agg["acc"]["mean"] == pytest.approx(0.6)
    assert agg["acc"]["std"] == pytest.approx(np.sqrt(0.02))  # ddof=1
    assert agg["l2"] == {"mean": 2.0, "std": pytest.approx(np.sqrt(2.0))}
    assert evaluation.aggregate_runs([{"acc": 0.5}]) == {"acc": {"mean": 0.5, "std": 0.0}}


def test_worst_case_is_per_example(trained):
    model, x, y = trained
    res = evaluation.worst_case_accuracy(model, x, y, {
        "fgsm": ("fgsm", {"eps": 0.35}), "pgd": ("pgd", {"eps": 0.35, "nb_iter": 5, "seed": 0}),
    })
    correct = [model(attacks.fgsm(model, x, 0.35, y=y)).numpy().argmax(1) == y,
               model(attacks.pgd(model, x, 0.35, y=y, nb_iter=5, seed=0)).numpy().argmax(1) == y]
    assert res["worst_case"] == float(np.mean(correct[0] & correct[1]))
    assert res["worst_case"] <= min(res["fgsm"], res["pgd"])


def test_sanity_flags_pure():
    ok = evaluation.sanity_flags([0.1, 0.2, 0.3], [0.9, 0.5, 0.1], single_step=0.1,
                                 iterative=0.0, unbounded=0.0)
    assert ok["ok"] and not ok["messages"]
    bad = evaluation.sanity_flags([0.3, 0.1, 0.2], [0.6, 0.9, 0.5], single_step=0.6,
                                  iterative=0.8, unbounded=0.7)
    assert bad["accuracy_increases_with_eps"] and bad["iterative_weaker_than_single_step"]
    assert bad["unbounded_attack_fails"] and len(bad["messages"]) == 3


def test_sanity_checks_clean_model_and_gradient_masked_model(trained):
    model, x, y = trained
    x, y = x[:24], y[:24]
    good = evaluation.sanity_checks(model, x, y, [0.1, 0.3, 0.5])
    assert good["ok"], good["messages"]
    # Defensive-distillation-like masking: huge logits make the softmax saturate, so the
    # cross-entropy gradient is exactly zero and gradient attacks cannot move.
    masked = evaluation.sanity_checks(lambda t: 1e4 * model(t), x, y, [0.1, 0.3, 0.5])
    assert masked["unbounded_attack_fails"] and not masked["ok"]
    assert masked["unbounded_bim_accuracy"] > 0.9


def test_evaluation_input_errors(trained):
    model, x, y = trained
    with pytest.raises(InputError, match="eps"):
        evaluation.fgsm_sweep(model, x, y, [0.1, -0.2])
    with pytest.raises(InputError, match="eps_list"):
        evaluation.sanity_checks(model, x, y, [])
    with pytest.raises(InputError, match="Unknown attack"):
        evaluation.run_attack("nope", model, x, y)
