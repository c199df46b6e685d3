"""Figures fit for a paper (issue 11 §4): the matplotlib Figure objects of cnnvis_tf.vis.plotting
are inspected directly (synthetic arrays, no TensorFlow), plus one visualize run for the flags."""

import json
import os

import numpy as np
import pytest
from matplotlib.colors import to_rgba

from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import occlusion, plotting
from conftest import run_script


@pytest.fixture(autouse=True)
def _png_after_each_test():
    yield
    plotting.set_figure_format("png")


def _draw(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _inches(fig):
    return tuple(fig.get_size_inches())


# ----------------------------------------------------------------------------- grids


@pytest.mark.parametrize("n, shape", [(32, (4, 8)), (64, (8, 8)), (16, (4, 4)), (10, (3, 4)),
                                      (128, (8, 16)), (6, (2, 3)), (1, (1, 1)), (3, (2, 2))])
def test_grid_shape_is_near_square(n, shape):
    rows, cols = plotting.grid_shape(n)
    assert (rows, cols) == shape
    assert rows * cols >= n and rows * cols - n < cols  # no empty row
    assert rows <= cols <= 2 * rows or n < 3


def test_activation_grid_for_32_channels_is_4x8_and_sized_to_it():
    image = np.zeros((28, 28, 1), "float32")
    fig = plotting.activation_grids(image, {"conv1_relu": np.random.rand(28, 28, 32),
                                            "conv2_relu": np.random.rand(14, 14, 64)})
    geometries = [sub.axes[0].get_subplotspec().get_gridspec().get_geometry()
                  for sub in fig.subfigs[1:]]
    assert geometries == [(4, 8), (8, 8)]
    assert all(sum(1 for ax in sub.axes if ax.images) == n
               for sub, n in zip(fig.subfigs[1:], (32, 64)))
    w, h = _inches(fig)
    assert 8 < w < 20 and 3 <= h < 8  # ~0.6 in per channel panel, not a wall of 2-px maps


def test_filters_of_a_gray_first_layer_share_one_signed_scale():
    kernel = np.random.default_rng(0).normal(size=(5, 5, 1, 32)).astype("float32")
    fig = plotting.filters(kernel, True, "conv1")
    ims = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(ims) == 32
    m = float(np.abs(kernel).max())
    assert all(im.get_clim() == pytest.approx((-m, m)) for im in ims)
    assert all(im.get_cmap().name == "RdBu_r" for im in ims)
    assert fig.axes[0].get_subplotspec().get_gridspec().get_geometry() == (4, 8)


# ----------------------------------------------------------------------------- robustness


CURVES = {"vanilla": {"Clean": 0.95, 50.0: 0.94, 45.0: 0.92, 40.0: 0.90, 33.0: 0.84},
          "adv": {"Clean": 0.93, 50.0: 0.93, 45.0: 0.925, 40.0: 0.92, 33.0: 0.91}}


def test_robustness_curve_zoomed_dashed_clean_ticks_at_levels_legend_outside():
    fig = plotting.curves_figure(CURVES, xlabel="SNR (dB)", reverse_x=True)
    ax = fig.axes[0]
    renderer = _draw(fig)
    lo, hi = ax.get_ylim()
    assert 80 <= lo <= 84 and 95 <= hi <= 99  # data 84..95 %, margin <= 4 points
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert sorted(round(float(ln.get_ydata()[0]), 6) for ln in dashed) == [93.0, 95.0]
    assert sorted(ax.get_xticks()) == [33.0, 40.0, 45.0, 50.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["33", "40", "45", "50"]
    assert ax.xaxis_inverted()  # SNR falls to the right: the attack grows to the right
    assert "stronger attack →" in ax.get_xlabel()
    legend = ax.get_legend()
    assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1
    assert "clean accuracy" in [t.get_text() for t in legend.get_texts()]
    w, h = _inches(fig)
    assert 5 <= w <= 8 and 3 <= h <= 5


def test_eps_curve_grows_to_the_right_and_error_bars_enter_the_limits():
    curves = {"a": {"Clean": 0.99, 0.1: 0.6, 0.2: 0.3, 0.3: 0.05}}
    errors = {"a": {"Clean": 0.0, 0.1: 0.05, 0.2: 0.02, 0.3: 0.04}}
    fig = plotting.curves_figure(curves, xlabel="L-inf eps", errors=errors)
    ax = fig.axes[0]
    assert not ax.xaxis_inverted()
    lo, hi = ax.get_ylim()
    assert -2 <= lo <= 1 and 99 <= hi <= 102  # 0.05-0.04 = 1 % at the bottom, clean 99 %
    assert list(ax.get_xticks()) == pytest.approx([0.1, 0.2, 0.3])


# ----------------------------------------------------------------------------- attack examples


def _attack_arrays(n=4, shape=(28, 28, 1)):
    rng = np.random.default_rng(1)
    x = rng.uniform(0.2, 0.8, (n,) + shape).astype("float32")
    scale = np.array([0.009, 0.2, 0.05, 0.1][:n], "float32").reshape(-1, 1, 1, 1)
    x_adv = x + scale * np.sign(rng.normal(size=x.shape)).astype("float32")
    return x, x_adv, scale.ravel()


def test_attack_examples_share_one_symmetric_perturbation_scale_with_a_colorbar():
    x, x_adv, scale = _attack_arrays()
    y = np.array([0, 1, 2, 3])
    fig = plotting.examples_figure(x, x_adv, y, y, np.array([0, 2, 2, 0]), None, attack="pgd",
                                   budget="eps=0.2 (L∞)", success_rate=0.5)
    deltas = [ax.images[0] for ax in fig.axes if ax.images and ax.images[0].get_cmap().name ==
              "RdBu_r"]
    assert len(deltas) == 4
    assert len({im.get_clim() for im in deltas}) == 1  # one shared scale
    assert deltas[0].get_clim() == pytest.approx((-0.2, 0.2), rel=1e-5)
    shown = [float(np.abs(im.get_array()).max()) for im in deltas]
    assert shown == pytest.approx(scale.tolist(), rel=1e-3)  # 0.009 drawn at 0.009/0.2
    colorbars = [c for ax in fig.axes for c in ax.child_axes if "δ" in c.get_ylabel()]
    assert len(colorbars) == 1
    title = fig._suptitle.get_text()
    assert "pgd" in title and "eps=0.2" in title and "success rate 50.0%" in title


def test_attack_examples_mark_fooled_show_targets_and_wrap_long_names():
    x, x_adv, _ = _attack_arrays()
    names = [f"a very long class name number {i} of the dataset" for i in range(4)]
    y, targets = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 0])
    pred_adv = np.array([1, 1, 3, 3])  # examples 0 and 2 reach their target
    fig = plotting.examples_figure(x, x_adv, y, y, pred_adv, names, targets=targets,
                                   attack="lbfgs", success_rate=0.5)
    renderer = _draw(fig)
    adv_axes = [ax for ax in fig.axes if "pred:" in ax.get_title() and "true:" not in
                ax.get_title()]
    assert len(adv_axes) == 4
    red = to_rgba("tab:red")
    fooled = [to_rgba(ax.title.get_color()) == red for ax in adv_axes]
    assert fooled == [True, False, True, False]
    assert all(to_rgba(ax.spines["left"].get_edgecolor()) == red for ax, f in
               zip(adv_axes, fooled) if f)
    assert all("target: " in ax.get_title() for ax in adv_axes)
    assert "number 2" in adv_axes[1].get_title().replace("\n", " ")  # target of example 1
    clean_titles = [ax.title for ax in fig.axes if "true:" in ax.get_title()]
    boxes = sorted((t.get_window_extent(renderer) for t in clean_titles), key=lambda b: b.x0)
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:]))  # no overlapping names
    assert "2/4 shown examples fooled" in fig._suptitle.get_text()


