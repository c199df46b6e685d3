"""Tests of the visualization maths (cnnvis_tf.vis) on tiny models."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnnvis_tf import testing, volatility
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import (
    _model,
    adversarial,
    cam,
    feature_vis,
    guided,
    inversion,
    landscape,
    occlusion,
    patches,
    saliency,
    weights,
)


@pytest.fixture(scope="module")
def trained():
    return testing.trained_tiny_cnn()


@pytest.fixture(scope="module")
def reloaded(trained, tmp_path_factory):
    """The trained model saved to .keras and loaded back in this process."""
    path = str(tmp_path_factory.mktemp("model") / "model.keras")
    trained[0].save(path)
    return keras.models.load_model(path)


def _predict(model, x):
    return np.asarray(model(tf.constant(x), training=False))


def _direct_grad(model, x, classes):
    xt = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = model(xt)
        score = tf.reduce_sum(tf.gather(out, classes, axis=1, batch_dims=1))
    return tape.gradient(score, xt).numpy()


def test_saliency_equals_abs_gradient_max_over_channels(trained):
    model, x, y = trained
    maps = saliency.Saliency(model)(x[:4], y[:4])
    expected = np.abs(_direct_grad(model, x[:4], y[:4])).max(axis=-1)
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-7)


def test_saliency_rgb_model_takes_max_over_channels():
    model = testing.tiny_cnn((8, 8, 3), 2)
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("float32")
    maps = saliency.Saliency(model)(x, [0, 1])
    assert maps.shape == (2, 8, 8)
    np.testing.assert_allclose(maps, np.abs(_direct_grad(model, x, [0, 1])).max(-1), rtol=1e-5)


def test_smoothgrad_is_seeded_and_differs_from_vanilla(trained):
    model, x, y = trained
    sg = saliency.SmoothGrad(model)
    a, b = sg(x[:1], y[:1], seed=3), sg(x[:1], y[:1], seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, saliency.Saliency(model)(x[:1], y[:1]))


def test_integrated_gradients_completeness(trained):
    model, x, y = trained
    attr = saliency.IntegratedGradients(model, steps=64)(x[:2], y[:2])
    logits, base = _predict(model, x[:2]), _predict(model, np.zeros_like(x[:2]))
    gap = logits[[0, 1], y[:2]] - base[[0, 1], y[:2]]
    np.testing.assert_allclose(attr.reshape(2, -1).sum(1), gap, rtol=0.02, atol=0.05)


def _relu_first_model():
    """Input -> ReLU -> conv -> ... : every input-space guided/deconv signal must be >= 0."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.ReLU(name="in_relu")(inputs)
    h = keras.layers.Conv2D(3, 3, activation="relu", name="conv1")(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(h))


def test_guided_backprop_and_deconvnet_nonnegative_through_relu_and_differ_from_gradient():
    keras.utils.set_random_seed(1)
    model = _relu_first_model()
    x = np.random.default_rng(1).normal(size=(4, 8, 8, 1)).astype("float32")
    grad = _direct_grad(model, x, [0, 1, 0, 1])
    for cls in (guided.GuidedBackprop, guided.Deconvnet):
        sig = cls(model, clip_min=-5.0, clip_max=5.0)(x, [0, 1, 0, 1])
        assert sig.shape == x.shape
        assert (sig >= 0).all()
        assert not np.allclose(sig, grad)
    assert (grad < 0).any()  # plain gradients are signed


def test_guided_backprop_zero_where_relu_input_negative_and_model_unchanged(trained):
    model, x, y = trained
    before = _predict(model, x[:3])
    gb = guided.GuidedBackprop(model)
    sig = gb(x[:3], y[:3])
    np.testing.assert_array_equal(_predict(model, x[:3]), before)
    assert not np.allclose(sig, _direct_grad(model, x[:3], y[:3]))
    # a neuron of conv2 and a feature map of it
    assert gb(x[:1], layer="conv2_relu", channel=1, position=(2, 3)).shape == x[:1].shape
    assert np.isfinite(guided.Deconvnet(model).project(x[:2], "conv2_relu")).all()


