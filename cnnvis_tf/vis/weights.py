"""Weights and activations: filter images, kernel slices, activation maps of conv layers.

References:
  Zeiler, M. D. and Fergus, R. Visualizing and Understanding Convolutional Networks.
  ECCV 2014 (arXiv:1311.2901).
"""

from collections.abc import Sequence

import keras
import numpy as np
from numpy.typing import ArrayLike

from cnnvis_tf.checks import check_positive_int
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import _model


def filters(model: keras.Model, layer: str | None = None, max_filters: int = 64,
            max_channels: int = 8) -> dict:
    """The kernels of a convolution layer, arranged for display.

    For the first conv layer (or any layer with 1 or 3 input channels) each filter is one
    image ``(kh, kw, cin)``; for deeper layers each filter is shown as its 2-D slices over
    the first ``max_channels`` input channels.

    Args:
      model: a Keras model.
      layer: conv layer name; ``None`` is the first conv layer.
      max_filters: at most this many output filters are returned.
      max_channels: at most this many input-channel slices per filter for deep layers.

    Returns:
      dict with ``kernel`` (kh, kw, cin', cout') float32 and ``layer`` (name) and
      ``rgb`` (True when each filter is drawn as one colour image).

    Raises:
      InputError: if ``layer`` is unknown or not a 2-D convolution.
    """
    r = _model.ResolvedModel(model, "filters")
    r.last_conv_layer()  # raises if there is no conv layer
    convs = r.conv_layers()
    name = layer or convs[0]
    r.get(name)
    if name not in convs:
        raise InputError(
            f"Layer {name!r} is not a Conv2D layer. Choose one of: {', '.join(convs)}."
        )
    max_filters = check_positive_int("max_filters", max_filters)
    max_channels = check_positive_int("max_channels", max_channels)
    kernel = np.asarray(r.layers[name].kernel, dtype="float32")
    rgb = kernel.shape[2] in (1, 3) and name == convs[0]
    cin = kernel.shape[2] if rgb else min(kernel.shape[2], max_channels)
    return {"kernel": kernel[:, :, :cin, :max_filters], "layer": name, "rgb": rgb}


def activations(model: keras.Model, x: ArrayLike, layers: Sequence[str] | None = None, *,
                clip_min: float = 0.0, clip_max: float = 1.0) -> dict[str, np.ndarray]:
    """Activation maps of every conv layer (after its ReLU when the model has one).

    Args:
      model: a Keras model.
      x: one image (H, W, C) in the model's input space (of a batch, the first image).
      layers: names of layers to read; ``None`` means every Conv2D layer.

    Returns:
      dict mapping layer name -> float32 array (h, w, channels) for that image.
    """
    vis = _model.Visualizer(model, clip_min=clip_min, clip_max=clip_max)
    r = vis.resolved
    x = vis.images(x)[:1]
    names = list(layers) if layers else [r.activation_layer(n) for n in r.conv_layers()]
    if not names:
        raise InputError("The model has no Conv2D layer. Pass --layer=<name> explicitly.")
    outs = r.predict(x, names)
    return {name: out[0] for name, out in zip(names, outs)}


class FilterSlices(_model.Visualizer):
    """Every input-channel slice of one filter of a convolution layer (seed 001, Fig. 6).

    Args:
      model: any Keras model with Conv2D layers.
      layer: conv layer name; ``None`` is the second conv layer (the first if only one).
    """

    def __init__(self, model: keras.Model, layer: str | None = None):
        super().__init__(model, layer)
        convs = self.resolved.conv_layers()
        if not convs:
            self.resolved.last_conv_layer()  # raises the no-conv error
        self.layer = layer or convs[min(1, len(convs) - 1)]
        if self.layer not in convs:
            raise InputError(f"Layer {self.layer!r} is not a Conv2D layer. Choose one of: "
                             f"{', '.join(convs)}.")
        self.kernel = np.asarray(self.resolved.layers[self.layer].kernel, dtype="float32")

    @property
    def num_filters(self) -> int:
        return int(self.kernel.shape[-1])

    def __call__(self, filter_index: int = 0) -> np.ndarray:
        """Returns float32 (kh, kw, cin): all input slices of filter ``filter_index``."""
        n = self.num_filters
        if not isinstance(filter_index, (int, np.integer)) or not 0 <= filter_index < n:
            raise InputError(f"Invalid value received for argument `filter_index`. Expected "
                             f"an integer in [0, {n - 1}] ({self.layer} has {n} filters). "
                             f"Received: filter_index={filter_index!r}")
        return self.kernel[..., int(filter_index)].copy()