def test_plot_examples_writes_the_figure_format(tmp_path):
    x, x_adv, _ = _attack_arrays(2)
    plotting.set_figure_format("pdf")
    path = plotting.plot_examples(str(tmp_path / "examples.png"), x, x_adv, [0, 1], [0, 1],
                                  [1, 1], None)
    assert path.endswith("examples.pdf") and not os.path.exists(tmp_path / "examples.png")
    with open(path, "rb") as f:
        assert f.read(5) == b"%PDF-"


# ----------------------------------------------------------------------------- occlusion


def test_pixel_map_upsamples_with_the_patch_geometry():
    occ = occlusion.Occlusion.__new__(occlusion.Occlusion)
    occ.patch_size, occ.stride = 14, 7
    positions, nr, nc = occ.positions(28, 28)
    values = np.arange(len(positions), dtype="float32")  # 0..8 on the 3x3 grid
    m = occlusion.pixel_map(positions, values, (28, 28), 14, default=-1.0)
    assert m.shape == (28, 28)
    assert m[0, 0] == 0 and m[27, 27] == 8  # corners: covered by one patch each
    assert m[10, 10] == pytest.approx(np.mean([0, 1, 3, 4]))  # rows/cols 7..13: 4 patches
    assert occlusion.pixel_map(positions, values, (28, 28), 0, 0.7).max() == \
        pytest.approx(0.7)  # an empty patch covers nothing


