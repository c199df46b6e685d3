"""Every attack of ``attacks.ATTACKS`` on bad input: an InputError, or a correct result where
the input is legal. Tiny budgets keep every case fast."""

import inspect
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnnvis_tf import attacks, testing
from cnnvis_tf.errors import InputError

N, SHAPE, CLASSES = 4, (12, 12, 1), 3

# Smallest work each attack can do, so that the legal cases run in milliseconds.
FAST = {
    "fgsm": {}, "fgm_l2": {}, "snr_fgsm": {}, "gaussian_noise": {},
    "bim": {"nb_iter": 2}, "pgd": {"nb_iter": 2, "seed": 3}, "pgd_l2": {"nb_iter": 2, "seed": 3},
    "mim": {"nb_iter": 2},
    "spsa": {"nb_iter": 1, "spsa_samples": 2, "seed": 0},
    "cw_l2": {"binary_search_steps": 1, "max_iterations": 2},
    "lbfgs": {"binary_search_steps": 1, "max_iterations": 2},
    "deepfool": {"max_iter": 2},
    "universal": {"max_passes": 1, "deepfool_iter": 2},
    "one_pixel": {"maxiter": 1, "popsize": 2},
    "patch": {"steps": 1, "positions_per_step": 1},
    "iterative_noise": {"max_iter": 2},
}
# Attacks registered later get the small settings their signature takes.
GENERIC_FAST = {"nb_iter": 2, "n_queries": 3, "max_iter": 2, "max_iterations": 2, "steps": 1,
                "binary_search_steps": 1, "n_restarts": 1, "seed": 0}
NAMES = sorted(attacks.ATTACKS)
for _name in NAMES:
    if _name not in FAST:
        _params = inspect.signature(attacks.ATTACKS[_name]).parameters
        FAST[_name] = {k: v for k, v in GENERIC_FAST.items() if k in _params}


@pytest.fixture(scope="module")
def setup():
    model = testing.tiny_cnn(SHAPE, CLASSES)
    x, y = testing.tiny_data(N, SHAPE, CLASSES)
    return model, x, y


def run(name, model, x, y=None, **kwargs):
    """Calls attack ``name`` (targeted when it only makes sense so, with targets ``y``)."""
    targeted = name in attacks.TARGETED_ONLY
    if targeted and y is None:
        y = np.zeros(len(np.asarray(x)), np.int64)
    args = {**FAST[name], **kwargs}
    if targeted or "targeted" in inspect.signature(attacks.ATTACKS[name]).parameters:
        args.setdefault("targeted", targeted)
    return attacks.ATTACKS[name](model, x, y=y, **args)


def _with(x, value):
    x = x.copy()
    x[1, 3, 4, 0] = value
    return x


BAD_X = {
    "nan": lambda x: _with(x, np.nan),
    "inf": lambda x: _with(x, np.inf),
    "-inf": lambda x: _with(x, -np.inf),
    "0-255": lambda x: x * 255.0,
    "one image, no batch axis": lambda x: x[0],
    "no channel axis": lambda x: x[..., 0],
    "rank 5": lambda x: x[None],
    "3 channels": lambda x: np.repeat(x, 3, axis=-1),
    "wrong size": lambda x: x[:, :10, :10],
    "empty batch": lambda x: x[:0],
    "flat": lambda x: x.reshape(len(x), -1),
    "strings": lambda x: x.astype(str),
    "bool": lambda x: x > 0.5,
    "scalar": lambda x: np.float32(0.5),
}


@pytest.mark.parametrize("case", sorted(BAD_X))
@pytest.mark.parametrize("name", NAMES)
def test_bad_images_raise_input_error(setup, name, case):
    model, x, y = setup
    with pytest.raises(InputError):
        run(name, model, BAD_X[case](x), y)


BAD_Y = {
    "too short": lambda y: y[:-1],
    "too long": lambda y: np.r_[y, y],
    "above range": lambda y: np.full_like(y, CLASSES),
    "negative": lambda y: np.full_like(y, -1),
    "float non-integer": lambda y: y + 0.5,
    "nan": lambda y: np.full(len(y), np.nan),
    "one-hot too wide": lambda y: np.eye(CLASSES + 2)[y],
    "one-hot too narrow": lambda y: np.eye(2)[y % 2],
    "not one-hot": lambda y: np.full((len(y), CLASSES), 0.5),
    "rank 3": lambda y: y[:, None, None],
    "strings": lambda y: y.astype(str),
}


@pytest.mark.parametrize("case", sorted(BAD_Y))
@pytest.mark.parametrize("name", NAMES)
def test_bad_labels_raise_input_error(setup, name, case):
    model, x, y = setup
    with pytest.raises(InputError):
        run(name, model, x, BAD_Y[case](y))


@pytest.mark.parametrize("name", NAMES)
def test_targeted_without_labels_raises(setup, name):
    model, x, _ = setup
    with pytest.raises(InputError):
        attacks.ATTACKS[name](model, x, **dict(FAST[name], targeted=True))


