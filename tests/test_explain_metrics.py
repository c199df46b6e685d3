"""Explanation quality (cnnvis_tf.vis.metrics), the new attribution maps
(cnnvis_tf.vis.attribution) and experiments.explain_eval."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnnvis_tf import datasets, rundir, testing
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import _model, attribution, explain_report, metrics
from conftest import ROOT

SIZE = 8


def _left_half_model():
    """Logits depend only on the left half of an 8x8 image: class 0 = 0.5 * sum(left half),
    class 1 = 4 (a constant)."""
    inputs = keras.Input((SIZE, SIZE, 1))
    left = keras.layers.Cropping2D(((0, 0), (0, SIZE // 2)))(inputs)
    out = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(left))
    model = keras.Model(inputs, out)
    kernel = np.zeros((SIZE * SIZE // 2, 2), "float32")
    kernel[:, 0] = 0.5
    model.get_layer("head").set_weights([kernel, np.array([0.0, 4.0], "float32")])
    return model


@pytest.fixture(scope="module")
def half():
    model = _left_half_model()
    x = np.random.default_rng(0).uniform(0.5, 1.0, (6, SIZE, SIZE, 1)).astype("float32")
    return model, x, np.zeros(6, "int64")


@pytest.fixture(scope="module")
def tiny():
    model, x, y = testing.trained_tiny_cnn(epochs=4)
    return model, x[:5], y[:5]


def _fn(model):
    return _model.ResolvedModel(model).logits


def test_deletion_and_insertion_rank_a_correct_map_above_a_random_one(half):
    model, x, y = half
    right = x.copy()
    right[:, :, SIZE // 2 :] = 0.0
    assert np.allclose(model(x).numpy(), model(right).numpy())  # the right half is ignored
    correct = attribution.explainer("saliency", model)(x, y)  # |grad|: 0.5 left, 0 right
    assert np.all(correct[:, :, : SIZE // 2] > 0) and np.all(correct[:, :, SIZE // 2 :] == 0)
    rand = attribution.random_map(x, seed=1)
    fn = _fn(model)
    d_good = metrics.deletion(fn, x, correct, y, step=4)
    d_rand = metrics.deletion(fn, x, rand, y, step=4)
    assert d_good.scores.shape == (6, SIZE * SIZE // 4 + 1)
    assert np.all(d_good.auc < d_rand.auc - 0.1), (d_good.auc, d_rand.auc)
    i_good = metrics.insertion(fn, x, correct, y, step=4, baseline="zeros")
    i_rand = metrics.insertion(fn, x, rand, y, step=4, baseline="zeros")
    assert np.all(i_good.auc > i_rand.auc + 0.05), (i_good.auc, i_rand.auc)
    # the curves start and end where they must: the image, then the baseline (deletion)
    p = metrics._scores(fn, x, y, "probability")
    assert np.allclose(d_good.scores[:, 0], p) and np.allclose(i_good.scores[:, -1], p)
    assert np.allclose(d_good.scores[:, -1], metrics._scores(fn, 0 * x, y, "probability"))
    # MuFidelity prefers the correct map too; a flat map has no correlation
    mu_good = metrics.mu_fidelity(fn, x, correct, y, grid_size=4, num_samples=32)
    mu_rand = metrics.mu_fidelity(fn, x, rand, y, grid_size=4, num_samples=32)
    assert np.all(mu_good > 0.95) and mu_rand.mean() < 0.6
    flat = np.ones_like(rand)  # equal cells, equal sums: no correlation
    assert np.all(metrics.mu_fidelity(fn, x, flat, y, grid_size=4, num_samples=8) == 0)


def test_randomization_check_separates_gradients_from_weight_free_maps(mnist_run):
    run = rundir.load_run(mnist_run["dir"])
    data = datasets.load_for_run(run.config)
    x, y = data.x_test[:4], data.y_test[:4]
    before = rundir.model_fingerprint(run.model)
    grads = metrics.randomization_check(run.model, attribution.explainer("saliency",
                                                                         run.model), x, y)
    edges = metrics.randomization_check(run.model, attribution.explainer("edge", run.model),
                                        x, y)
    assert grads.layers == ["logits", "fc1", "conv2", "conv1"] == edges.layers
    assert grads.spearman.shape == (4, 4) and grads.maps.shape == (5, 4, 28, 28)
    assert np.all(edges.spearman == 1.0)  # the edge detector ignores the weights
    assert grads.spearman[-1].max() < 0.6  # the gradient follows them
    assert rundir.model_fingerprint(run.model) == before  # weights restored
    ind = metrics.randomization_check(run.model, attribution.explainer("saliency", run.model),
                                      x, y, mode="independent", layers=["conv1", "logits"])
    assert ind.layers == ["logits", "conv1"] and np.all(ind.spearman < 0.95)
    with pytest.raises(InputError, match="Cannot randomize layers \\['pool1'\\].*conv1"):
        metrics.randomization_check(run.model, attribution.explainer("edge", run.model), x,
                                    y, layers=["pool1"])


def test_metrics_are_batched_and_equal_the_per_image_loop(tiny):
    model, x, y = tiny
    calls = []
    resolved = _model.ResolvedModel(model)

    def fn(images):
        calls.append(len(images))
        return resolved.logits(images)

    explain = attribution.explainer("gradient_input", model)
    maps = explain(x, y)
    other = metrics.other_classes(y, 3, seed=0)
    assert np.all(other != y)

    def run_all(sl):
        xs, ys, ms = x[sl], y[sl], maps[sl]
        return {
            "deletion": metrics.deletion(fn, xs, ms, ys, baseline="mean").scores,
            "insertion": metrics.insertion(fn, xs, ms, ys).scores,
            "mu": metrics.mu_fidelity(fn, xs, ms, ys, num_samples=16),
            "logit": metrics.random_logit(explain, xs, ys, 3, other=other[sl])[0],
            "rand": metrics.randomization_check(model, explain, xs, ys).spearman.T,
            "gini": metrics.sparseness(ms), "entropy": metrics.complexity(ms),
        }

    batched = run_all(slice(None))
    n_batched = len(calls)
    loop = [run_all(slice(i, i + 1)) for i in range(len(x))]
    for key, value in batched.items():
        assert np.allclose(value, np.concatenate([r[key] for r in loop]), atol=1e-5), key
    # deletion: 5 images x 13 steps = 65 images in one model call (not 65 or 5 calls)
    assert calls[0] == 5 * 13 and n_batched == 4 and len(calls) == 6 * n_batched


def test_gini_and_entropy_values():
    flat, peak = np.ones((1, 4, 4)), np.zeros((1, 4, 4))
    peak[0, 1, 2] = -3.0
    assert metrics.sparseness(flat)[0] == pytest.approx(0.0)
    assert metrics.sparseness(peak)[0] == pytest.approx(15 / 16)
    assert metrics.complexity(flat)[0] == pytest.approx(np.log(16))
    assert metrics.complexity(peak)[0] == pytest.approx(0.0)
    assert metrics.complexity(np.zeros((1, 4, 4)))[0] == pytest.approx(np.log(16))
    a = np.random.default_rng(0).normal(size=(3, 5, 5))
    from scipy import stats

    assert np.allclose(metrics.spearman(a, a ** 3), 1.0)
    assert metrics.spearman(a, -a, absolute=False) == pytest.approx(-1.0)
    assert metrics.spearman(a[:1], a[1:2])[0] == pytest.approx(
        stats.spearmanr(np.abs(a[0]).ravel(), np.abs(a[1]).ravel()).statistic)


def test_gradient_input_and_pixel_occlusion_equal_hand_computations(tiny):
    model, x, y = tiny
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        score = tf.gather(model(xt), y, axis=1, batch_dims=1)
    grad = tape.gradient(score, xt).numpy()
    gi = attribution.GradientInput(model)(x, y)
    assert gi.shape == x.shape and np.allclose(gi, grad * x, atol=1e-6)
    occ = attribution.OcclusionMap(model, fill=0.25)(x[:2], y[:2])
    base = model(x[:2]).numpy()[np.arange(2), y[:2]]
    occluded = []
    for r in range(12):
        for c in range(12):
            xo = x[:2].copy()
            xo[:, r, c, :] = 0.25
            occluded.append(xo)
    scores = model(np.concatenate(occluded)).numpy().reshape(12, 12, 2, -1)
    hand = base[:, None, None] - np.moveaxis(scores, 2, 0)[np.arange(2), :, :, y[:2]]
    assert occ.shape == (2, 12, 12) and np.allclose(occ, hand, atol=1e-5)


def test_layercam_equals_its_formula(tiny):
    model, x, y = tiny
    sub = keras.Model(model.inputs, [model.get_layer("conv2_relu").output, model.outputs[0]])
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        acts, logits = sub(xt)
        score = tf.gather(logits, y, axis=1, batch_dims=1)
    g = tape.gradient(score, acts).numpy()
    low = np.maximum((np.maximum(g, 0) * acts.numpy()).sum(-1), 0)
    up = tf.image.resize(low[..., None], (12, 12), "bilinear").numpy()[..., 0]
    lo, hi = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
    got = attribution.LayerCAM(model, "conv2_relu")(x, y)
    assert got.shape == (5, 12, 12)
    assert np.allclose(got, (up - lo) / np.maximum(hi - lo, 1e-7), atol=1e-5)


def test_rise_and_vargrad_properties(half, tiny):
    model, x, y = half
    rise = attribution.RISE(model, num_masks=400, grid_size=4)
    maps = rise(x, y, seed=0)
    assert maps.shape == (6, SIZE, SIZE) and np.all(np.isfinite(maps))
    assert np.all(maps[:, :, : SIZE // 2].mean(axis=(1, 2)) > maps[:, :, SIZE // 2 :].mean(
        axis=(1, 2)))
    masks = rise.masks(SIZE, SIZE, seed=0)
    assert masks.shape == (400, SIZE, SIZE) and masks.min() >= 0 and masks.max() <= 1
    keep_all = attribution.RISE(model, num_masks=8, keep_prob=1.0)(x, y)
    p = _model.softmax(model(x).numpy())[np.arange(6), y]
    assert np.allclose(keep_all, p[:, None, None], atol=1e-5)  # every mask keeps everything
    # VarGrad: a linear model has one gradient everywhere, so no variance
    assert np.allclose(attribution.VarGrad(model)(x, y), 0.0, atol=1e-10)
    tmodel, tx, ty = tiny
    var = attribution.VarGrad(tmodel, samples=8)(tx, ty, seed=3)
    assert var.shape == (5, 12, 12) and np.all(var >= 0) and var.max() > 0
    assert np.array_equal(var, attribution.VarGrad(tmodel, samples=8)(tx, ty, seed=3))


@pytest.mark.parametrize("name", list(attribution.ATTRIBUTIONS) + list(attribution.CONTROLS))
def test_every_explainer_gives_finite_maps_of_the_image_size(tiny, name):
    model, x, y = tiny
    maps = attribution.explainer(name, model, num_masks=50, batch_size=2)(x, y)
    assert maps.shape == (5, 12, 12) and maps.dtype == np.float32
    assert np.all(np.isfinite(maps)) and np.abs(maps).max() > 0


def test_bad_inputs_are_clear_errors(tiny):
    model, x, y = tiny
    with pytest.raises(InputError, match="Unknown attribution method 'bogus'.*layercam"):
        attribution.explainer("bogus", model)
    with pytest.raises(InputError, match="do not match images"):
        metrics.deletion(_fn(model), x, np.zeros((5, 3, 3)), y)
    with pytest.raises(InputError, match="argument `baseline`"):
        metrics.deletion(_fn(model), x, np.zeros((5, 12, 12)), y, baseline="gray")
    with pytest.raises(InputError, match="NaN"):
        metrics.deletion(_fn(model), x, np.full((5, 12, 12), np.nan), y)
    with pytest.raises(InputError, match="argument `keep_prob`"):
        attribution.RISE(model, keep_prob=0)
    with pytest.raises(InputError, match="different from the image's class"):
        metrics.random_logit(lambda a, b: a[..., 0], x, y, 3, other=y)


DRIVER = textwrap.dedent("""
    import json, sys
    from absl import flags, logging
    from experiments import explain_eval
    logging.set_verbosity(logging.INFO)
    from cnnvis_tf import rundir
    argvs, merged = json.loads(sys.argv[1])
    for argv in argvs:
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["explain_eval"] + argv)
        explain_eval.main([])
    shards = [(f, rundir.read_json(f + "/config.json"), rundir.read_json(f + "/shard.json"))
              for f in (merged + "/shards/shard-0-of-2", merged + "/shards/shard-1-of-2")]
    explain_eval.merge_shards(merged, shards)