def test_occlusion_patch_covering_nothing_leaves_probabilities(trained):
    model, x, y = trained
    res = occlusion.Occlusion(model, patch_size=0, stride=3)(x[0], y[0])
    np.testing.assert_allclose(res.true_prob, res.base_prob, rtol=1e-5)
    assert len(res.table()) == res.heatmap.size


def test_occlusion_batched_equals_per_position_and_grid(trained):
    model, x, y = trained
    occ = occlusion.Occlusion(model, patch_size=4, stride=2, batch_size=7)
    a, b = occ(x[1], y[1]), occ(x[1], y[1], batched=False)
    np.testing.assert_allclose(a.true_prob, b.true_prob, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a.predicted, b.predicted)
    assert a.heatmap.shape == (5, 5)
    # seed 001 geometry: 28x28, 14x14 patch, stride 7 -> 9 positions
    pos, nr, nc = occlusion.Occlusion(model).positions(28, 28)
    assert (nr, nc) == (3, 3) and pos[-1].tolist() == [14, 14]


def test_occlusion_rejects_bad_arguments(trained):
    with pytest.raises(InputError, match="stride"):
        occlusion.Occlusion(trained[0], stride=0)


def test_filters_and_activations(trained):
    model, x, _ = trained
    first = weights.filters(model)
    assert first["rgb"] and first["kernel"].shape == (3, 3, 1, 4)
    deep = weights.filters(model, "conv2")
    assert not deep["rgb"] and deep["kernel"].shape == (3, 3, 4, 4)
    acts = weights.activations(model, x[0])
    assert set(acts) == {"conv1_relu", "conv2_relu"} and acts["conv2_relu"].shape == (6, 6, 4)
    assert (acts["conv1_relu"] >= 0).all()
    with pytest.raises(InputError, match="Choose one of: .*conv1"):
        weights.filters(model, "fc1")
    with pytest.raises(InputError, match="Unknown layer 'nope'.*conv1"):
        weights.filters(model, "nope")


def test_cams_shapes_range_and_reloaded_model_matches(trained, reloaded):
    model, x, y = trained
    for cls in (cam.GradCAM, cam.GradCAMPlusPlus, cam.ScoreCAM):
        maps = cls(model)(x[:2], y[:2])
        assert maps.shape == (2, 12, 12)
        assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
        np.testing.assert_allclose(cls(reloaded)(x[:2], y[:2]), maps, atol=1e-5)
    with pytest.raises(InputError, match="no spatial output"):
        cam.GradCAM(model, "fc1")


def test_gradcam_defaults_to_rectified_maps_and_matches_reference(trained):
    import tensorflow as tf

    model, x, y = trained
    vis = cam.GradCAM(model)
    assert vis.layer == "conv2_relu"  # not the pre-ReLU conv2 (often an all-zero CAM)
    feats = keras.Model(model.inputs, [model.get_layer("conv2_relu").output, model.output])
    with tf.GradientTape() as tape:
        a, logits = feats(x[:6])
        score = tf.gather(logits, y[:6], batch_dims=1)
    alpha = tf.reduce_mean(tape.gradient(score, a), axis=(1, 2), keepdims=True)
    ref = np.asarray(tf.nn.relu(tf.reduce_sum(alpha * a, -1)))  # Selvaraju et al. eq. 1-2
    got = vis(x[:6], y[:6], normalize=False)
    # tf-keras-vis upsamples the 6x6 map to 12x12: compare peak values and empty maps.
    np.testing.assert_allclose(got.reshape(6, -1).max(1), ref.reshape(6, -1).max(1),
                               rtol=0.15, atol=1e-6)
    assert (got.reshape(6, -1).max(1) > 0).any()


def test_reloaded_model_saliency_matches(trained, reloaded):
    model, x, y = trained
    np.testing.assert_allclose(saliency.Saliency(reloaded)(x[:2], y[:2]),
                               saliency.Saliency(model)(x[:2], y[:2]), rtol=1e-5)


