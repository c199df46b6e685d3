"""Data at scale (issue 12 B, issue 9 item 7): uint8 images in memory, float32 per batch;
--mixed_precision and --jit_compile for training and attacks, checked against float32."""

import json
import os
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnnvis_tf import attacks, datasets, precision, recipes, rundir, testing, training
from cnnvis_tf.attacks import _common, _steps
from cnnvis_tf.errors import InputError
from conftest import run_script

# Measured on 2 CPU cores (see the closing note); the bounds leave a margin.
MIXED_LOGITS_ATOL = 0.05  # |logits(mixed_float16 copy) - logits(float32)|, same weights
MIXED_FGSM_FLIPS = 0.01  # fraction of FGSM pixels that differ (signs of near-zero entries)
JIT_TOL = 1e-5  # XLA vs the plain tf.function: gradients (relative) and FGSM


@pytest.fixture(scope="module")
def mnist():
    return datasets.load("mnist", embedded=True, validation_split=0.1)


@pytest.fixture(autouse=True)
def float32_policy_after():
    """Every test leaves Keras' process-global policy as it found it (float32)."""
    yield
    assert keras.config.dtype_policy().name == "float32"


def _reference(x):  # what the loaders returned before: float32(x) / 255
    return (np.asarray(x.stored, dtype="float32") / 255.0).astype("float32")


# ----------------------------------------------------------------------------- uint8 data


def test_images_are_held_as_uint8(mnist):
    for x in (mnist.x_train, mnist.x_val, mnist.x_test):
        assert isinstance(x, datasets.ImageArray)
        assert x.stored.dtype == np.uint8 and x.nbytes == x.stored.size  # 1 byte per value
    assert mnist.nbytes == 5000 * 28 * 28 * 1  # float32 held 4x this (15,680,000 bytes)
    assert len(mnist.x_train) == 3600 and mnist.input_shape == (28, 28, 1)
    # Slices are float32 model inputs, equal to the old float32 arrays bit for bit.
    ref = _reference(mnist.x_test)
    np.testing.assert_array_equal(mnist.x_test[:100], ref[:100])
    assert mnist.x_test[:100].dtype == np.float32
    np.testing.assert_array_equal(mnist.images("test", np.arange(5, 9)), ref[5:9])
    np.testing.assert_array_equal(datasets.as_float(mnist.x_test, slice(3)), ref[:3])
    assert float(mnist.x_train.min()) == 0.0 and float(mnist.x_train.max()) == 1.0
    # Statistics and subsets computed from uint8 equal those of the float32 arrays.
    mean, std = datasets.channel_stats(_reference(mnist.x_train))
    np.testing.assert_array_equal(mnist.mean, mean)
    np.testing.assert_array_equal(mnist.std, std)
    sub = datasets.take(mnist.x_train, [7, 3])
    assert isinstance(sub, datasets.ImageArray) and sub.stored.dtype == np.uint8
    np.testing.assert_array_equal(sub[:], _reference(mnist.x_train)[[7, 3]])
    with pytest.raises(InputError, match="Unknown split"):
        mnist.images("dev")
    with pytest.raises(InputError, match="uint8"):
        datasets.ImageArray(np.zeros((2, 3, 3, 1), "float32"))


def test_pipeline_streams_uint8_into_float32_batches(mnist):
    ref = _reference(mnist.x_train)
    kw = dict(shuffle=True, seed=3, augment=True, crop_padding=2, flip=False)
    got = list(datasets.pipeline(mnist.x_train, mnist.y_train, 256, **kw))
    want = list(datasets.pipeline(ref, mnist.y_train, 256, **kw))
    assert len(got) == len(want) == 15
    for (xg, yg), (xw, yw) in zip(got, want):
        assert xg.dtype == tf.float32
        np.testing.assert_array_equal(xg.numpy(), xw.numpy())  # x / 255 exactly
        np.testing.assert_array_equal(yg.numpy(), yw.numpy())
    plain = np.concatenate([b[0].numpy() for b in datasets.pipeline(mnist.x_test,
                                                                      mnist.y_test, 300)])
    np.testing.assert_array_equal(plain, _reference(mnist.x_test))


def _tiny_build(data):
    def build():
        keras.utils.set_random_seed(0)
        return testing.tiny_cnn(data.input_shape, data.num_classes, filters=4, fc_units=16)
    return build


def _float32_copy(data):
    return datasets.Dataset(data.name, _reference(data.x_train), data.y_train,
                            _reference(data.x_test), data.y_test, data.class_names, data.source,
                            x_val=_reference(data.x_val), y_val=data.y_val)


