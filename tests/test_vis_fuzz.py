"""Every visualizer rejects bad images, bad class lists and unsupported models with one
InputError (never a TensorFlow traceback or a silently wrong map)."""

import keras
import numpy as np
import pytest

from cnnvis_tf import testing
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import (
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


@pytest.fixture(scope="module")
def model():
    return testing.tiny_cnn()


def _pairs(x, y):
    return {"x": x, "x_adv": x, "y": y, "pred_clean": y, "pred_adv": y}


# name -> fn(model, images, classes); ``classes`` may be None (use the prediction).
VISUALIZERS = {
    "saliency": lambda m, x, c: saliency.Saliency(m)(x, c),
    "smoothgrad": lambda m, x, c: saliency.SmoothGrad(m)(x, c, smooth_samples=2),
    "integrated_gradients": lambda m, x, c: saliency.IntegratedGradients(m, 2)(x, c),
    "gradcam": lambda m, x, c: cam.GradCAM(m)(x, c),
    "gradcam_pp": lambda m, x, c: cam.GradCAMPlusPlus(m)(x, c),
    "scorecam": lambda m, x, c: cam.ScoreCAM(m)(x, c),
    "guided_backprop": lambda m, x, c: guided.GuidedBackprop(m)(x, c),
    "deconvnet": lambda m, x, c: guided.Deconvnet(m)(x, c),
    "occlusion": lambda m, x, c: occlusion.Occlusion(m, 4, 4)(x[:1], c),
    "class_model": lambda m, x, c: feature_vis.ActivationMaximization(m).objective(
        x, [0, 1] if c is None else c),
    "inversion": lambda m, x, c: inversion.FeatureInversion(m, "conv2_relu")(x, steps=1),
    "deepdream": lambda m, x, c: inversion.DeepDream(m, "conv2_relu")(x, steps=1),
    "features": lambda m, x, c: embedding.features(m, x),
    "neighbors": lambda m, x, c: embedding.neighbors(m, x, [0], k=1),
    "top_patches": lambda m, x, c: patches.top_patches(m, x, "conv2_relu", k=1),
    "activations": lambda m, x, c: weights.activations(m, x),
    "loss_1d": lambda m, x, c: landscape.loss_1d(m, getattr(m, "get_weights", list)(), x, c,
                                                 alphas=[1.0]),
    "loss_2d": lambda m, x, c: landscape.loss_2d(m, x, c, resolution=2),
    "adversarial_diff": lambda m, x, c: adversarial.analyze(m, _pairs(x, c),
                                                            layers=["fc1_relu"]),
}
NEEDS_LABELS = {"loss_1d", "loss_2d", "adversarial_diff"}

GOOD = np.random.default_rng(0).uniform(size=(2, 12, 12, 1)).astype("float32")
BAD_IMAGES = {
    "nan": np.where(np.arange(GOOD.size).reshape(GOOD.shape) == 5, np.nan, GOOD),
    "inf": np.where(np.arange(GOOD.size).reshape(GOOD.shape) == 5, np.inf, GOOD),
    "0-255 pixels": GOOD * 255.0,
    "negative pixels": GOOD - 0.5,
    "no channel axis": GOOD[..., 0][:, :, :, None, None],
    "rank 2": GOOD.reshape(2, -1),
    "3 channels": np.repeat(GOOD, 3, axis=-1),
    "wrong size": GOOD[:, :10, :10],
    "empty batch": GOOD[:0],
    "strings": np.full((2, 12, 12, 1), "a"),
}
BAD_CLASSES = {
    "out of range": [0, 3],
    "negative": [-1, 0],
    "wrong length": [0, 1, 2],
    "non-integer": [0.5, 1.0],
    "nan": [np.nan, 0],
    "text": ["a", "b"],
}


def _labels(name, c):
    return np.array([0, 1]) if c is None and name in NEEDS_LABELS else c


@pytest.mark.parametrize("bad", list(BAD_IMAGES))
@pytest.mark.parametrize("name", list(VISUALIZERS))
def test_bad_images_raise_input_error(model, name, bad):
    with pytest.raises(InputError):
        VISUALIZERS[name](model, BAD_IMAGES[bad], _labels(name, None))


@pytest.mark.parametrize("bad", list(BAD_CLASSES))
@pytest.mark.parametrize("name", [n for n in VISUALIZERS if n in {
    "saliency", "smoothgrad", "integrated_gradients", "gradcam", "gradcam_pp", "scorecam",
    "guided_backprop", "deconvnet", "occlusion", "class_model", "loss_1d", "loss_2d",
    "adversarial_diff"}])
def test_bad_classes_raise_input_error(model, name, bad):
    classes = BAD_CLASSES[bad]
    if name == "occlusion" and bad == "wrong length":
        classes = [0, 1]  # one image, two labels
    with pytest.raises(InputError):
        VISUALIZERS[name](model, GOOD, classes)


@pytest.mark.parametrize("name", list(VISUALIZERS))
def test_good_inputs_pass_and_unsupported_models_are_input_errors(model, name):
    VISUALIZERS[name](model, GOOD, _labels(name, None))
    inputs = keras.Input((12, 12, 1))
    two = keras.Model(inputs, [model(inputs), model(inputs)])
    with pytest.raises(InputError, match="one output"):
        VISUALIZERS[name](two, GOOD, _labels(name, None))
    with pytest.raises(InputError, match="keras.Model"):
        VISUALIZERS[name](object(), GOOD, _labels(name, None))
    seg = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))  # not (batch, classes)
    with pytest.raises(InputError, match="classes"):
        VISUALIZERS[name](seg, GOOD, _labels(name, None))


def test_bad_arguments_raise_input_error(model):
    for call in (
        lambda: occlusion.Occlusion(model, stride=0),
        lambda: occlusion.Occlusion(model, patch_size=-1),
        lambda: occlusion.Occlusion(model, fill=2.0),
        lambda: saliency.IntegratedGradients(model, steps=0),
        lambda: saliency.IntegratedGradients(model)(GOOD, baseline=np.zeros(5)),
        lambda: saliency.SmoothGrad(model)(GOOD, smooth_samples=-1),
        lambda: cam.ScoreCAM(model, batch_size=0),
        lambda: cam.GradCAM(model, "fc1"),
        lambda: cam.GradCAM(model, "nope"),
        lambda: feature_vis.ActivationMaximization(model)([7]),
        lambda: feature_vis.ActivationMaximization(model)([0], steps=0),
        lambda: guided.GuidedBackprop(model)(GOOD, layer="conv2_relu", channel=9),
        lambda: guided.GuidedBackprop(model)(GOOD, layer="conv2_relu", channel=0,
                                             position=(6, 0)),
        lambda: embedding.neighbors(model, GOOD, [5], k=1),
        lambda: patches.top_patches(model, GOOD, "fc1_relu"),
        lambda: patches.top_patches(model, GOOD, "conv2_relu", channels=[4]),
        lambda: landscape.loss_2d(model, GOOD, [0, 1], resolution=1),
        lambda: adversarial.analyze(model, _pairs(GOOD, [0, 1]), by="bogus"),
        lambda: saliency.Saliency(model, clip_min=1.0, clip_max=0.0),
    ):
        with pytest.raises(InputError):
            call()
