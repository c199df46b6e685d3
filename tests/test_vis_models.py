"""Every visualizer on every model type: functional, Sequential, subclassed, softmax-headed
and nested (a softmax head around a model). All compute the same function as the trained
functional tiny CNN, so every method must give the functional model's numbers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnnvis_tf import testing
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import (
    _model,
    adversarial,
    cam,
    embedding,
    feature_vis,
    guided,
    inversion,
    landscape,
    occlusion,
    patches,
    saliency,
    weights,
)

KINDS = ["functional", "sequential", "subclassed", "softmax", "nested"]


class TwoConv(keras.Model):
    """A subclassed CNN with two Conv2D layers (it reuses the trained layers)."""

    def __init__(self, layers, **kwargs):
        super().__init__(**kwargs)
        self.blocks = layers

    def call(self, x, training=False):
        for layer in self.blocks:
            x = layer(x, training=training)
        return x


@pytest.fixture(scope="module")
def trained():
    return testing.trained_tiny_cnn()


def _make(kind, model):
    if kind == "functional":
        return model
    if kind == "sequential":
        return keras.Sequential([keras.Input((12, 12, 1))] + model.layers[1:])
    if kind == "subclassed":
        sub = TwoConv(model.layers[1:])
        sub(np.zeros((1, 12, 12, 1), "float32"))
        return sub
    if kind == "softmax":
        return keras.Model(model.inputs[0], keras.layers.Softmax()(model.outputs[0]))
    inputs = keras.Input((12, 12, 1))
    return keras.Model(inputs, keras.layers.Softmax(name="head")(model(inputs)))


@pytest.fixture(scope="module")
def zoo(trained):
    return {kind: _make(kind, trained[0]) for kind in KINDS}


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a, "float64"), np.asarray(b, "float64"),
                               rtol=1e-4, atol=1e-5)


def _run_methods(model, x, y, tmp):
    """name -> numbers of every method on ``model``."""
    out = {
        "saliency": saliency.Saliency(model)(x[:2], y[:2]),
        "smoothgrad": saliency.SmoothGrad(model)(x[:1], y[:1], smooth_samples=3, seed=1),
        "integrated_gradients": saliency.IntegratedGradients(model, steps=8)(x[:2], y[:2]),
        "guided_backprop": guided.GuidedBackprop(model)(x[:2], y[:2]),
        "guided_neuron": guided.GuidedBackprop(model)(x[:1], layer="conv2_relu", channel=1),
        "deconvnet": guided.Deconvnet(model)(x[:2], y[:2]),
        "occlusion": occlusion.Occlusion(model, 4, 3)(x[0], y[0]).true_prob,
        "class_model": feature_vis.ActivationMaximization(model)([0, 1], steps=3),
        "filter_max": feature_vis.ActivationMaximization(model, "conv2")([0, 1], steps=3),
        "inversion": inversion.FeatureInversion(model, "conv2_relu")(x[:1], steps=3)[1],
        "deepdream": inversion.DeepDream(model, "conv2_relu")(x[:1], steps=2)[1],
        "features": embedding.features(model, x[:8]),
        "neighbors": embedding.neighbors(model, x[:8], [0, 1], k=3)["feature_dist"],
        "top_patches": patches.top_patches(model, x[:8], "conv2_relu", k=2)["activations"],
        "receptive_field": patches.receptive_field(model, "conv2_relu").size,
        "activations": weights.activations(model, x[0])["conv2_relu"],
        "filters": weights.filters(model, "conv2")["kernel"],
        "loss_1d": landscape.loss_1d(model, [w * 0 for w in model.get_weights()], x[:16],
                                     y[:16], alphas=[0.5, 1.0])["loss"],
    }
    for cls in (cam.GradCAM, cam.GradCAMPlusPlus, cam.ScoreCAM):
        vis = cls(model)
        assert vis.layer == "conv2_relu"
        out[cls.__name__] = vis(x[:2], y[:2], normalize=False)
    pairs = {"x": x[:6], "x_adv": np.clip(x[:6] + 0.2, 0, 1), "y": y[:6], "pred_clean": y[:6],
             "pred_adv": (y[:6] + 1) % 3}
    res = adversarial.analyze(model, pairs, layers=["conv2_relu", "fc1_relu"])
    out["adversarial"] = res["volatility/fc1_relu"]
    out["projection"] = next(v for k, v in res.items() if k.startswith("projection/"))
    return out


@pytest.fixture(scope="module")
def reference(trained, tmp_path_factory):
    model, x, y = trained
    return _run_methods(model, x, y, tmp_path_factory.mktemp("ref"))


@pytest.mark.parametrize("kind", KINDS[1:])
def test_every_method_matches_the_functional_model(kind, zoo, trained, reference, tmp_path):
    _, x, y = trained
    got = _run_methods(zoo[kind], x, y, tmp_path)
    assert set(got) == set(reference)
    for name in reference:
        if name == "loss_1d" and kind in ("softmax", "nested"):
            continue  # the zeroed weights differ: the softmax head has none, the rest match
        _close(got[name], reference[name]), name


@pytest.mark.parametrize("kind", KINDS)
def test_layers_are_resolved_in_call_order_at_any_depth(kind, zoo):
    r = _model.ResolvedModel(zoo[kind])
    assert [k for k in r.order if k.startswith("conv")] == [
        "conv1", "conv1_relu", "conv2", "conv2_relu"]
    assert r.conv_layers() == ["conv1", "conv2"] and r.last_spatial_layer() == "conv2_relu"
    assert r.head == "logits" and r.shapes["conv2_relu"] == (6, 6, 4)


def test_subclassed_gradcam_finds_the_conv_layers_and_guided_backprop_runs(zoo, trained):
    _, x, y = trained
    sub = zoo["subclassed"]
    assert cam.GradCAM(sub).layer == "conv2_relu"
    sig = guided.GuidedBackprop(sub)(x[:2], y[:2])
    assert not np.allclose(sig, saliency.gradients(_model.ResolvedModel(sub), x[:2], y[:2]))


def test_nested_guided_backprop_is_not_the_plain_gradient(zoo, trained):
    _, x, y = trained
    nested = zoo["nested"]
    grad = saliency.gradients(_model.ResolvedModel(nested), x[:2], y[:2])
    for cls in (guided.GuidedBackprop, guided.Deconvnet):
        assert not np.allclose(cls(nested)(x[:2], y[:2]), grad)


def test_nested_features_are_not_raw_pixels(zoo, trained):
    _, x, _ = trained
    feats = embedding.features(zoo["nested"], x[:4])
    assert feats.shape == (4, 16)  # fc1_relu, the input of the logits layer
    _close(feats, embedding.features(trained[0], x[:4]))


def test_probability_outputs_without_a_softmax_layer_become_log_probabilities(trained):
    model, x, _ = trained

    class HiddenSoftmax(keras.Model):
        def __init__(self, inner, **kwargs):
            super().__init__(**kwargs)
            self.inner = inner

        def call(self, x):
            return tf.nn.softmax(self.inner(x))

    sub = HiddenSoftmax(model)
    sub(x[:1])
    logits = _model.ResolvedModel(sub).logits(x[:4])
    z = np.asarray(model(x[:4]))
    _close(logits, z - np.log(np.exp(z).sum(-1, keepdims=True)))
    assert cam.GradCAM(sub)(x[:2]).shape == (2, 12, 12)


def test_hidden_relus_give_one_clear_error(trained):
    _, x, y = trained

    class HiddenRelu(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Conv2D(2, 3, name="c")
            self.out = keras.layers.Dense(3, name="o")

        def call(self, x):
            return self.out(keras.ops.mean(tf.nn.relu(self.conv(x)), axis=(1, 2)))

    sub = HiddenRelu()
    sub(x[:1])
    for cls in (guided.GuidedBackprop, guided.Deconvnet):
        with pytest.raises(InputError, match=f"{cls.__name__} rewrites the backward pass"):
            cls(sub)(x[:1], y[:1])
    assert cam.GradCAM(sub).layer == "c"  # the other gradient methods still work
    assert saliency.Saliency(sub)(x[:1], y[:1]).shape == (1, 12, 12)


def test_model_is_not_modified_by_the_hooks(zoo, trained):
    _, x, y = trained
    for model in zoo.values():
        before = np.asarray(model(x[:3]))
        guided.GuidedBackprop(model)(x[:3], y[:3])
        cam.ScoreCAM(model)(x[:1])
        np.testing.assert_array_equal(np.asarray(model(x[:3])), before)
        assert not any("call" in vars(layer) for layer in _model.ResolvedModel(model).layers
                       .values())