def test_occlusion_figure_shows_the_map_at_image_resolution():
    image = np.random.default_rng(0).uniform(size=(28, 28, 1)).astype("float32")
    occ = occlusion.Occlusion.__new__(occlusion.Occlusion)
    occ.patch_size, occ.stride = 14, 7
    positions, nr, nc = occ.positions(28, 28)
    p = np.linspace(0.1, 0.9, len(positions)).astype("float32")
    res = occlusion.OcclusionResult(p.reshape(nr, nc), positions, p, np.zeros(9, "int64"), 0.99,
                                    0, occlusion.pixel_map(positions, p, (28, 28), 14, 0.99))
    fig = plotting.occlusion(image, res, 14, ["zero"], stride=7, fill=0.5)
    maps = [im for ax in fig.axes for im in ax.images if im.get_cmap().name == "magma"]
    assert len(maps) == 1
    assert maps[0].get_array().shape == (28, 28)  # image resolution, not the 3x3 grid
    assert maps[0].get_extent() == [-0.5, 27.5, 27.5, -0.5]
    assert maps[0].get_alpha() in (None, 1.0)  # opaque map: the colour bar reads true
    titles = " ".join(ax.get_title() for ax in fig.axes)
    assert "patch 14x14px, stride 7px" in titles and "(14,0)" not in titles
    assert "most damaging patch at (0,0)" in titles  # p is smallest at the first position


# ----------------------------------------------------------------------------- other figures


def test_loss_1d_has_loss_and_accuracy_on_twin_axes():
    alpha = np.linspace(-0.25, 1.25, 7)
    loss, acc = np.linspace(2.5, 0.1, 7), np.linspace(0.1, 0.98, 7)
    fig = plotting.loss_accuracy(alpha, loss, acc, "alpha", "interpolation", vlines=(0, 1))
    left, right = fig.axes
    assert left.get_shared_x_axes().joined(left, right)
    assert left.get_ylabel() == "cross-entropy loss" and right.get_ylabel() == "accuracy (%)"
    np.testing.assert_allclose(right.get_lines()[0].get_ydata(), 100 * acc)
    assert right.get_ylim()[0] <= 0 and right.get_ylim()[1] >= 100


def test_loss_2d_ticks_are_few_and_levels_log_spaced_for_wide_ranges():
    g = np.linspace(-1, 1, 11)
    a, b = np.meshgrid(g, g)
    fig = plotting.loss_2d(g, g, 0.1 + 50 * (a ** 2 + b ** 2) ** 2, "surface")
    ax = fig.axes[0]
    _draw(fig)
    for ticks in (ax.get_xticks(), ax.get_yticks()):
        assert len([t for t in ticks if -1 <= t <= 1]) <= 6
    cs = next(c for c in ax.collections if hasattr(c, "levels"))
    levels = np.asarray(cs.levels)
    assert levels[1] / levels[0] == pytest.approx(levels[-1] / levels[-2])  # geometric


@pytest.mark.parametrize("k, distinct", [(10, 10), (20, 20), (37, 37)])
def test_embedding_many_classes_distinct_styles_legend_outside(k, distinct):
    rng = np.random.default_rng(0)
    labels = np.arange(3 * k) % k
    fig = plotting.embedding(rng.normal(size=(3 * k, 2)), labels, None, "t-SNE")
    ax = fig.axes[0]
    renderer = _draw(fig)
    styles = {(tuple(np.round(c.get_facecolor()[0], 4)), c.get_paths()[0].vertices.tobytes())
              for c in ax.collections}
    assert len(styles) == distinct
    legend = ax.get_legend()
    assert len(legend.get_texts()) == k
    assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1


