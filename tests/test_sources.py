"""Bring your own model and data (cnnvis_tf.sources, experiments.common.load_source): every
model kind (.keras, .h5, SavedModel, keras_app) and data kind (.npz, image folder) loads,
computes what the original model computes, and experiments.attack runs on it."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnnvis_tf import rundir, sources
from cnnvis_tf.errors import InputError
from conftest import ROOT

SHAPE, CLASSES = (12, 12, 1), 3


def _tiny(softmax=False, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(CLASSES, activation="softmax" if softmax else None)(h)
    return keras.Model(inputs, out)


def _png(path, pixels):
    with open(path, "wb") as f:
        f.write(tf.io.encode_png(pixels).numpy())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny functional model saved as .keras, .h5 and SavedModel, a softmax-headed .keras,
    an .npz of images and labels, an image folder of PNGs and an RGB 32x32 .npz."""
    d = tmp_path_factory.mktemp("byo")
    model = _tiny()
    model.save(d / "m.keras")
    model.save(d / "m.h5")
    model.export(str(d / "saved"), verbose=False)
    soft = _tiny(softmax=True, seed=1)
    soft.save(d / "soft.keras")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (16,) + SHAPE).astype("float32")
    y = rng.integers(0, CLASSES, 16)
    np.savez(d / "data.npz", x_test=x, y_test=y)
    folder = d / "folder"
    pixels = {}
    for name in ["cat", "dog", "owl"]:
        os.makedirs(folder / name)
        for i in range(3):
            img = rng.integers(0, 256, SHAPE, dtype=np.uint8)
            _png(folder / name / f"{i}.png", img)
            pixels[(name, i)] = img
    np.savez(d / "rgb32.npz", x_test=rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8),
             y_test=np.arange(6) % 4)
    return {"dir": d, "model": model, "soft": soft, "x": x, "y": y, "pixels": pixels}


@pytest.mark.parametrize("name,kind", [("m.keras", "keras"), ("m.h5", "h5"),
                                       ("saved", "savedmodel")])
def test_model_files_compute_the_original_logits(files, name, kind):
    src = sources.load_model_source(str(files["dir"] / name))
    assert src.kind == kind and src.outputs == "logits"
    x = files["x"][:5]
    np.testing.assert_allclose(np.asarray(src.model(x)), np.asarray(files["model"](x)),
                               rtol=1e-5, atol=1e-5)
    if kind != "savedmodel":  # same weights, same fingerprint as the model that was saved
        assert src.fingerprint == rundir.model_fingerprint(files["model"])


def test_softmax_head_is_detected_and_turned_into_log_probabilities(files, caplog):
    with caplog.at_level(logging.WARNING):
        src = sources.load_model_source(str(files["dir"] / "soft.keras"))
    assert src.outputs == "probabilities" and src.facts()["model_outputs"] == "probabilities"
    x = files["x"][:4]
    p = np.asarray(files["soft"](x))
    np.testing.assert_allclose(np.exp(np.asarray(src.model(x))), p, rtol=1e-4, atol=1e-6)
    assert "outputs probabilities" in caplog.text


def test_keras_app_without_cached_weights_is_random_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty cache: nothing to use
    with caplog.at_level(logging.WARNING):
        src = sources.load_model_source("keras_app:MobileNetV2,alpha=0.35",
                                        input_shape=(32, 32, 3), num_classes=4, weights="auto")
    assert src.kind == "keras_app" and src.details["weights"] == "random"
    assert src.details["keras_app_kwargs"] == {"alpha": 0.35}
    out = np.asarray(src.model(np.full((2, 32, 32, 3), 0.5, "float32")))
    assert out.shape == (2, 4) and np.all(np.isfinite(out))
    assert "no ImageNet weights in the Keras cache" in caplog.text
    assert not os.listdir(tmp_path) or not os.listdir(tmp_path / "models")  # no download
    with pytest.raises(InputError, match="not in the Keras cache"):
        sources.load_model_source("keras_app:MobileNetV2,alpha=0.35", input_shape=(32, 32, 3),
                                  num_classes=4, weights="imagenet")


def test_npz_and_image_folder_data(files, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="absl"):
        data = sources.load_dataset_source(str(files["dir"] / "data.npz"))
    np.testing.assert_array_equal(data.x_test, files["x"])
    np.testing.assert_array_equal(data.y_test, files["y"])
    assert (data.clip_min, data.clip_max) == (0.0, 1.0) and data.class_names == ["0", "1", "2"]
    assert "clip range [0, 1] (inferred" in caplog.text
    folder = sources.load_dataset_source(str(files["dir"] / "folder"))
    assert folder.class_names == ["cat", "dog", "owl"] and folder.x_test.shape == (9,) + SHAPE
    np.testing.assert_array_equal(folder.y_test, np.repeat([0, 1, 2], 3))
    np.testing.assert_allclose(folder.x_test[4], files["pixels"][("dog", 1)] / 255.0,
                               atol=1e-6)
    np.savez(tmp_path / "big.npz", x_test=np.full((2, 4, 4), 200.0), y_test=[0, 1])
    big = sources.load_dataset_source(str(tmp_path / "big.npz"), class_names=["a", "b"])
    assert (big.clip_min, big.clip_max) == (0.0, 255.0) and big.class_names == ["a", "b"]
    assert big.x_test.shape == (2, 4, 4, 1)


