"""Model zoo: shapes, names, parameter counts, logits outputs, serialization."""

import keras
import numpy as np
import pytest

from cnnvis_tf import models
from cnnvis_tf.errors import InputError


def test_conv2_fc500_has_799078_parameters():
    m = models.build_model("conv2_fc500", (28, 28, 1), 10)
    assert m.count_params() == 799_078
    assert models.count_params(m) == 799_078
    # Normalization folded in adds no learned parameters.
    m2 = models.conv2_fc500(mean=[0.13], std=[0.31])
    assert m2.count_params() == 799_078 and m2.layers[1].name == "normalize"
    names = [layer.name for layer in m.layers]
    for expected in ("conv1", "pool1", "conv2", "pool2", "fc1", "logits"):
        assert expected in names
    assert m.get_layer("conv1").output.shape[1:] == (28, 28, 32)
    assert m.get_layer("pool2").output.shape[1:] == (7, 7, 32)
    assert m.get_layer("fc1").output.shape[1:] == (500,)


def test_batch_norm_variant():
    m = models.conv2_fc500(batch_norm=True)
    names = [layer.name for layer in m.layers]
    assert "conv1_bn" in names and "fc1_bn" in names
    assert m.output_shape == (None, 10)


@pytest.mark.parametrize(
    "name,shape,classes",
    [
        ("conv2_fc500", (28, 28, 1), 10),
        ("conv3_fc2", (28, 28, 1), 10),
        ("conv2_pool3_fc200", (28, 28, 1), 10),
        ("resnet18", (32, 32, 3), 100),
        ("resnet18_stem_pool", (64, 64, 3), 200),
    ],
)
def test_zoo_outputs_logits(name, shape, classes):
    kwargs = {"width": 8} if name.startswith("resnet") else {}
    m = models.build_model(name, shape, classes, **kwargs)
    assert isinstance(m, keras.Model) and not isinstance(m, keras.Sequential)
    assert m.output_shape == (None, classes)
    assert m.layers[-1].name == "logits"
    assert m.get_layer("logits").activation.__name__ == "linear"
    out = m(np.random.default_rng(0).uniform(size=(2,) + shape).astype("float32"))
    assert not np.allclose(np.asarray(out).sum(axis=1), 1.0)  # not probabilities


def test_architecture_details():
    m = models.conv2_pool3_fc200()
    assert m.get_layer("pool1").output.shape[1:] == (9, 9, 32)
    assert m.get_layer("conv2").output.shape[-1] == 64
    assert m.get_layer("fc1").output.shape[-1] == 200
    m3 = models.conv3_fc2()
    assert [m3.get_layer(f"conv{i}").output.shape[-1] for i in (1, 2, 3)] == [32, 64, 128]
    assert m3.get_layer("fc2").output.shape[-1] == 128
    r = models.resnet18((32, 32, 3), 10)
    assert r.count_params() == 11_173_962 + 9_600  # 11.17M weights + BN statistics
    assert r.get_layer("stage4_block2_out").output.shape[1:] == (4, 4, 512)
    rp = models.resnet18((64, 64, 3), 200, stem_pool=True, width=8)
    assert rp.get_layer("stem_pool").output.shape[1:] == (32, 32, 8)


def test_weight_decay_adds_losses_and_model_roundtrips(tmp_path):
    m = models.conv2_fc500(weight_decay=1e-4, mean=[0.5], std=[0.25])
    m(np.zeros((1, 28, 28, 1), "float32"))
    assert len(m.losses) == 4
    path = str(tmp_path / "m.keras")
    m.save(path)
    r = keras.models.load_model(path)
    x = np.random.default_rng(1).uniform(size=(3, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(m(x)), np.asarray(r(x)), rtol=1e-5, atol=1e-6)


def test_unknown_model_and_bad_std():
    with pytest.raises(InputError, match="Unknown model 'vgg'.*conv2_fc500"):
        models.build_model("vgg", (28, 28, 1), 10)
    with pytest.raises(InputError, match="std"):
        models.conv2_fc500(mean=[0.1], std=[0.0])