def test_training_on_uint8_equals_the_float32_reference(tmp_path):
    """Same first-epoch loss as the float32 arrays the loaders held before; and the XLA
    train step (jit_compile) gives it too, up to round-off."""
    data = datasets.load("mnist", embedded=True, train_size=640, validation_split=0.1)
    reference = _float32_copy(data)
    np.testing.assert_array_equal(reference.mean, data.mean)
    out = {}
    for name, d, jit in (("uint8", data, False), ("float32", reference, False),
                         ("jit", data, True)):
        run_dir = str(tmp_path / name)
        _, metrics = training.train(run_dir, d, _tiny_build(d), epochs=1, batch_size=32,
                                    seed=0, verbose=0, jit_compile=jit)
        out[name] = (rundir.read_history(run_dir), metrics,
                     rundir.read_json(os.path.join(run_dir, rundir.CONFIG))["settings"])
    (h8, m8, s8), (h32, m32, s32), (hj, _, sj) = out["uint8"], out["float32"], out["jit"]
    np.testing.assert_allclose(h8["loss"][0], h32["loss"][0], rtol=1e-6)  # first epoch
    np.testing.assert_allclose(h8["val_loss"][0], h32["val_loss"][0], rtol=1e-6)
    assert m8["test/accuracy"] == m32["test/accuracy"]
    assert s8 == s32  # the same record: runs made before resume
    assert s8["mixed_precision"] is False and s8["jit_compile"] is False
    np.testing.assert_allclose(hj["loss"][0], h8["loss"][0], rtol=1e-4)
    np.testing.assert_allclose(hj["val_loss"][0], h8["val_loss"][0], rtol=1e-4)
    assert training.settings_differences(s8, sj) == [("jit_compile", False, True)]


def test_compute_settings_are_settings():
    old = recipes.TrainConfig(embedded=True).settings()
    for key in ("mixed_precision", "jit_compile"):
        old.pop(key)  # a run recorded before the flags existed
    new = recipes.TrainConfig(embedded=True).settings()
    defaults = {k: v for k, v in new.items()}
    assert training.settings_differences(old, new, defaults=defaults) == []  # resumes
    for key in ("mixed_precision", "jit_compile"):
        changed = recipes.TrainConfig(embedded=True, **{key: True}).settings()
        assert training.settings_differences(new, changed) == [(key, False, True)]
        assert training.settings_differences(old, changed, defaults=defaults) == [
            (key, None, True)]
        with pytest.raises(InputError, match=key):
            recipes.TrainConfig(embedded=True, **{key: "yes"}).validate()


# ----------------------------------------------------------------------------- precision


def test_policy_scope_restores_the_global_policy():
    with pytest.raises(RuntimeError):
        with precision.policy_scope(precision.MIXED):
            assert keras.config.dtype_policy().name == "mixed_float16"
            raise RuntimeError("boom")
    assert keras.config.dtype_policy().name == "float32"


def test_mixed_training_agrees_with_float32(tmp_path):
    """The recipe (the flags' TrainConfig) with --mixed_precision, from the same initial
    weights and data order as the float32 run: first-epoch loss and predictions agree."""
    base = recipes.TrainConfig(embedded=True, train_size=256, validation_split=0.0, epochs=1,
                               batch_size=32)
    runs = {}
    for name, changes in (("float32", {}), ("mixed", {"mixed_precision": True})):
        model, metrics = recipes.train_run(base.replace(**changes), str(tmp_path / name))
        runs[name] = (model, metrics, rundir.read_history(str(tmp_path / name)))
        assert keras.config.dtype_policy().name == "float32"
    cfg = rundir.read_json(str(tmp_path / "mixed" / rundir.CONFIG))
    assert cfg["settings"]["mixed_precision"] is True and cfg["settings"]["jit_compile"] is False
    model32, m32, h32 = runs["float32"]
    mixed, m16, h16 = runs["mixed"]
    # The saved classifier computes in float16 with float32 logits.
    loaded = rundir.load_run(str(tmp_path / "mixed")).model
    assert precision.is_mixed(loaded) and precision.output_dtypes(loaded) == ["float32"]
    assert loaded.get_layer("logits").compute_dtype == "float32"
    x = datasets.load("mnist", embedded=True).x_test[:200]
    assert loaded(x[:4]).dtype == tf.float32
    np.testing.assert_allclose(h16["loss"][0], h32["loss"][0], rtol=0.02)
    np.testing.assert_allclose(m16["test/accuracy"], m32["test/accuracy"], atol=0.03)
    agree = np.mean(np.argmax(mixed(x), 1) == np.argmax(model32(x), 1))
    assert agree >= 0.95, agree


