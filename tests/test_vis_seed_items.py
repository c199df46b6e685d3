"""Seed-fidelity visualizations (seeds 001 and 003): each test checks a property of the
result, not only that it runs. Tiny models, few steps: the whole file runs in < 60 s."""

import numpy as np
import pytest

from cnnvis_tf import datasets, testing
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import (
    embedding,
    fooling,
    gallery,
    inversion_net,
    landscape,
    methods,
    multifaceted,
    neuron,
    segmentation,
    style,
    weights,
)


@pytest.fixture(scope="module")
def tiny():
    return testing.trained_tiny_cnn()


@pytest.fixture(scope="module")
def mnist():
    """A tiny CNN fitted on 1,200 embedded MNIST digits (about 90% test accuracy)."""
    import keras

    data = datasets.load("mnist", embedded=True)
    keras.utils.set_random_seed(0)
    model = testing.tiny_cnn((28, 28, 1), 10, filters=8, fc_units=32)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.x_train[:1200], data.y_train[:1200], batch_size=32, epochs=3, verbose=0)
    return model, data.x_test[:200], data.y_test[:200]


# ----------------------------------------------------------------------------- seed 001


def test_gallery_labels_are_the_model_predictions(tiny):
    model, x, y = tiny
    pred, prob = gallery.Gallery(model)(x[:16], y[:16])
    logits = np.asarray(model(x[:16]))
    assert np.array_equal(pred, logits.argmax(-1))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(prob, (p / p.sum(-1, keepdims=True)).max(-1), rtol=1e-5)


def test_filter_slices_are_every_input_slice_of_one_second_layer_filter(tiny):
    model = tiny[0]
    vis = weights.FilterSlices(model)
    assert vis.layer == "conv2"  # the second conv layer by default (seed 001, Fig. 6)
    slices = vis(3)
    kernel = np.asarray(model.get_layer("conv2").kernel)
    assert slices.shape == kernel.shape[:3]  # all cin slices, none dropped
    np.testing.assert_array_equal(slices, kernel[..., 3])
    with pytest.raises(InputError, match="filter_index"):
        vis(kernel.shape[-1])


def test_activation_grid_shows_every_channel(tmp_path):
    model = testing.tiny_cnn(filters=10)
    x, y = testing.tiny_data(8)
    methods.run("activations", methods.Context(model, x, y), str(tmp_path))
    from matplotlib import image

    with np.load(tmp_path / "activations.npz") as data:
        assert data["conv1_relu"].shape[-1] == 10
    assert image.imread(tmp_path / "activations.png").shape[0] > 100
    from cnnvis_tf.vis import plotting

    fig = plotting.activation_grids(x[0], {"conv1_relu": np.ones((12, 12, 10))})
    sub = fig.subfigs[1]
    images = [ax for ax in sub.axes if ax.images]
    assert len(images) == 10  # every channel drawn, in a 4 x 3 grid (cols = ceil(sqrt(10)))
    assert sub.axes[0].get_subplotspec().get_gridspec().get_geometry() == (3, 4)


# ----------------------------------------------------------------------------- seed 003


def test_neuron_gradient_is_the_kernel_inside_the_receptive_field(tiny):
    model, x, _ = tiny
    vis = neuron.NeuronGradient(model, "conv1")
    g = vis(x[:2], channel=1, position=(5, 7))
    kernel = np.asarray(model.get_layer("conv1").kernel)[..., 0, 1]
    for gi in g[..., 0]:  # d conv1[5, 7, 1] / dx = the 3x3 kernel at rows 4-6, cols 6-8
        np.testing.assert_allclose(gi[4:7, 6:9], kernel, rtol=1e-5, atol=1e-7)
        gi[4:7, 6:9] = 0
        assert not gi.any()
    deep = neuron.NeuronGradient(model)
    channel, pos = deep.locate(x[0])
    assert deep.layer == "conv2_relu" and len(pos) == 2
    g = deep(x[0], channel, pos)[0, ..., 0]
    rows, cols = np.nonzero(g)
    assert g.any() and np.ptp(rows) < 8 and np.ptp(cols) < 8  # conv2 sees 8x8 pixels
    with pytest.raises(InputError, match="position"):
        deep(x[0], channel, (99, 0))