@pytest.mark.parametrize("name", NAMES)
def test_label_shapes_are_equivalent(setup, name):
    """(N,), (N, 1) and one-hot labels give the same, valid result."""
    model, x, y = setup
    forms = [y, y[:, None], np.eye(CLASSES)[y]]
    results = [run(name, model, x, f) for f in forms]
    for r in results:
        assert r.dtype == np.float32 and r.shape == x.shape
        assert np.all(np.isfinite(r)) and r.min() >= 0.0 and r.max() <= 1.0
    if name not in ("spsa",):
        for r in results[1:]:
            np.testing.assert_array_equal(r, results[0])


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_keras_dataset_labels_equal_flat_labels_with_fixed_seed(setup, name):
    model, x, y = setup
    kwargs = {"seed": 11} if name == "pgd" else {}
    flat = attacks.ATTACKS[name](model, x, 0.1, y=y, **kwargs)
    for labels in (y.reshape(-1, 1), y.astype("float32"), y.astype("uint8")[:, None]):
        np.testing.assert_array_equal(
            attacks.ATTACKS[name](model, x, 0.1, y=labels, **kwargs), flat)
    assert not np.array_equal(flat, x)


def _two_outputs():
    inputs = keras.Input(SHAPE)
    h = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, [keras.layers.Dense(CLASSES)(h), keras.layers.Dense(2)(h)])


def _one_score():
    inputs = keras.Input(SHAPE)
    return keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(inputs)))


def _spatial():
    inputs = keras.Input(SHAPE)
    return keras.Model(inputs, keras.layers.Conv2D(CLASSES, 3)(inputs))