def test_mixed_training_needs_float32_logits(tmp_path, mnist):
    def build():  # float16 logits: refused before anything is written
        return testing.tiny_cnn(mnist.input_shape, mnist.num_classes)

    with pytest.raises(InputError, match="float32"):
        training.train(str(tmp_path / "r"), mnist, build, epochs=1, batch_size=32,
                       mixed_precision=True, verbose=0)
    assert not os.path.exists(tmp_path / "r" / rundir.CONFIG)


# ----------------------------------------------------------------------------- attacks


@pytest.fixture(scope="module")
def attacked(mnist_run, mnist):
    return rundir.load_run(mnist_run["dir"]).model, mnist.x_test[:64], mnist.y_test[:64]


def test_mixed_precision_model_agrees_with_float32(attacked):
    model, x, y = attacked
    mixed = precision.with_policy(model, precision.MIXED)
    assert precision.output_dtypes(mixed) == ["float32"] and precision.is_mixed(mixed)
    same = precision.with_policy(model, "float32")
    np.testing.assert_array_equal(np.asarray(same(x)), np.asarray(model(x)))
    diff = np.abs(np.asarray(mixed(x)) - np.asarray(model(x))).max()
    assert diff < MIXED_LOGITS_ATOL, diff
    a32 = attacks.fgsm(model, x, 0.1, y=y)
    a16 = attacks.fgsm(mixed, x, 0.1, y=y)
    assert np.abs(a16 - x).max() <= 0.1 + 1e-6
    flips = np.mean(a16 != a32)
    assert flips < MIXED_FGSM_FLIPS, flips
    acc = [np.mean(np.argmax(model(a), 1) == y) for a in (a32, a16)]
    assert abs(acc[0] - acc[1]) <= 2 / 64, acc


def test_jit_attack_equals_plain(attacked):
    model, x, y = attacked
    xt, yt = tf.constant(x), tf.constant(y.astype(np.int64))
    assert not _steps.jit_enabled()
    plain = _common._logits_and_gradient(model, xt, yt, False, None)
    fgsm = attacks.fgsm(model, x, 0.1, y=y)
    pgd = attacks.pgd(model, x, 0.1, y=y, nb_iter=5, seed=1)
    with attacks.jit_compile():
        xla = _common._logits_and_gradient(model, xt, yt, False, None)
        fgsm_xla = attacks.fgsm(model, x, 0.1, y=y)
        pgd_xla = attacks.pgd(model, x, 0.1, y=y, nb_iter=5, seed=1)
    assert not _steps.jit_enabled()  # restored
    # Logits and input gradients agree to JIT_TOL of the batch's largest entry (a confident
    # example's gradient, p - 1 with p ~ 1, is itself only known to round-off).
    for a, b in zip(plain, xla):
        assert np.abs(a.numpy() - b.numpy()).max() <= JIT_TOL * np.abs(a.numpy()).max()
    # FGSM: sign steps agree except where a gradient entry is within that round-off of 0.
    grad = plain[1].numpy()
    differ = np.abs(fgsm_xla - fgsm) > JIT_TOL
    assert differ.mean() < 1e-3
    assert np.all(np.abs(grad[differ]) <= JIT_TOL * np.abs(grad).max())
    acc = [np.mean(np.argmax(model(a), 1) == y) for a in (fgsm, fgsm_xla, pgd, pgd_xla)]
    assert acc[0] == acc[1] and abs(acc[2] - acc[3]) <= 1 / 64, acc
    # PGD: a flipped sign step changes the rest of that example's path (1.1% of entries
    # measured); the budget holds and the accuracy (above) agrees.
    assert np.mean(pgd_xla != pgd) < 0.05
    assert np.abs(pgd_xla - x).max() <= 0.1 + 1e-6


def test_attack_script_mixed_precision_and_jit(mnist_run, attacked, tmp_path):
    model, x, y = attacked
    out = str(tmp_path / "fgsm")
    start = time.time()
    run_script("experiments.attack", f"--model_dir={mnist_run['dir']}", "--attack=fgsm",
               "--eps=0.1", "--num_examples=64", "--mixed_precision", "--jit_compile",
               f"--output_dir={out}")
    print(f"attack script, mixed + jit: {time.time() - start:.1f}s")
    with open(os.path.join(out, "config.json")) as f:
        params = json.load(f)["params"]
    assert params["mixed_precision"] is True and params["jit_compile"] is True
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    adv = rundir.read_adversarial(os.path.join(out, "adversarial.npz"))
    a32 = attacks.fgsm(model, x, 0.1, y=y)
    assert np.mean(adv["x_adv"] != a32) < MIXED_FGSM_FLIPS
    acc32 = float(np.mean(np.argmax(model(a32), 1) == y))
    assert abs(metrics["adversarial_accuracy"] - acc32) <= 2 / 64
