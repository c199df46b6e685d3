"""Every bad input to an attack raises InputError naming the problem."""

import logging

import numpy as np
import pytest
import tensorflow as tf

from cnnvis_tf import attacks, testing
from cnnvis_tf.errors import InputError


@pytest.fixture(scope="module")
def model_and_data():
    model = testing.tiny_cnn()
    x, y = testing.tiny_data(8)
    return model, x, y


@pytest.mark.parametrize("name", sorted(attacks.ATTACKS))
def test_every_attack_rejects_out_of_box_input(model_and_data, name):
    model, x, y = model_and_data
    with pytest.raises(InputError, match="outside"):
        attacks.ATTACKS[name](model, x + 2.0, y=y, targeted=name in attacks.TARGETED_ONLY)


@pytest.mark.parametrize("kwargs,match", [
    ({"eps": -0.1}, "eps"),
    ({"eps": float("nan")}, "eps"),
    ({"eps": 0.1, "clip_min": 1.0, "clip_max": 0.0}, "clip_min"),
    ({"eps": 0.1, "norm": 3}, "norm"),
    ({"eps": 0.1, "y": np.full(8, 7)}, r"\[0, 2\]"),
    ({"eps": 0.1, "y": np.full(8, -1)}, r"\[0, 2\]"),
    ({"eps": 0.1, "y": np.zeros(3, int)}, "shape"),
    ({"eps": 0.1, "targeted": True}, "target"),
])
def test_fgm_argument_errors(model_and_data, kwargs, match):
    model, x, _ = model_and_data
    with pytest.raises(InputError, match=match):
        attacks.fast_gradient_method(model, x, **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_inputs(model_and_data, bad):
    model, x, _ = model_and_data
    x = x.copy()
    x[0, 0, 0, 0] = bad
    with pytest.raises(InputError, match="NaN or Inf"):
        attacks.pgd(model, x, 0.1)


def test_probability_model_is_converted_and_logged(model_and_data, caplog):
    """Softmax outputs are detected, logged (absl warning) and used as log-probabilities;
    from_probabilities=True does the same silently, and is refused for a logits model."""
    model, x, _ = model_and_data

    def probs(t):
        return tf.nn.softmax(model(t))

    with caplog.at_level(logging.WARNING):
        detected = attacks.fgsm(probs, x, 0.1)
    (record,) = [r for r in caplog.records if "probabilities" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "log-probabilities" in record.getMessage() and "mask" in record.getMessage()
    np.testing.assert_array_equal(detected, attacks.fgsm(probs, x, 0.1, from_probabilities=True))
    np.testing.assert_allclose(detected, attacks.fgsm(model, x, 0.1), atol=1e-6)
    with pytest.raises(InputError, match="from_probabilities"):
        attacks.fgsm(model, x, 0.1, from_probabilities=True)


def test_unknown_attack_name():
    with pytest.raises(InputError, match="Unknown attack 'nope'.*fgsm"):
        attacks.get_attack("nope")


def test_iterative_argument_errors(model_and_data):
    model, x, _ = model_and_data
    with pytest.raises(InputError, match="eps_iter"):
        attacks.pgd(model, x, 0.1, eps_iter=0.2)
    with pytest.raises(InputError, match="nb_iter"):
        attacks.bim(model, x, 0.1, nb_iter=0)
    with pytest.raises(InputError, match="spsa_samples"):
        attacks.spsa(model, x, 0.1, spsa_samples=3)
    with pytest.raises(InputError, match="snr"):
        attacks.snr_fgsm(model, x, "loud")


def test_attack_kwargs_from_command_line_strings():
    assert attacks.attack_kwargs("pgd", eps=0.1, params="nb_iter=5,rand_init=false") == {
        "nb_iter": 5, "rand_init": False, "eps": 0.1}
    assert attacks.attack_kwargs("snr_fgsm", snr=40.0) == {"snr": 40.0}
    with pytest.raises(InputError, match="takes no eps budget"):
        attacks.attack_kwargs("cw_l2", eps=0.1)
    with pytest.raises(InputError, match="has no argument.*foo"):
        attacks.attack_kwargs("fgsm", params="foo=1")
    with pytest.raises(InputError, match="Malformed"):
        attacks.attack_kwargs("pgd", params="nb_iter")


def test_lbfgs_needs_targets(model_and_data):
    model, x, y = model_and_data
    with pytest.raises(InputError, match="targeted"):
        attacks.lbfgs(model, x, y=y, targeted=False)
    with pytest.raises(InputError, match="target"):
        attacks.lbfgs(model, x, y=None)


def test_model_with_wrong_output_shape(model_and_data):
    _, x, _ = model_and_data
    with pytest.raises(InputError, match="one row of logits"):
        attacks.fgsm(lambda t: tf.reduce_sum(t, axis=[1, 2, 3]), x, 0.1)