def test_bad_sources_give_clear_errors(files, tmp_path):
    d = files["dir"]
    cases = [
        (lambda: sources.load_model_source(str(tmp_path / "nope.keras")), "does not exist"),
        (lambda: sources.load_model_source(str(tmp_path)), "without saved_model.pb"),
        (lambda: sources.load_model_source("model.onnx"), "not a .keras or .h5"),
        (lambda: sources.load_model_source("keras_app:NoSuchNet", input_shape=(32, 32, 3),
                                           num_classes=2), "not a keras.applications"),
        (lambda: sources.load_dataset_source(str(tmp_path / "none.npz")), "does not exist"),
        (lambda: sources.load_dataset_source("imagenet21k"), "neither a built-in dataset"),
        (lambda: sources.load_dataset_source(None), "--dataset is required"),
    ]
    np.savez(tmp_path / "nolabels.npz", x_test=files["x"])
    cases.append((lambda: sources.load_dataset_source(str(tmp_path / "nolabels.npz")),
                  "lacks the array"))
    os.makedirs(tmp_path / "empty")
    cases.append((lambda: sources.load_dataset_source(str(tmp_path / "empty")),
                  "no class sub-folders"))
    os.makedirs(tmp_path / "noimages" / "cat")
    cases.append((lambda: sources.load_dataset_source(str(tmp_path / "noimages")),
                  "holds no images"))
    os.makedirs(tmp_path / "mixed" / "a")
    _png(tmp_path / "mixed" / "a" / "1.png", np.zeros((4, 4, 1), np.uint8))
    _png(tmp_path / "mixed" / "a" / "2.png", np.zeros((5, 5, 1), np.uint8))
    cases.append((lambda: sources.load_dataset_source(str(tmp_path / "mixed")),
                  "--image_size"))
    cases.append((lambda: sources.load_dataset_source(str(d / "data.npz"), clip_min=0.2,
                                                      clip_max=0.5), "outside the clip range"))
    for call, message in cases:
        with pytest.raises(InputError, match=message.replace(".", r"\.")):
            call()
    resized = sources.load_dataset_source(str(tmp_path / "mixed"), image_size=("6", "6"))
    assert resized.x_test.shape == (2, 6, 6, 1)


DRIVER = textwrap.dedent("""
    import json, sys
    from absl import flags
    from experiments import attack
    for argv in json.loads(sys.argv[1]):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["attack", "--verbosity=0"] + argv)  # INFO lines, as app.run prints
        attack.main([])
""")


def test_attack_runs_on_every_source(files, tmp_path):
    """One process runs experiments.attack on each model kind and each data kind."""
    d, out = files["dir"], tmp_path
    runs = {
        "keras": ["--model_path=" + str(d / "m.keras"), "--dataset=" + str(d / "data.npz")],
        "h5": ["--model_path=" + str(d / "m.h5"), "--dataset=" + str(d / "folder")],
        "saved": ["--model_path=" + str(d / "saved"), "--dataset=" + str(d / "data.npz")],
        "soft": ["--model_path=" + str(d / "soft.keras"), "--dataset=" + str(d / "data.npz")],
        "app": ["--model=keras_app:MobileNetV2,alpha=0.35", "--dataset=" + str(d / "rgb32.npz"),
                "--num_examples=2"],
    }
    argvs = [a + ["--attack=fgsm", "--eps=0.1", f"--output_dir={out / k}"]
             for k, a in runs.items()]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_HOME=str(tmp_path / "keras_home"))
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argvs)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for kind in runs:
        metrics = json.load(open(out / kind / "metrics.json"))
        arrays = np.load(out / kind / "adversarial.npz")
        x, x_adv = arrays["x"], arrays["x_adv"]
        assert np.abs(x_adv - x).max() <= 0.1 + 1e-6 and 0 <= x_adv.min() <= x_adv.max() <= 1
        assert metrics["adversarial_accuracy"] == np.mean(arrays["pred_adv"] == arrays["y"])
        assert os.path.exists(out / kind / "figures" / "examples.png")
        config = json.load(open(out / kind / "config.json"))
        assert len(config["models"]) == 1
    n = len(files["y"])
    for kind, model in (("keras", files["model"]), ("soft", files["soft"])):
        metrics = json.load(open(out / kind / "metrics.json"))
        expected = np.mean(np.argmax(model(files["x"][:n]), axis=1) == files["y"][:n])
        assert metrics["clean_accuracy"] == pytest.approx(expected)
    config = json.load(open(out / "keras" / "config.json"))
    assert config["models"] == {str(d / "m.keras"): rundir.model_fingerprint(files["model"])}
    assert config["params"]["model_outputs"] == "logits"
    soft = json.load(open(out / "soft" / "config.json"))
    assert soft["params"]["model_outputs"] == "probabilities"
    assert "soft.keras outputs probabilities (a softmax head)" in proc.stderr
    folder = json.load(open(out / "h5" / "config.json"))
    assert folder["params"]["class_names"] == ["cat", "dog", "owl"]
    assert "names from the data" in proc.stderr
    assert "no ImageNet weights in the Keras cache" in proc.stderr
    assert np.load(out / "app" / "adversarial.npz")["x"].shape == (2, 32, 32, 3)
