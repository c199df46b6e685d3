"""Seed-fidelity visualizations (seeds 001 and 003): each test checks a property of the
result, not only that it runs. Tiny models, few steps: the whole file runs in < 60 s."""

import numpy as np
import pytest

from cnnvis_tf import datasets, testing
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import embedding, gallery, landscape, methods, neuron, segmentation, weights


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
