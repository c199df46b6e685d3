"""Class-model visualization and per-filter activation maximization (tf-keras-vis).

Regularizers: the L2 image prior of Simonyan et al. (a loss term) and the four of
Yosinski et al. -- L2 decay, Gaussian blur, clipping pixels of small norm and clipping
pixels of small contribution -- applied to the image between gradient steps (tf-keras-vis
input modifiers), plus jitter and total variation.

References:
  Simonyan, K., Vedaldi, A. and Zisserman, A. Deep Inside Convolutional Networks:
  Visualising Image Classification Models and Saliency Maps. ICLR workshop 2014.
  Yosinski, J. et al. Understanding Neural Networks Through Deep Visualization.
  ICML Deep Learning workshop 2015.
"""

import warnings
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from tf_keras_vis.activation_maximization import ActivationMaximization as _TkvAM
from tf_keras_vis.activation_maximization.input_modifiers import InputModifier
from tf_keras_vis.activation_maximization.regularizers import Regularizer, TotalVariation2D
from tf_keras_vis.utils.scores import CategoricalScore

from cnnvis_tf.checks import check_labels, check_positive_int, invalid
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import _model

REGULARIZATIONS = ("none", "l2", "yosinski")
SPATIAL = ("mean", "center")


class UnitScore:
    """Score of one unit per image: ``output[i, row, col, indices[i]]`` at the centre of
    the feature map (Yosinski et al. 2015 visualize single conv units this way: the image
    then shows the unit's preferred pattern inside its receptive field)."""

    def __init__(self, indices):
        self.indices = tf.constant(np.asarray(indices, "int64"))

    def __call__(self, output):
        v = output[:, output.shape[1] // 2, output.shape[2] // 2, :]
        return tf.gather(v, self.indices, axis=1, batch_dims=1)


class L2Prior(Regularizer):
    """weight * mean((x - center)^2) per image (Simonyan et al. 2014, Eq. 1)."""

    def __init__(self, weight=1.0, center=0.5):
        super().__init__("L2")
        self.weight, self.center = float(weight), float(center)

    def __call__(self, input_value):
        d = tf.reshape(input_value - self.center, (tf.shape(input_value)[0], -1))
        return self.weight * tf.reduce_mean(tf.square(d), axis=1)


class _Every(InputModifier):
    def __init__(self, every=1):
        self.every, self._calls = max(1, int(every)), 0

    def __call__(self, x):
        self._calls += 1
        return self.apply(x) if self._calls % self.every == 0 else x


class Decay(_Every):
    """Yosinski L2 decay: x <- center + (1 - rate) (x - center)."""

    def __init__(self, rate=0.01, center=0.5, every=1):
        super().__init__(every)
        self.rate, self.center = float(rate), float(center)

    def apply(self, x):
        return self.center + (1.0 - self.rate) * (x - self.center)


class Blur(_Every):
    """Yosinski Gaussian blur of width ``sigma`` pixels every ``every`` steps."""

    def __init__(self, sigma=0.5, every=4):
        super().__init__(every)
        self.sigma = float(sigma)

    def apply(self, x):
        r = max(1, int(np.ceil(2 * self.sigma)))
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / self.sigma) ** 2)
        k = (k / k.sum()).astype("float32")
        c = x.shape[-1]
        kernel = tf.constant(np.outer(k, k)[:, :, None, None] * np.ones((1, 1, c, 1), "float32"))
        pad = tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT")
        return tf.nn.depthwise_conv2d(pad, kernel, [1, 1, 1, 1], "VALID")


class ClipSmallNorm(_Every):
    """Yosinski: pixels whose channel norm of (x - center) is below the ``percentile``-th
    percentile are reset to ``center``."""

    def __init__(self, percentile=20.0, center=0.5, every=1):
        super().__init__(every)
        self.percentile, self.center = float(percentile), float(center)

    def _clip(self, x, strength):
        thresh = np.percentile(strength.reshape(len(strength), -1), self.percentile, axis=1)
        keep = tf.cast(strength >= thresh[:, None, None, None], x.dtype)
        return self.center + keep * (x - self.center)

    def apply(self, x):
        norm = np.linalg.norm(np.asarray(x) - self.center, axis=-1, keepdims=True)
        return self._clip(x, norm)


class ClipSmallContribution(ClipSmallNorm):
    """Yosinski: pixels whose contribution |sum_c (x - center) * d score / d x| is below the
    ``percentile``-th percentile are reset to ``center``."""

    def __init__(self, model, score, percentile=20.0, center=0.5, every=1):
        super().__init__(percentile, center, every)
        self.model, self.score = model, score

    def apply(self, x):
        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            s = tf.reduce_sum(self.score(self.model(x, training=False)))
        contrib = np.abs(np.sum((np.asarray(x) - self.center) * tape.gradient(s, x).numpy(),
                                axis=-1, keepdims=True))
        return self._clip(x, contrib)


