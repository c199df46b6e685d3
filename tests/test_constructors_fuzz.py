"""Library constructors reject NaN/inf/negative/out-of-range hyper-parameters with the
Keras-style message ("Invalid value received for argument `x`. Expected ... Received: x=...")
instead of training something else silently."""

import keras
import numpy as np
import pytest

from cnnvis_tf import defenses, layers, testing
from cnnvis_tf.errors import InputError

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def model():
    return testing.tiny_cnn()


def _keras_style(excinfo, arg):
    message = str(excinfo.value)
    assert f"Invalid value received for argument `{arg}`" in message, message
    assert "Expected" in message and f"Received: {arg}=" in message, message
    assert "\n" not in message


# (argument, bad values) for each constructor; every other argument keeps its default.
DEFENDED = {
    "parseval_beta": [-0.1, NAN, INF, 1.0, "big"],
    "filter_loss_weight": [-1.0, NAN, INF, "w"],
    "smooth_gamma": [-0.1, NAN, INF],
    "smooth_power": [0, -1, 1.5, NAN],
    "adv_ratio": [-0.1, 1.5, NAN],
    "adv_eps": [-0.1, NAN, INF, "x"],
    "adv_snr_db": [0.0, -3.0, NAN, INF],
    "adv_loss_weight": [-1.0, NAN],
    "pgd_steps": [0, 2.5, NAN],
    "clip_min": [NAN, "a", None],
    "clip_max": [INF, -1.0],
    "seed": ["x", 1.5, -1],
    "adv_training": ["pgdx", 1],
    "filter_layer": [3],
    "smooth_layers": [[1, 2]],
}
DEFENDED_CASES = [(a, v) for a, vals in DEFENDED.items() for v in vals]


@pytest.mark.parametrize("arg,value", DEFENDED_CASES, ids=[f"{a}={v!r}" for a, v in DEFENDED_CASES])
def test_make_defended_rejects(model, arg, value):
    """Also for a defense that is off: parseval_beta=-0.1 must not mean "no Parseval"."""
    with pytest.raises(InputError) as excinfo:
        defenses.make_defended(model, **{arg: value})
    _keras_style(excinfo, arg)


DEFENSE_MODEL = {k: v for k, v in DEFENDED.items() if k not in ("filter_loss_weight",
                                                                   "filter_layer")}
DEFENSE_MODEL_CASES = [(a, v) for a, vals in DEFENSE_MODEL.items() for v in vals]


@pytest.mark.parametrize("arg,value", DEFENSE_MODEL_CASES,
                         ids=[f"{a}={v!r}" for a, v in DEFENSE_MODEL_CASES])
def test_defense_model_rejects(model, arg, value):
    kwargs = {"adv_training": "fgsm", "adv_eps": 0.1}
    if arg == "adv_snr_db":
        kwargs = {"adv_training": "fgsm"}
    with pytest.raises(InputError) as excinfo:
        defenses.DefenseModel(model, **{**kwargs, arg: value})
    _keras_style(excinfo, arg)


def test_make_defended_legal_settings_still_work(model):
    assert defenses.make_defended(model) is model
    wrapped = defenses.make_defended(model, parseval_beta=0.0, smooth_gamma=0.0,
                                     adv_training="none", adv_eps=0.1)
    assert wrapped is model
    wrapped = defenses.make_defended(testing.tiny_cnn(), adv_training="pgd", adv_snr_db=33,
                                     smooth_gamma=0.01, smooth_power=2, seed=np.int64(3))
    assert isinstance(wrapped, defenses.DefenseModel) and wrapped.seed == 3


def _constraint(kw):
    return layers.ParsevalConstraint(**kw)


LAYER_CASES = [
    # (factory, argument, bad value)
    *[(layers.ParsevalConstraint, "beta", v) for v in (0.0, -0.1, NAN, INF, 1.0, 2.0, "b", True)],
    *[(layers.ParsevalConstraint, "sample_fraction", v) for v in (0.0, 1.5, NAN, "1")],
    *[(layers.ParsevalConstraint, "seed", v) for v in ("s", 1.5, -1)],
    *[(layers.ConvexConstraint, "axis", v) for v in (1.5, "0", None, True)],
    *[(layers.InterpretableFilterMask, "beta", v) for v in (0.0, -1.0, NAN, INF, "4")],
    *[(layers.InterpretableFilterMask, "tau", v) for v in (0.0, -1.0, NAN, INF)],
    *[(layers.InterpretableFilterMask, "alpha", v) for v in (0.0, 1.0, NAN, -0.5, "a")],
    *[(layers.InterpretableFilterMask, "loss_weight", v) for v in (-1.0, NAN, INF, "1")],
    *[(layers.InterpretableFilterMask, "mask_at_inference", v) for v in ("yes", None)],
]


@pytest.mark.parametrize("factory,arg,value", LAYER_CASES,
                         ids=[f"{f.__name__}-{a}={v!r}" for f, a, v in LAYER_CASES])
def test_layers_and_constraints_reject(factory, arg, value):
    with pytest.raises(InputError) as excinfo:
        factory(**{arg: value})
    _keras_style(excinfo, arg)