""")


def test_explain_eval_writes_table_results_figures_and_shards(mnist_run, tmp_path):
    """One process: an unsharded run, then the same run in two shards whose arrays join
    into the unsharded ones."""
    base = [f"--model_dir={mnist_run['dir']}", "--num_examples=4", "--attribution_batch=2",
            "--methods=saliency,vargrad,gradcam,edge", "--mufidelity_samples=16"]
    full, sharded = tmp_path / "full", tmp_path / "sharded"
    argvs = [base + [f"--output_dir={full}"]] + [
        base + [f"--output_dir={sharded}", "--num_shards=2", f"--shard_index={i}"]
        for i in (0, 1)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps([argvs, str(sharded)])],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = ["saliency", "vargrad", "gradcam", "edge"]
    table = (full / "table.md").read_text()
    for name in names:
        assert f"| {name} |" in table
    assert "Deletion AUC" in table and " ± " in table
    with open(full / "results.json") as f:
        res = json.load(f)
    assert res["num_examples"] == 4 and res["layers"] == ["logits", "fc1", "conv2", "conv1"]
    edge, sal = res["methods"]["edge"], res["methods"]["saliency"]
    assert edge["randomization_all"]["mean"] == 1.0 and sal["randomization_all"]["mean"] < 0.6
    assert len(sal["deletion_curve"]) == 29 and sal["deletion_curve"][0] > 0.5
    for fig in ("deletion", "insertion", "randomization", "randomization_maps"):
        assert os.path.getsize(full / "figures" / f"{fig}.png") > 5000
    with open(full / "config.json") as f:
        assert json.load(f)["script"] == "experiments.explain_eval"
    with np.load(full / explain_report.PER_IMAGE) as data:
        whole = {k: data[k] for k in data.files}
    parts = []
    for i in (0, 1):
        folder = sharded / "shards" / f"shard-{i}-of-2"
        assert (folder / "shard.json").exists()
        with np.load(folder / explain_report.PER_IMAGE) as data:
            parts.append({k: data[k] for k in data.files})
    joined = explain_report.concatenate(parts)
    assert sorted(joined) == sorted(whole) and list(joined["index"]) == [0, 1, 2, 3]
    with np.load(sharded / explain_report.PER_IMAGE) as data:  # written by merge_shards
        merged = {k: data[k] for k in data.files}
    for key, value in whole.items():
        if value.dtype.kind in "fi":
            assert np.allclose(joined[key], value, atol=1e-5), key
            assert np.array_equal(merged[key], joined[key]), key
        else:
            assert np.array_equal(joined[key], value) and np.array_equal(merged[key], value)
    with open(sharded / "results.json") as f:
        res_merged = json.load(f)
    for name in names:
        for key in ("deletion_auc", "mu_fidelity", "randomization_all", "random_logit"):
            assert res_merged["methods"][name][key]["mean"] == pytest.approx(
                res["methods"][name][key]["mean"], abs=1e-5)
    assert (sharded / "table.md").read_text().count("\n") == table.count("\n")
    assert os.path.getsize(sharded / "figures" / "randomization.png") > 5000