def test_l2_class_model_starts_at_zero_and_climbs(tiny):
    model = tiny[0]
    cm = neuron.L2ClassModel(model)
    imgs, hist = cm([0, 1, 2], steps=30, l2_weight=0.01)
    s0 = np.asarray(model(np.zeros((1, 12, 12, 1), "float32")))[0]
    np.testing.assert_allclose(hist[0], s0, rtol=1e-5, atol=1e-6)  # zeros: no L2 penalty yet
    assert (hist[-1] > hist[0] + 1.0).all()
    assert np.array_equal(np.asarray(model(imgs)).argmax(-1), [0, 1, 2])
    strong, _ = cm([0, 1, 2], steps=30, l2_weight=1.0)
    assert (strong**2).sum() < 0.5 * (imgs**2).sum()  # lambda shrinks the image


def test_loss_1d_interpolation_endpoints_are_the_two_models(tiny):
    model, x, y = tiny
    other = testing.trained_tiny_cnn(seed=1, epochs=3)[0]
    r = landscape.interpolate_models(model, other, x, y, alphas=[0.0, 0.5, 1.0])
    assert r["loss"][0] == pytest.approx(landscape.evaluate(model, x, y)[0], rel=1e-4, abs=1e-7)
    assert r["loss"][2] == pytest.approx(landscape.evaluate(other, x, y)[0], rel=1e-4, abs=1e-7)
    assert r["accuracy"][1] <= max(r["accuracy"][0], r["accuracy"][2])
    with pytest.raises(InputError, match="different architectures"):
        landscape.interpolate_models(model, testing.tiny_cnn(fc_units=8), x, y)


def test_grabcut_mask_covers_the_digit_more_than_the_background(mnist):
    model, x, y = mnist
    masks, maps = segmentation.SaliencyGrabCut(model)(x[:12], y[:12])
    assert masks.shape == maps.shape == (12, 28, 28)
    bright = x[:12, ..., 0] > 0.5
    on_digit = np.array([m[b].mean() for m, b in zip(masks, bright)])
    on_background = np.array([m[~b].mean() for m, b in zip(masks, bright)])
    assert on_digit.mean() > 2 * on_background.mean()
    assert (on_digit > on_background).mean() >= 0.75


def test_density_clusters_purity():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [20, 0], [0, 20]])
    labels = np.repeat([0, 1, 2], 40)
    pts = centers[labels] + rng.normal(size=(120, 2))
    r = embedding.density_clusters(pts, labels)
    assert r["num_clusters"] == 3 and r["purity"] == 1.0
    shuffled = embedding.density_clusters(pts, rng.permutation(labels))
    assert shuffled["purity"] < 0.7
    d = embedding.density_clusters(pts, labels, method="dbscan")
    assert d["num_clusters"] == 3 and d["purity"] == 1.0


def test_tsne_clusters_of_a_trained_model_are_pure(tiny):
    model, x, y = tiny
    r = embedding.TSNEClusters(model)(x[:90], y[:90])
    assert r["num_clusters"] >= 3 and r["purity"] > 0.9


def test_evolved_fooling_images_reach_99_percent_from_outputs_only(mnist):
    model = mnist[0]
    evo = fooling.EvolutionaryFooling(model)
    imgs, hist = evo(classes=[0, 3, 7], generations=150, seed=0)
    probs = np.exp(np.asarray(model(imgs)))
    probs /= probs.sum(-1, keepdims=True)
    assert (probs[[0, 1, 2], [0, 3, 7]] > 0.99).all()  # classified as the targets
    assert (np.diff(hist, axis=0) >= 0).all() and (hist[0] < 0.99).any()  # elites improve
    assert imgs.min() >= 0 and imgs.max() <= 1