class Jitter(InputModifier):
    """Random shift of up to ``pixels`` per step; the previous shift is undone first, so
    the image does not drift (tf-keras-vis' Jitter accumulates shifts)."""

    def __init__(self, pixels=1, seed=0):
        self.pixels, self.shift = int(pixels), (0, 0)
        self._rng = np.random.default_rng(seed)

    def __call__(self, x):
        x = self.undo(x)
        self.shift = tuple(int(v) for v in self._rng.integers(-self.pixels, self.pixels + 1, 2))
        return tf.roll(x, shift=self.shift, axis=(1, 2))

    def undo(self, x):
        return tf.roll(x, shift=(-self.shift[0], -self.shift[1]), axis=(1, 2))


class Clip(InputModifier):
    """Keeps the image inside the model's input range during the optimization."""

    def __init__(self, lo, hi):
        self.lo, self.hi = float(lo), float(hi)

    def __call__(self, x):
        return tf.clip_by_value(x, self.lo, self.hi)


class ActivationMaximization(_model.Visualizer):
    """Images that maximize a class logit (class model) or a filter's mean activation.

    Args:
      model: any Keras classifier.
      layer: ``None`` for class-model visualization; a layer name for filter maximization.
      clip_min, clip_max: the model's input range.
      spatial: for a conv ``layer``, ``"mean"`` maximizes the filter's mean activation
        over the map, ``"center"`` the single unit at its centre (Yosinski et al.).
    """

    def __init__(self, model: keras.Model, layer: str | None = None, clip_min: float = 0.0,
                 clip_max: float = 1.0, spatial: str = "mean"):
        if spatial not in SPATIAL:
            raise InputError(f"Unknown spatial={spatial!r}. Choose one of: "
                             f"{', '.join(SPATIAL)}.")
        super().__init__(model, layer, clip_min=clip_min, clip_max=clip_max)
        r = self.resolved
        self.target = r.keras_model() if layer is None else r.keras_model([layer], logits=False)
        self.num_units = (r.num_classes if layer is None else int(r.shapes[layer][-1]))
        self.spatial = "center" if spatial == "center" and layer is not None and len(
            r.shapes[layer]) == 3 else "mean"
        self._vis = _TkvAM(self.target, clone=False)

    def _score(self, indices):
        return UnitScore(indices) if self.spatial == "center" else CategoricalScore(indices)

    def objective(self, images, indices):
        """The unregularized objective per image: the logit or mean filter activation."""
        x = self.images(images, "images")
        idx = check_labels(np.atleast_1d(np.asarray(indices)), len(x), self.num_units,
                           name="indices")
        return np.asarray(self._score(idx.tolist())(self.target(x, training=False)))

    def _indices(self, indices):
        idx = np.atleast_1d(np.asarray(indices))
        if idx.ndim != 1 or not len(idx):
            raise invalid("indices", "a non-empty list of unit indices", indices)
        return check_labels(idx, len(idx), self.num_units, name="indices").tolist()

    def __call__(self, indices: Sequence[int], steps: int = 100, regularization: str = "l2",
                 learning_rate: float = 0.05, l2_weight: float = 0.1, tv_weight: float = 0.0,
                 jitter: int = 1, seed: int = 0) -> np.ndarray:
        """Optimizes one image per index, all in one batch.

        Args:
          indices: class indices (class model) or filter/unit indices (``layer`` set).
          steps: gradient steps (Adam).
          regularization: ``"none"``, ``"l2"`` (Simonyan) or ``"yosinski"``.
          learning_rate: Adam step size in input units.
          l2_weight: weight of the L2 prior (``"l2"``) or decay rate (``"yosinski"``).
          tv_weight: total-variation weight (0 disables).
          jitter: random shift in pixels per step (0 disables).
          seed: seed of the starting image and the jitter.

        Returns:
          float32 (len(indices), H, W, C) images in [clip_min, clip_max].
        """
        indices = self._indices(indices)
        if regularization not in REGULARIZATIONS:
            raise InputError(f"Unknown regularization {regularization!r}. "
                             f"Choose one of: {', '.join(REGULARIZATIONS)}.")
        steps = check_positive_int("steps", steps)
        mid = 0.5 * (self.clip_min + self.clip_max)
        rng = np.random.default_rng(seed)
        shape = (len(indices),) + tuple(self.resolved.input_shape)
        seed_input = (mid + 0.05 * (self.clip_max - self.clip_min) * rng.standard_normal(shape))
        score = self._score(indices)
        jit = Jitter(jitter, seed)
        mods = [jit] if jitter else []
        regs = [TotalVariation2D(tv_weight)] if tv_weight else []
        if regularization == "l2":
            regs.append(L2Prior(l2_weight, mid))
        elif regularization == "yosinski":
            mods += [Decay(l2_weight, mid), Blur(0.5, 4), ClipSmallNorm(20.0, mid),
                     ClipSmallContribution(self.target, score, 20.0, mid)]
        mods.append(Clip(self.clip_min, self.clip_max))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self._vis(
                score, seed_input=seed_input.astype("float32"),
                input_range=(self.clip_min, self.clip_max), input_modifiers=mods,
                regularizers=regs, steps=steps,
                optimizer=keras.optimizers.Adam(learning_rate),
            )
        return np.asarray(jit.undo(out), dtype="float32")