def test_sequential_and_softmax_models_are_accepted(trained):
    model, x, y = trained
    seq = keras.Sequential([keras.Input((12, 12, 1))] + model.layers[1:])
    np.testing.assert_allclose(saliency.Saliency(seq)(x[:2], y[:2]),
                               saliency.Saliency(model)(x[:2], y[:2]), rtol=1e-5)
    soft = keras.Model(model.inputs[0], keras.layers.Softmax()(model.outputs[0]))
    np.testing.assert_allclose(_model.ResolvedModel(soft).logits(x[:4]),
                               _predict(model, x[:4]), rtol=1e-5)
    dense_soft = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, "softmax")])
    z = np.ones((1, 4), "float32")
    lin = _model.ResolvedModel(dense_soft).logits(z)
    np.testing.assert_allclose(_model.softmax(lin), _predict(dense_soft, z), rtol=1e-5)
    assert cam.GradCAM(seq)(x[:1], y[:1]).shape == (1, 12, 12)


def test_subclassed_model_is_wrapped(trained):
    model, x, y = trained

    class Wrapper(keras.Model):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def call(self, inputs):
            return self.inner(inputs)

    sub = Wrapper(model)
    sub(x[:1])
    np.testing.assert_allclose(saliency.Saliency(sub)(x[:2], y[:2]),
                               saliency.Saliency(model)(x[:2], y[:2]), rtol=1e-5)
    with pytest.raises(InputError, match="keras.Model"):
        saliency.Saliency(object())


@pytest.mark.parametrize("reg", ["none", "l2", "yosinski"])
def test_activation_maximization_improves_class_score(trained, reg):
    am = feature_vis.ActivationMaximization(trained[0])
    start = np.full((3, 12, 12, 1), 0.5, "float32")
    imgs = am([0, 1, 2], steps=15, regularization=reg)
    assert imgs.min() >= 0 and imgs.max() <= 1
    assert (am.objective(imgs, [0, 1, 2]) > am.objective(start, [0, 1, 2])).all()


def test_filter_maximization_improves_filter_activation(trained):
    am = feature_vis.ActivationMaximization(trained[0], "conv2")
    start = np.full((4, 12, 12, 1), 0.5, "float32")
    imgs = am(range(4), steps=15, tv_weight=0.1)
    assert (am.objective(imgs, range(4)) > am.objective(start, range(4))).all()
    with pytest.raises(InputError, match="regularization"):
        am([0], regularization="bogus")


def test_inversion_and_deepdream_improve_objectives(trained):
    model, x, _ = trained
    _, hist = inversion.FeatureInversion(model, "conv2_relu")(x[:2], steps=30)
    assert hist[-1, 0] < 0.5 * hist[0, 0] and hist[-1, 1] < hist[0, 1]
    _, obj = inversion.DeepDream(model, "conv2_relu")(x[:2], steps=5)
    assert obj[-1] > obj[0]


def test_receptive_field_and_top_patches(trained):
    model, x, _ = trained
    rf = patches.receptive_field(model, "conv2_relu")
    assert (rf.size, rf.jump) == (8.0, 2.0)  # 3x3 conv, 2x2 pool, 3x3 conv
    r = patches.top_patches(model, x, "conv2_relu", channels=[0, 1], k=3)
    assert r["patches"].shape == (2, 3, 8, 8, 1)
    assert (np.diff(r["activations"], axis=1) <= 0).all()
    assert (np.nan_to_num(r["patches"], nan=0.0) <= 1).all()


def test_loss_1d_endpoints_equal_initial_and_trained_losses(trained):
    model, x, y = trained
    init = testing.tiny_cnn(seed=0)
    r = landscape.loss_1d(model, init.get_weights(), x, y, alphas=[0.0, 0.5, 1.0])
    assert r["loss"][0] == pytest.approx(landscape.evaluate(init, x, y)[0], rel=1e-5)
    assert r["loss"][2] == pytest.approx(landscape.evaluate(model, x, y)[0], rel=1e-5)
    assert r["accuracy"][2] > 0.8
    with pytest.raises(InputError, match="start weights"):
        landscape.loss_1d(model, init.get_weights()[:-1], x, y)