def test_apply_parseval_checks_before_changing_the_model(model):
    for kwargs in ({"beta": NAN}, {"beta": -0.1}, {"seed": "x"}, {"sample_fraction": 2.0}):
        with pytest.raises(InputError, match="Invalid value received"):
            layers.apply_parseval(model, **kwargs)
    assert all(getattr(ly, "kernel_constraint", None) is None for ly in model.layers)


@pytest.mark.parametrize("arg,value", [("gamma", NAN), ("gamma", -1.0), ("gamma", INF),
                                       ("gamma", "g"), ("gamma", None), ("power", 0),
                                       ("power", 1.5), ("power", NAN), ("power", INF)])
def test_laplacian_smoothness_penalty_rejects(arg, value):
    reps = [np.random.default_rng(0).uniform(size=(6, 4)).astype("float32")] * 2
    kwargs = {"gamma": 0.1, "power": 1, arg: value}
    with pytest.raises(InputError) as excinfo:
        layers.laplacian_smoothness_penalty(reps, np.arange(6) % 2, **kwargs)
    _keras_style(excinfo, arg)


def test_smoothness_accepts_keras_dataset_labels():
    """(N, 1) class ids (keras.datasets) are ids, not a one-column one-hot."""
    reps = [np.random.default_rng(k).uniform(size=(6, 4)).astype("float32") for k in (0, 1)]
    y = np.array([0, 1, 2, 0, 1, 2])
    flat = float(layers.laplacian_smoothness_penalty(reps, y, 1.0))
    column = float(layers.laplacian_smoothness_penalty(reps, y[:, None], 1.0))
    assert flat == pytest.approx(column) and flat > 0


@pytest.mark.parametrize("arg,value", [("p0", 0.0), ("p0", 1.5), ("p0", NAN), ("p0", "0.5"),
                                       ("alpha", -0.1), ("alpha", NAN), ("alpha", INF),
                                       ("alpha", "a"), ("train_other_layers", "no"),
                                       ("activation_layer", "nope")])
def test_selective_dropout_rejects(model, arg, value):
    with pytest.raises(InputError) as excinfo:
        defenses.SelectiveDropout(model, "fc1", **{arg: value})
    _keras_style(excinfo, arg)


@pytest.mark.parametrize("arg,value", [("p0", NAN), ("alpha", NAN), ("alpha", -1.0),
                                       ("t", -1), ("t", NAN)])
def test_p_schedule_rejects(arg, value):
    kwargs = {"t": 0, "p0": 0.5, "alpha": 0.1, arg: value}
    with pytest.raises(InputError) as excinfo:
        defenses.p_schedule(**kwargs)
    _keras_style(excinfo, arg)


@pytest.mark.parametrize("arg,value", [("hidden_units", 0), ("hidden_units", 2.5),
                                       ("hidden_units", NAN), ("seed", "s"), ("seed", -1),
                                       ("feature_layer", "nope"), ("feature_layer", 3)])
def test_adversarial_detector_rejects(model, arg, value):
    with pytest.raises(InputError) as excinfo:
        defenses.AdversarialDetector(model, **{arg: value})
    _keras_style(excinfo, arg)


def test_adversarial_detector_rejects_bad_fit_and_threshold(model):
    det = defenses.AdversarialDetector(model, hidden_units=4)
    x = np.zeros((4, 12, 12, 1), "float32")
    for arg, value in (("epochs", 0), ("batch_size", NAN), ("learning_rate", -1.0),
                       ("learning_rate", INF)):
        with pytest.raises(InputError) as excinfo:
            det.fit(x, x, **{arg: value})
        _keras_style(excinfo, arg)
    for value in (NAN, -0.1, 1.5):
        with pytest.raises(InputError) as excinfo:
            det.evaluate(x, x, threshold=value)
        _keras_style(excinfo, "threshold")


@pytest.mark.parametrize("arg,value", [("clip_min", NAN), ("clip_max", INF), ("clip_max", 0.0),
                                       ("clip_min", "0"), ("seed", "s"), ("seed", 1.5),
                                       ("autoencoder", "ae.keras"), ("classifier", None)])
def test_input_reconstruction_rejects(model, arg, value):
    kwargs = {"classifier": model, arg: value}
    with pytest.raises(InputError) as excinfo:
        defenses.InputReconstruction(**kwargs)
    _keras_style(excinfo, arg)


def test_input_reconstruction_rejects_bad_fit_and_autoencoder_args(model):
    recon = defenses.InputReconstruction(model, autoencoder=keras.Sequential(
        [keras.Input((12, 12, 1)), keras.layers.Identity()]))
    x = np.zeros((4, 12, 12, 1), "float32")
    for arg, value in (("noise_std", -0.1), ("noise_std", NAN), ("epochs", 0),
                       ("batch_size", 1.5), ("learning_rate", 0.0)):
        with pytest.raises(InputError) as excinfo:
            recon.fit(x, **{arg: value})
        _keras_style(excinfo, arg)
    for arg, value in (("filters", ()), ("filters", (8, 0)), ("filters", 8),
                       ("input_shape", (12, 12)), ("clip_min", NAN), ("seed", "s")):
        with pytest.raises(InputError) as excinfo:
            defenses.denoising_autoencoder(**{"input_shape": (12, 12, 1), arg: value})
        _keras_style(excinfo, arg)
