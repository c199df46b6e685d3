"""Every visualization method of the registry runs on a tiny model and writes its files."""

import json
import os

import numpy as np
import pytest

from cnnvis_tf import testing
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import methods


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    model, x, y = testing.trained_tiny_cnn()
    tmp = tmp_path_factory.mktemp("inputs")
    init = str(tmp / "initial.weights.h5")
    testing.tiny_cnn(seed=0).save_weights(init)
    rng = np.random.default_rng(0)
    x_adv = np.clip(x[:24] + rng.normal(0, 0.4, x[:24].shape), 0, 1).astype("float32")
    adv = str(tmp / "adversarial.npz")
    np.savez(adv, x=x[:24], x_adv=x_adv, y=y[:24], pred_clean=y[:24],
             pred_adv=np.asarray(model(x_adv)).argmax(-1))
    return methods.Context(model, x[:64], y[:64], index=2, class_names=["top", "mid", "low"],
                           initial_weights=init, adversarial=adv, steps=10)


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_method_writes_png_and_numbers(ctx, name, tmp_path):
    paths = methods.run(name, ctx, str(tmp_path))
    assert os.path.basename(paths[0]) == f"{name}.png"
    assert os.path.getsize(paths[0]) > 5000
    for p in paths[1:]:
        assert os.path.basename(p) in (f"{name}.npz", f"{name}.json")
        if p.endswith(".npz"):
            with np.load(p) as data:
                assert data.files and all(np.asarray(data[k]).size for k in data.files)
        else:
            with open(p) as f:
                json.load(f)
    assert len(paths) >= 2


def test_occlusion_json_table(ctx, tmp_path):
    methods.run("occlusion", ctx, str(tmp_path))
    with open(tmp_path / "occlusion.json") as f:
        facts = json.load(f)
    assert facts["patch_size"] == 14 and facts["stride"] == 7 and facts["fill"] == 0.5
    assert set(facts["table"][0]) == {"row", "col", "true_class_prob", "predicted_class"}


def test_layer_and_channel_options(ctx, tmp_path):
    c = methods.Context(**dict(vars(ctx), layer="conv1_relu", channel=2))
    methods.run("deconvnet", c, str(tmp_path))
    with np.load(tmp_path / "deconvnet.npz") as data:
        assert int(data["channel"]) == 2
    methods.run("activations", c, str(tmp_path))
    with np.load(tmp_path / "activations.npz") as data:
        assert data.files == ["conv1_relu"]


def test_unknown_method_and_layer_errors(ctx, tmp_path):
    with pytest.raises(InputError, match="Unknown method.*bogus.*Choose from: filters"):
        methods.parse_methods("saliency,bogus")
    assert methods.parse_methods("all") == list(methods.METHODS)
    bad = methods.Context(**dict(vars(ctx), layer="conv9"))
    with pytest.raises(InputError, match="Unknown layer 'conv9'. Choose one of: .*conv1"):
        methods.run("gradcam", bad, str(tmp_path))


def test_missing_inputs_are_clear_errors(ctx, tmp_path):
    with pytest.raises(InputError, match="--adversarial"):
        methods.run("adversarial_diff", methods.Context(**dict(vars(ctx), adversarial=None)),
                    str(tmp_path))
    with pytest.raises(InputError, match="initial weights"):
        methods.run("loss_1d", methods.Context(**dict(vars(ctx), initial_weights="/no/file")),
                    str(tmp_path))