def test_loss_2d_minimum_near_trained_weights(trained):
    model, x, y = trained
    before = [w.copy() for w in model.get_weights()]
    r = landscape.loss_2d(model, x[:64], y[:64], span=1.0, resolution=5)
    assert r["loss"].shape == (5, 5)
    assert r["loss"][2, 2] == pytest.approx(landscape.evaluate(model, x[:64], y[:64])[0],
                                            rel=1e-5)
    assert r["loss"][2, 2] <= r["loss"].max()
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_adversarial_volatility_groups_and_fooling_rate(trained):
    model, x, y = trained
    rng = np.random.default_rng(0)
    x_adv = np.clip(x[:30] + rng.normal(0, 0.4, x[:30].shape), 0, 1).astype("float32")
    pred = _predict(model, x_adv).argmax(-1)
    pairs = {"x": x[:30], "x_adv": x_adv, "y": y[:30], "pred_clean": y[:30], "pred_adv": pred}
    res = adversarial.analyze(model, pairs, by="orig")
    assert res["layers"] == ["conv1_relu", "conv2_relu", "fc1_relu"]
    vol = res["volatility/fc1_relu"]
    assert vol.shape == (30, 16) and (vol >= 0).all()
    same = adversarial.volatility(model, x[:5], x[:5], ["fc1_relu"])["fc1_relu"]
    np.testing.assert_allclose(same, 0.0, atol=1e-6)
    rate = res["fooling_rate/conv2_relu"]
    assert rate.shape == (4,) and 0 <= rate.min() and rate.max() <= 1
    assert rate.sum() == pytest.approx(1.0)  # top 10% of 4 neurons = 1 neuron per pair
    groups = volatility.group_indices(pairs["y"], pred, "both")
    assert sum(len(v) for v in groups.values()) == int((pred != y[:30]).sum())
    assert all("->" in k for k in groups)
    with pytest.raises(InputError, match="grouping"):
        volatility.group_indices(pairs["y"], pred, "source")


def _direct_scorecam(model, x, classes, layer="conv2_relu"):
    """Score-CAM from scratch on logits (Wang et al. 2020): w_k = softmax(f(x * M_k))_c,
    M_k the k-th map upsampled (bilinear) and scaled to [0, 1]; CAM = ReLU(sum_k w_k A_k)."""
    feats = keras.Model(model.inputs, model.get_layer(layer).output)
    acts = np.asarray(feats(x))
    cams = []
    for img, a, c in zip(x, acts, classes):
        w = []
        for k in range(a.shape[-1]):
            m = tf.image.resize(a[None, :, :, k, None], img.shape[:2], "bilinear")[0].numpy()
            m = (m - m.min()) / max(m.max() - m.min(), 1e-7)
            w.append(tf.nn.softmax(model(img[None] * m))[0, c].numpy())
        cams.append(np.maximum((a * np.asarray(w)).sum(-1), 0))
    return np.asarray(cams)


def test_scorecam_matches_direct_computation_on_logits_and_depends_on_class(trained):
    model, x, y = trained
    vis = cam.ScoreCAM(model)
    for c in range(3):
        got = vis.low_res(x[:3], np.full(3, c))
        np.testing.assert_allclose(got, _direct_scorecam(model, x[:3], [c] * 3), rtol=1e-4,
                                   atol=1e-6)
    # one softmax only: the maps of different classes differ clearly
    maps = [vis(x[:3], np.full(3, c), normalize=False) for c in range(3)]
    assert np.abs(maps[0] - maps[1]).max() > 0.2 * np.abs(maps[0]).max()
    soft = keras.Model(model.inputs[0], keras.layers.Softmax()(model.outputs[0]))
    np.testing.assert_allclose(cam.ScoreCAM(soft).low_res(x[:3], y[:3]),
                               _direct_scorecam(model, x[:3], y[:3]), rtol=1e-4, atol=1e-6)


def test_occlusion_covers_the_whole_image_when_stride_does_not_divide(trained):
    model, x, y = trained
    occ = occlusion.Occlusion(model, patch_size=5, stride=3)
    pos, nr, nc = occ.positions(12, 12)
    assert (nr, nc) == (4, 4) and pos[-1].tolist() == [7, 7]
    covered = np.zeros((12, 12), bool)
    for r, c in pos:
        covered[r : r + 5, c : c + 5] = True
    assert covered.all()
    res = occ(x[0], y[0])
    assert res.heatmap.shape == (4, 4) and len(res.table()) == 16
