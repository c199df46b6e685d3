"""Tests for cnnvis_tf.layers: Parseval/convex constraints, smoothness, interpretable mask."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnnvis_tf.errors import InputError
from cnnvis_tf.layers import (
    ConvexConstraint,
    InterpretableFilterMask,
    ParsevalConstraint,
    apply_parseval,
    filter_loss,
    insert_filter_mask,
    label_smoothness,
    laplacian_smoothness_penalty,
    parseval_deviation,
    template_mask,
)
from cnnvis_tf.testing import tiny_cnn, tiny_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _compile(model, lr=1e-2):
    model.compile(
        keras.optimizers.Adam(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _fit_deviations(parseval_beta):
    keras.utils.set_random_seed(0)
    model = tiny_cnn()
    if parseval_beta:
        apply_parseval(model, parseval_beta)
    x, y = tiny_data(96)
    _compile(model).fit(x, y, batch_size=32, epochs=4, verbose=0)
    return [parseval_deviation(layer.kernel) for layer in model.layers if hasattr(layer, "kernel")]


# ---------------------------------------------------------------- Parseval / convex


def test_parseval_retraction_converges_to_tight_frame():
    rng = np.random.default_rng(0)
    for shape in [(3, 3, 2, 5), (30, 8), (4, 40)]:
        w = (0.3 * rng.normal(size=shape)).astype("float32")
        constraint = ParsevalConstraint(0.1)
        for _ in range(200):
            w = np.asarray(constraint(w))
        assert w.shape == shape
        assert parseval_deviation(w) < 1e-3


def test_parseval_sample_fraction_updates_only_sampled_rows():
    w = np.random.default_rng(1).normal(size=(6, 10)).astype("float32")  # 10 output rows
    new = np.asarray(ParsevalConstraint(0.1, sample_fraction=0.3, seed=3)(w))
    changed = np.any(new != w, axis=0)
    assert changed.sum() == 3


def test_parseval_keeps_kernels_near_tight_frame_during_training():
    vanilla = _fit_deviations(0.0)
    parseval = _fit_deviations(0.2)
    assert max(parseval) < 0.5, parseval
    assert all(p < v for p, v in zip(parseval, vanilla)), (parseval, vanilla)


def test_parseval_model_reloads_from_keras_file_with_same_config(tmp_path):
    model = tiny_cnn()
    names = apply_parseval(model, 0.05, sample_fraction=0.5, seed=7, include_logits=False)
    assert names == ["conv1", "conv2", "fc1"]
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for name in names:
        c = loaded.get_layer(name).kernel_constraint
        assert isinstance(c, ParsevalConstraint)
        assert c.get_config() == model.get_layer(name).kernel_constraint.get_config()
        assert loaded.get_layer(name).kernel.constraint is not None
    assert loaded.get_layer("logits").kernel_constraint is None


@pytest.mark.parametrize(
    "make",
    [
        lambda: ParsevalConstraint(beta=-1.0),
        lambda: ParsevalConstraint(beta=0.1, sample_fraction=1.5),
        lambda: ConvexConstraint(axis="last"),
        lambda: InterpretableFilterMask(beta=0.0),
        lambda: InterpretableFilterMask(loss_weight=-1.0),
    ],
)
def test_invalid_arguments_raise_keras_style_errors(make):
    with pytest.raises(InputError, match="Invalid value received for argument `"):
        make()


def test_convex_constraint_projects_onto_simplex():
    w = np.array([[0.5, 2.0, -1.0], [0.1, 0.1, 0.1], [0.2, 0.3, 0.5]], "float32")
    p = np.asarray(ConvexConstraint()(w))
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-6)
    assert (p >= 0).all()
    np.testing.assert_allclose(p[0], [0.0, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(p[2], w[2], atol=1e-6)  # already on the simplex
    p0 = np.asarray(ConvexConstraint(axis=0)(w.T))
    np.testing.assert_allclose(p0, p.T, atol=1e-6)


def test_configs_round_trip():
    objs = [
        ParsevalConstraint(0.02, 0.5, 3),
        ConvexConstraint(axis=0),
        InterpretableFilterMask(beta=3.0, loss_weight=0.5, mask_at_inference=True, name="m"),
    ]
    for obj in objs:
        config = obj.get_config()
        clone = type(obj).from_config(config)
        assert clone.get_config() == config
    assert ParsevalConstraint(0.02, 0.5, 3).get_config() == {
        "beta": 0.02,
        "sample_fraction": 0.5,
        "seed": 3,
    }


# ---------------------------------------------------------------- smoothness


def _separated(labels, dims=6):
    reps = np.zeros((len(labels), dims), "float32")
    rng = np.random.default_rng(0)
    for i, k in enumerate(labels):
        reps[i, 2 * k : 2 * k + 2] = rng.uniform(0.5, 1.0, 2)
    return reps


def test_smoothness_penalty_zero_when_label_separated_positive_otherwise():
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    separated = _separated(y)
    mixed = np.abs(np.random.default_rng(1).normal(size=(8, 6))).astype("float32")
    for power in (1, 2):
        assert float(label_smoothness(separated, y, power)) == pytest.approx(0.0, abs=1e-5)
        assert float(label_smoothness(mixed, y, power)) > 0.1
        zero = laplacian_smoothness_penalty([separated, separated * 2.0], y, 1.0, power)
        assert float(zero) == pytest.approx(0.0, abs=1e-5)
        pos = laplacian_smoothness_penalty([mixed, separated], y, 0.5, power)
        assert float(pos) > 0.05
        np.testing.assert_allclose(
            float(pos), 0.5 * float(label_smoothness(mixed, y, power)), rtol=1e-4, atol=1e-4
        )
    onehot = np.eye(3, dtype="float32")[y]
    np.testing.assert_allclose(
        float(label_smoothness(mixed, onehot, 2)), float(label_smoothness(mixed, y, 2)), rtol=1e-5
    )


def test_smoothness_penalty_gradients_flow_and_mask_selects_examples():
    y = np.array([0, 1, 2, 0, 1, 2])
    rng = np.random.default_rng(2)
    a = tf.Variable(np.abs(rng.normal(size=(6, 4, 4, 2))).astype("float32"))
    b = tf.Variable(_separated(y))
    with tf.GradientTape() as tape:
        loss = laplacian_smoothness_penalty([a, b], y, gamma=0.1, power=2)
    grads = tape.gradient(loss, [a, b])
    assert all(g is not None and np.isfinite(g).all() for g in grads)
    assert np.abs(grads[0]).sum() > 0
    mask = np.array([1, 1, 1, 0, 0, 0], bool)
    masked = laplacian_smoothness_penalty([a, b], y, 0.1, 2, mask=mask)
    subset = laplacian_smoothness_penalty([a[:3], b[:3]], y[:3], 0.1, 2)
    np.testing.assert_allclose(float(masked), float(subset), rtol=1e-5)
    with pytest.raises(InputError, match="at least two"):
        laplacian_smoothness_penalty([a], y, 0.1)
    with pytest.raises(InputError, match="`power`"):
        laplacian_smoothness_penalty([a, b], y, 0.1, power=0)


# ---------------------------------------------------------------- interpretable filters


def test_filter_mask_peaks_where_activation_peaks():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (3, 7, 7, 4)).astype("float32")
    x[0, 2, 5, 0] = 5.0
    mask = np.asarray(template_mask(x))
    for b in range(3):
        for c in range(4):
            peak = np.unravel_index(np.argmax(x[b, :, :, c]), (7, 7))
            assert np.unravel_index(np.argmax(mask[b, :, :, c]), (7, 7)) == peak
            assert mask[b][peak][c] == 1.0
    assert mask[0, 2, 5, 0] == 1.0 and mask[0, 2, 4, 0] == pytest.approx(1 - 4 / 7)
    assert mask.min() >= -1.0
    layer = InterpretableFilterMask()
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    masked = np.asarray(layer(x, training=True))
    np.testing.assert_allclose(masked, np.maximum(x * mask, 0.0), rtol=1e-6)
    assert masked[0, 2, 5, 0] == 5.0 and masked[0, 6, 0, 0] == 0.0
    always = InterpretableFilterMask(mask_at_inference=True)
    np.testing.assert_allclose(np.asarray(always(x)), masked, rtol=1e-6)


def test_filter_loss_prefers_single_part_filters_and_decreases():
    rng = np.random.default_rng(0)
    peaked = np.zeros((16, 6, 6, 2), "float32")
    for b in range(16):
        for c in range(2):
            i, j = rng.integers(0, 6, 2)
            peaked[b, i, j, c] = 50.0
    spread = rng.uniform(0, 3, peaked.shape).astype("float32")
    assert float(filter_loss(peaked)) < float(filter_loss(spread)) < 0.0
    x = tf.Variable(spread)
    losses = []
    for _ in range(5):
        with tf.GradientTape() as tape:
            loss = filter_loss(tf.nn.relu(x))
        x.assign_sub(1e3 * tape.gradient(loss, x))
        losses.append(float(loss))
    assert losses[-1] < losses[0]


def test_insert_filter_mask_trains_with_filter_loss():
    keras.utils.set_random_seed(0)
    base = tiny_cnn()
    x, y = tiny_data(64)
    model = insert_filter_mask(base, loss_weight=10.0)
    names = [layer.name for layer in model.layers]
    assert names.index("conv2_relu_mask") == names.index("conv2_relu") + 1
    assert model.get_layer("conv2") is not base.get_layer("conv2")
    np.testing.assert_array_equal(model.get_layer("conv2").kernel, base.get_layer("conv2").kernel)
    np.testing.assert_allclose(model.predict(x[:4], verbose=0), base.predict(x[:4], verbose=0))
    hist = _compile(model).fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    with pytest.raises(InputError, match="Unknown layer"):
        insert_filter_mask(base, "nope")


# ---------------------------------------------------------------- fresh-process reload


def test_saved_custom_objects_reload_and_train_in_fresh_process(tmp_path):
    from cnnvis_tf.defenses import DefenseModel

    keras.utils.set_random_seed(0)
    base = tiny_cnn()
    feats = base.get_layer("fc1_relu").output
    mix = keras.layers.Dense(3, kernel_constraint=ConvexConstraint(axis=0), name="mix")(feats)
    full = keras.Model(base.inputs[0], keras.layers.Add(name="sum")([base.output, mix]))
    apply_parseval(full, 0.05, sample_fraction=0.5, seed=1)
    full = insert_filter_mask(full, loss_weight=1.0)
    assert isinstance(full.get_layer("conv1").kernel.constraint, ParsevalConstraint)
    x, y = tiny_data(32)
    _compile(full).fit(x, y, epochs=1, verbose=0)
    full.save(str(tmp_path / "model.keras"))
    wrapper = DefenseModel(tiny_cnn(), adv_training="fgsm", adv_eps=0.1, smooth_gamma=0.01)
    wrapper(x[:1])
    wrapper.save(str(tmp_path / "wrapper.keras"))
    np.savez(tmp_path / "data.npz", x=x, y=y)
    script = textwrap.dedent(
        f"""
        import keras, numpy as np
        import cnnvis_tf.layers
        d = np.load({str(tmp_path / "data.npz")!r})
        for name in ("model.keras", "wrapper.keras"):
            m = keras.models.load_model({str(tmp_path)!r} + "/" + name)
            m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            h = m.fit(d["x"], d["y"], batch_size=32, epochs=1, verbose=0)
            assert np.isfinite(h.history["loss"][0])
            print(name, type(m).__name__, "OK")
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "model.keras Functional OK" in out.stdout
    assert "wrapper.keras DefenseModel OK" in out.stdout