def test_signed_maps_are_centred_and_colorbars_opaque():
    image = np.zeros((12, 12, 1), "float32")
    m = np.random.default_rng(0).normal(size=(12, 12, 1)).astype("float32")
    fig = plotting.attribution(image, m, "IG", signed=True)
    im = fig.axes[1].images[0]
    lo, hi = im.get_clim()
    assert lo == -hi and im.get_cmap().name == "RdBu_r"
    fig = plotting.attribution(image, np.abs(m[..., 0]), "CAM", overlay=True)
    cbar = fig.axes[-1]
    assert not cbar.images and all(c.get_alpha() in (None, 1.0) for c in cbar.collections)


def test_large_readable_panels_for_deepdream():
    imgs = [np.zeros((28, 28, 1), "float32")] * 2
    w, h = _inches(plotting.images(imgs, ["original", "dream"], "DeepDream", panel=3.4))
    assert w >= 7 and h >= 3.4


@pytest.mark.parametrize("fmt, magic", [("svg", b"<?xml"), ("pdf", b"%PDF-"),
                                         ("png", b"\x89PNG")])
def test_save_writes_the_chosen_format(tmp_path, fmt, magic):
    plotting.set_figure_format(fmt)
    fig = plotting.curve([0, 1], {"a": [0, 1]}, "x", "y", "t")
    path = plotting.save(fig, str(tmp_path / "f.png"))
    assert path == str(tmp_path / f"f.{fmt}")
    with open(path, "rb") as f:
        assert f.read(len(magic)) == magic


def test_unknown_figure_format_is_refused():
    with pytest.raises(InputError, match="png, pdf, svg"):
        plotting.set_figure_format("jpeg")


def test_budget_label():
    assert plotting.budget_label({"eps": 0.1, "norm": "inf"}) == "eps=0.1 (L∞)"
    assert plotting.budget_label({"snr": 33.0}) == "SNR 33 dB"
    assert plotting.budget_label({"max_iterations": 10}) is None


# ----------------------------------------------------------------------------- visualize flags


def test_visualize_occlusion_flags_and_svg(mnist_run, tmp_path):
    out = str(tmp_path / "vis")
    run_script("experiments.visualize", f"--model_dir={mnist_run['dir']}",
               "--methods=occlusion", "--occlusion_patch=7", "--occlusion_stride=7",
               "--num_examples=20", "--figure_format=svg", f"--output_dir={out}")
    assert os.path.getsize(os.path.join(out, "occlusion.svg")) > 5000
    assert not os.path.exists(os.path.join(out, "occlusion.png"))
    with open(os.path.join(out, "occlusion.json")) as f:
        facts = json.load(f)
    assert facts["patch_size"] == 7 and facts["stride"] == 7 and len(facts["table"]) == 16
    with np.load(os.path.join(out, "occlusion.npz")) as data:
        assert data["heatmap"].shape == (4, 4) and data["pixel_map"].shape == (28, 28)
        np.testing.assert_allclose(data["pixel_map"][:7, :7], data["heatmap"][0, 0])
    with open(os.path.join(out, "config.json")) as f:
        params = json.load(f)["params"]
    assert params["occlusion_patch"] == 7 and params["occlusion_stride"] == 7


def test_filter_max_centre_unit_objective_and_yosinski_ascent():
    from cnnvis_tf import testing
    from cnnvis_tf.vis import feature_vis

    model = testing.tiny_cnn(filters=4)
    x, _ = testing.tiny_data(2)
    am = feature_vis.ActivationMaximization(model, "conv2", spatial="center")
    feats = np.asarray(am.target(x))
    h, w = feats.shape[1:3]
    np.testing.assert_allclose(am.objective(x, [1, 3]),
                               feats[[0, 1], h // 2, w // 2, [1, 3]], rtol=1e-5)
    start = am.objective(np.full_like(x, 0.5), [1, 3])
    imgs = am([1, 3], steps=15, regularization="yosinski", l2_weight=0.01, seed=0)
    assert imgs.min() >= 0 and imgs.max() <= 1
    assert np.all(am.objective(imgs, [1, 3]) > start)
    with pytest.raises(InputError, match="spatial"):
        feature_vis.ActivationMaximization(model, "conv2_relu", spatial="corner")