def _two_mode_data(n=192, seed=0):
    """Class 0 is a bright bar at the top OR the bottom (two facets); class 1 a middle bar,
    class 2 a vertical bar."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    mode = rng.integers(0, 2, n)
    x = rng.uniform(0, 0.15, (n, 12, 12, 1))
    for i in range(n):
        if y[i] == 0:
            x[i, :4] += 0.7 * mode[i]
            x[i, 8:] += 0.7 * (1 - mode[i])
        elif y[i] == 1:
            x[i, 4:8] += 0.7
        else:
            x[i, :, 4:8] += 0.7
    return np.clip(x, 0, 1).astype("float32"), y, mode


def test_multifaceted_finds_one_facet_per_mode():
    import keras

    x, y, mode = _two_mode_data()
    keras.utils.set_random_seed(0)
    model = testing.tiny_cnn()
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=8, verbose=0)
    r = multifaceted.MultifacetedVisualization(model)(x, 0, num_facets=2, top=40, steps=20)
    assert (y[r["top"]] == 0).all()
    for c in range(2):  # each k-means cluster holds one mode only
        assert len(np.unique(mode[r["top"][r["cluster"] == c]])) == 1
    top_bright = r["init"][:, :4].mean(axis=(1, 2, 3)) > r["init"][:, 8:].mean(axis=(1, 2, 3))
    assert sorted(top_bright) == [False, True]  # the two starts are the two facets
    assert (r["history"][-1] > r["history"][0]).all()


def test_inversion_network_beats_the_mean_image(tiny):
    model, x, _ = tiny
    net = inversion_net.InversionNetwork(model, seed=0)
    loss = net.fit(x[:150], epochs=12)
    rec = net(x[150:])
    mse = ((rec - x[150:]) ** 2).mean()
    baseline = ((x[:150].mean(axis=0) - x[150:]) ** 2).mean()
    assert loss[-1] < loss[0] and mse < 0.25 * baseline


def _stripes():
    """A style image with a texture the bar images lack: a grid of thin stripes."""
    s = np.zeros((12, 12, 1), "float32")
    s[:, ::3] = 0.9
    s[::4, :] = 0.6
    return s


def test_neural_style_halves_the_style_loss(tiny):
    model, x, _ = tiny
    ns = style.NeuralStyle(model)
    s = _stripes()
    img, hist = ns(x[0], s, steps=40)
    assert hist[-1, 0] < 0.5 * hist[0, 0] and hist[0, 1] == 0  # starts at the content
    assert ns.style_loss(img, s)[0] == pytest.approx(hist[-1, 0], rel=1e-3)


def test_fast_style_output_has_less_style_loss_than_its_input(tiny):
    model, x, _ = tiny
    fs = style.FastStyleTransfer(model)
    s = _stripes()
    fs.fit(x[:16], s, epochs=15)
    out = fs(x[16:24])  # images the transformer never saw
    assert out.shape == x[16:24].shape and out.min() >= 0 and out.max() <= 1
    assert fs.style_loss(out, s).mean() < 0.8 * fs.style_loss(x[16:24], s).mean()


def test_loss_1d_method_with_another_model(tiny, tmp_path):
    model, x, y = tiny
    other = testing.trained_tiny_cnn(seed=2, epochs=2)[0]
    ctx = methods.Context(model, x[:48], y[:48], other_model=other)
    methods.run("loss_1d", ctx, str(tmp_path))
    with np.load(tmp_path / "loss_1d.npz") as data:
        alpha, loss = data["alpha"], data["loss"]
    i0, i1 = int(np.argmin(np.abs(alpha))), int(np.argmin(np.abs(alpha - 1)))
    assert alpha[i0] == 0 and alpha[i1] == 1
    assert loss[i0] == pytest.approx(landscape.evaluate(model, x[:48], y[:48])[0], rel=1e-4,
                                     abs=1e-7)
    assert loss[i1] == pytest.approx(landscape.evaluate(other, x[:48], y[:48])[0], rel=1e-4,
                                     abs=1e-7)