BAD_MODELS = {
    "keras two outputs": lambda m: _two_outputs(),
    "callable two outputs": lambda m: (lambda t: (m(t), m(t))),
    "callable two outputs of different width": lambda m: (lambda t: [m(t), m(t)[:, :2]]),
    "keras one score": lambda m: _one_score(),
    "keras spatial output": lambda m: _spatial(),
    "one value per example": lambda m: (lambda t: tf.reduce_sum(m(t), axis=1)),
    "one row for the batch": lambda m: (lambda t: m(t)[:1]),
    "rank 3 output": lambda m: (lambda t: m(t)[:, :, None]),
    "NaN outputs": lambda m: (lambda t: m(t) * np.nan),
    "dict output": lambda m: (lambda t: {"logits": m(t)}),
    "not callable": lambda m: "model.keras",
    "None": lambda m: None,
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
@pytest.mark.parametrize("name", NAMES)
def test_bad_models_raise_input_error(setup, name, case):
    model, x, y = setup
    with pytest.raises(InputError):
        run(name, BAD_MODELS[case](model), x, y)


# (argument, bad values) per attack: negative, NaN, inf, a string, and attack-specific ones.
NUMBERS = [-0.1, float("nan"), float("inf"), "big"]
BAD_ARGS = {
    "fgsm": {"eps": NUMBERS},
    "fgm_l2": {"eps": NUMBERS},
    "bim": {"eps": NUMBERS, "nb_iter": [0, -1, 2.5, "3", float("nan")],
            "eps_iter": NUMBERS + [0.5]},
    "pgd": {"eps": NUMBERS, "nb_iter": [0, 2.5, float("inf")], "eps_iter": NUMBERS + [0.5],
            "seed": ["x", 1.5]},
    "pgd_l2": {"eps": NUMBERS, "nb_iter": [0]},
    "mim": {"eps": NUMBERS, "nb_iter": [0], "eps_iter": NUMBERS, "decay_factor": NUMBERS},
    "spsa": {"eps": NUMBERS, "nb_iter": [0], "learning_rate": NUMBERS, "delta": NUMBERS + [0],
             "spsa_samples": [0, 3, "64"], "seed": ["x"],
             "early_stop_loss_threshold": [float("nan"), "low"]},
    "cw_l2": {"confidence": NUMBERS, "learning_rate": NUMBERS, "initial_const": NUMBERS,
              "binary_search_steps": [0, 1.5], "max_iterations": [0, "2"], "batch_size": [0]},
    "lbfgs": {"initial_const": NUMBERS + [0], "binary_search_steps": [0],
              "max_iterations": [0, 2.5]},
    "snr_fgsm": {"snr": [-1.0, 0.0, float("nan"), float("inf"), "loud"]},
    "deepfool": {"overshoot": NUMBERS, "max_iter": [0], "nb_candidate": [0, 1, 2.5]},
    "universal": {"eps": NUMBERS, "target_fooling_rate": NUMBERS + [1.5], "max_passes": [0],
                  "deepfool_iter": [0, 2.5], "nb_candidate": [0, 1], "overshoot": NUMBERS,
                  "seed": ["x", -1]},
    "one_pixel": {"pixels": [0, 1.5, "1"], "maxiter": [0], "popsize": [0], "seed": ["x", -1]},
    "patch": {"patch_size": [0.0, 1.5, float("nan"), "big"], "steps": [0],
              "step_size": NUMBERS, "positions_per_step": [0], "position": [(50, 50), (1,),
                                                                           "corner"],
              "seed": ["x", -1]},
    "iterative_noise": {"step_size": NUMBERS, "max_iter": [0, 2.5]},
    "gaussian_noise": {"eps": NUMBERS, "seed": ["x", -1]},
}
for _name in NAMES:  # attacks registered later: their budget
    if _name not in BAD_ARGS and attacks.budget_name(_name):
        BAD_ARGS[_name] = {attacks.budget_name(_name): NUMBERS}
BAD_ARG_CASES = [(n, arg, v) for n in NAMES for arg, vals in BAD_ARGS.get(n, {}).items()
                 for v in vals]
COMMON_BAD = {"norm": [1, 3, "l1", None], "targeted": ["yes", None],
              "from_probabilities": ["no", None]}


@pytest.mark.parametrize("name,arg,value", BAD_ARG_CASES,
                         ids=[f"{n}-{a}={v!r}" for n, a, v in BAD_ARG_CASES])
def test_bad_budgets_and_hyper_parameters_raise(setup, name, arg, value):
    model, x, y = setup
    with pytest.raises(InputError, match=arg):
        run(name, model, x, y, **{arg: value})


def _takes(name, arg):
    """Whether attack ``name`` takes ``arg`` (through its thin front too; fronts fix norm)."""
    params = set(inspect.signature(attacks.ATTACKS[name]).parameters)
    front = attacks._FRONT_OF.get(name)
    if front is not None:
        params |= set(inspect.signature(front).parameters)
    return arg in params and not (arg == "norm" and name in attacks._FRONT_OF)


COMMON_CASES = [(n, a) for a in sorted(COMMON_BAD) for n in NAMES if _takes(n, a)]


@pytest.mark.parametrize("name,arg", COMMON_CASES, ids=[f"{n}-{a}" for n, a in COMMON_CASES])
def test_bad_common_arguments_raise(setup, name, arg):
    model, x, y = setup
    for value in COMMON_BAD[arg]:
        with pytest.raises(InputError, match=arg):
            run(name, model, x, y, **{arg: value})


BAD_BOX = {
    "reversed": {"clip_min": 1.0, "clip_max": 0.0},
    "nan min": {"clip_min": float("nan")},
    "inf max": {"clip_max": float("inf")},
    "string max": {"clip_max": "one"},
    "None min": {"clip_min": None},
}


@pytest.mark.parametrize("case", sorted(BAD_BOX))
@pytest.mark.parametrize("name", NAMES)
def test_bad_clip_box_raises(setup, name, case):
    model, x, y = setup
    with pytest.raises(InputError, match="clip_m"):
        run(name, model, x, y, **BAD_BOX[case])


def _probability_warnings(caplog):
    return [r for r in caplog.records if "probabilities" in r.getMessage()]


@pytest.mark.parametrize("name", NAMES)
def test_probability_model_is_converted_and_logged(setup, name, caplog):
    """Softmax outputs are detected, logged (a warning) and used as log-probabilities: the
    same result as the explicit, silent ``from_probabilities=True``."""
    model, x, y = setup

    def probs(t):
        return tf.nn.softmax(model(t))

    with caplog.at_level(logging.WARNING):
        detected = run(name, probs, x, y)
    (warning,) = _probability_warnings(caplog)
    assert warning.levelno == logging.WARNING and "log-probabilities" in warning.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        explicit = run(name, probs, x, y, from_probabilities=True)
    assert not _probability_warnings(caplog)
    assert detected.shape == x.shape and np.all(np.isfinite(detected))
    if name != "spsa":  # spsa draws from TensorFlow's global generator
        np.testing.assert_allclose(detected, explicit, atol=1e-6)


def test_probability_warning_is_logged_once_per_model(setup, caplog):
    model, x, _ = setup
    softmax = keras.Model(model.inputs, keras.layers.Softmax()(model.outputs[0]))
    with caplog.at_level(logging.WARNING):
        first = attacks.fgsm(softmax, x, 0.1)
        attacks.fgsm(softmax, x, 0.1)
        attacks.pgd(softmax, x, 0.1, nb_iter=2, seed=0)
    (warning,) = _probability_warnings(caplog)
    assert "treat them as probabilities" in warning.getMessage()
    assert "mask gradients" in warning.getMessage()
    # log p as logits: the same attack as on the model without its softmax
    np.testing.assert_allclose(first, attacks.fgsm(model, x, 0.1), atol=1e-6)


@pytest.mark.parametrize("name", ["fgsm", "pgd", "deepfool"])
def test_from_probabilities_on_a_logits_model_raises(setup, name):
    model, x, y = setup
    with pytest.raises(InputError, match="from_probabilities"):
        run(name, model, x, y, from_probabilities=True)


@pytest.mark.parametrize("name", NAMES)
def test_legal_inputs_give_valid_results(setup, name):
    """Tensors, float64 and uint8-valued batches in the box are legal."""
    model, x, y = setup
    for xx in (tf.constant(x), x.astype("float64"), (x > 0.5).astype("uint8")):
        out = run(name, model, xx, y)
        assert out.dtype == np.float32 and out.shape == x.shape
        assert np.all(np.isfinite(out)) and out.min() >= 0.0 and out.max() <= 1.0
