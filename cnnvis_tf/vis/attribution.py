"""More attribution maps, and one registry of every attribution map for the quality metrics.

LayerCAM, RISE, Gradient x Input, VarGrad and occlusion attributions (down to single
pixels) follow the visualizer contract: the model in the constructor, images and classes in
``__call__``, numpy maps out, many images per model call. :data:`ATTRIBUTIONS` names every
attribution map of the package (these and saliency, SmoothGrad, integrated gradients, guided
backprop, deconvnet, Grad-CAM, Grad-CAM++, Score-CAM); :func:`explainer` turns a name into a
function ``(x, classes) -> (N, H, W) maps`` for :mod:`cnnvis_tf.vis.metrics`. ``edge`` and
``random`` are controls that ignore the model (Adebayo et al. 2018's edge detector).

References:
  Jiang, P.-T. et al. LayerCAM: Exploring Hierarchical Class Activation Maps for
  Localization. IEEE TIP 2021.
  Petsiuk, V., Das, A. and Saenko, K. RISE: Randomized Input Sampling for Explanation of
  Black-box Models. BMVC 2018.
  Shrikumar, A. et al. Not Just a Black Box: Learning Important Features Through
  Propagating Activation Differences. arXiv:1605.01713, 2016.
  Adebayo, J. et al. Local Explanation Methods for Deep Neural Networks Lack Sensitivity
  to Parameter Values. ICLR workshop 2018 (VarGrad); Sanity Checks for Saliency Maps.
  NeurIPS 2018 (the edge-detector control).
  Zeiler, M. D. and Fergus, R. Visualizing and Understanding Convolutional Networks.
  ECCV 2014 (occlusion).
"""

import math
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from cnnvis_tf.checks import check_fraction, check_nonneg, check_positive_int, invalid
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import _model, cam, guided, occlusion, saliency

Explainer = Callable[[np.ndarray, np.ndarray], np.ndarray]


class LayerCAM(cam._Cam):
    """LayerCAM: each activation weighted by its own positive class gradient, so shallow
    layers give fine maps too (same arguments as :class:`~cnnvis_tf.vis.cam.GradCAM`)."""

    def low_res(self, x: ArrayLike, classes: ArrayLike) -> np.ndarray:
        """(N, h, w) maps: ReLU(sum_k ReLU(dS_c/dA_k) * A_k) (Jiang et al. Eq. 5-6)."""
        a, g = self._grads(x, classes)
        return np.maximum((np.maximum(g, 0.0) * a).sum(axis=-1), 0.0)


def _chunks(n, size):
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def compiled_logits(resolved: _model.ResolvedModel,
                    batch_size: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    """Numpy logits of images through one traced graph of a resolved model: faster than
    eager hooked passes for the many forward passes of RISE, occlusion and the metrics. The
    graph reads the model's variables, so later weight changes are seen."""
    graph = tf.function(resolved.keras_model(), reduce_retracing=True)
    size = check_positive_int("batch_size", batch_size)

    def logits(x):
        x = np.asarray(x, "float32")
        return np.concatenate([graph(tf.constant(x[p]), training=False).numpy()
                               for p in _chunks(len(x), size)])

    return logits


class RISE(_model.Visualizer):
    """RISE: the class probability averaged over random smooth masks, per pixel.

    Args:
      model: any Keras classifier (a softmax head is handled).
      num_masks: random masks per image.
      grid_size: side of the binary grid each mask is upsampled from.
      keep_prob: probability that a grid cell is kept.
      batch_size: masked images per forward pass.
      clip_min, clip_max: the model's input range; masked-out pixels become ``clip_min``.
    """

    def __init__(self, model: keras.Model, num_masks: int = 1000, grid_size: int = 7,
                 keep_prob: float = 0.5, batch_size: int = 256, *, clip_min: float = 0.0,
                 clip_max: float = 1.0):
        self.num_masks = check_positive_int("num_masks", num_masks)
        self.grid_size = check_positive_int("grid_size", grid_size)
        self.keep_prob = check_fraction("keep_prob", keep_prob, low_open=True)
        self.batch_size = check_positive_int("batch_size", batch_size)
        super().__init__(model, clip_min=clip_min, clip_max=clip_max)
        self._logits = compiled_logits(self.resolved, self.batch_size)

    def masks(self, height: int, width: int, seed: int = 0) -> np.ndarray:
        """(num_masks, H, W) float32 masks in [0, 1]: binary ``grid_size`` grids upsampled
        bilinearly to ``(grid_size + 1)`` cells and cropped at a random shift (Petsiuk et al.
        Sec. 3.2)."""
        rng = np.random.default_rng(seed)
        s = self.grid_size
        ch, cw = math.ceil(height / s), math.ceil(width / s)
        grid = (rng.random((self.num_masks, s, s, 1)) < self.keep_prob).astype("float32")
        up = tf.image.resize(grid, ((s + 1) * ch, (s + 1) * cw), "bilinear").numpy()[..., 0]
        dy, dx = rng.integers(0, ch, self.num_masks), rng.integers(0, cw, self.num_masks)
        return np.stack([m[r : r + height, c : c + width] for m, r, c in zip(up, dy, dx)])

    def __call__(self, x: ArrayLike, classes: ArrayLike | None = None,
                 seed: int = 0) -> np.ndarray:
        """RISE saliency maps.

        Args:
          x: images (N, H, W, C) or one image in the model's input space.
          classes: class per image; ``None`` uses the model's prediction.
          seed: seed of the masks (every image gets the same masks).

        Returns:
          float32 (N, H, W) maps: sum_i p_c(x * M_i) M_i / (num_masks * keep_prob).
        """
        x = self.images(x)
        classes = self.classes(x, classes)
        masks = self.masks(*x.shape[1:3], seed=seed)
        out = np.zeros(x.shape[:3], "float64")
        for i, (img, c) in enumerate(zip(x, classes)):
            for part in _chunks(len(masks), self.batch_size):
                m = masks[part]
                masked = self.clip_min + m[..., None] * (img - self.clip_min)[None]
                probs = _model.softmax(self._logits(masked))[:, c]
                out[i] += np.tensordot(probs, m, axes=1)
        return (out / (self.num_masks * self.keep_prob)).astype("float32")


class GradientInput(_model.Visualizer):
    """Gradient x Input: the class-score gradient times the image, element-wise.

    Args:
      model: any Keras classifier.
      batch_size: images per backward pass.
      clip_min, clip_max: the model's input range.
    """

    def __init__(self, model: keras.Model, batch_size: int = 256, *, clip_min: float = 0.0,
                 clip_max: float = 1.0):
        self.batch_size = check_positive_int("batch_size", batch_size)
        super().__init__(model, clip_min=clip_min, clip_max=clip_max)

    def __call__(self, x: ArrayLike, classes: ArrayLike | None = None) -> np.ndarray:
        """Signed (N, H, W, C) float32 attributions ``x * d logit_c / d x`` (Shrikumar et al.
        2016); ``classes=None`` uses the model's prediction."""
        x = self.images(x)
        classes = self.classes(x, classes)
        grads = np.concatenate([saliency.gradients(self.resolved, x[p], classes[p])
                                for p in _chunks(len(x), self.batch_size)])
        return (grads * x).astype("float32")


class VarGrad(_model.Visualizer):
    """VarGrad: the variance of the class-score gradient over noisy copies of the image.

    Args:
      model: any Keras classifier.
      samples: noisy copies per image.
      noise: noise std as a fraction of each image's value range (as SmoothGrad).
      batch_size: noisy images per backward pass.
      clip_min, clip_max: the model's input range.
    """

    def __init__(self, model: keras.Model, samples: int = 20, noise: float = 0.2,
                 batch_size: int = 256, *, clip_min: float = 0.0, clip_max: float = 1.0):
        self.samples = check_positive_int("samples", samples)
        self.noise = check_nonneg("noise", noise)
        self.batch_size = check_positive_int("batch_size", batch_size)
        super().__init__(model, clip_min=clip_min, clip_max=clip_max)

    def __call__(self, x: ArrayLike, classes: ArrayLike | None = None,
                 seed: int = 0) -> np.ndarray:
        """(N, H, W) float32 maps: per-element gradient variance over the noisy copies
        (Adebayo et al. 2018), summed over channels; ``seed`` fixes the noise."""
        x = self.images(x)
        classes = self.classes(x, classes)
        rng = np.random.default_rng(seed)
        span = (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))[:, None, None, None, None]
        noisy = x[:, None] + rng.normal(size=(len(x), self.samples) + x.shape[1:]) * (
            self.noise * span)
        flat = noisy.reshape((-1,) + x.shape[1:]).astype("float32")
        labels = np.repeat(classes, self.samples)
        grads = np.concatenate([saliency.gradients(self.resolved, flat[p], labels[p])
                                for p in _chunks(len(flat), self.batch_size)])
        var = grads.reshape(noisy.shape).var(axis=1)
        return var.sum(axis=-1).astype("float32")


class OcclusionMap(_model.Visualizer):
    """Occlusion attributions: the drop of the class score when a patch is filled, given to
    the pixels under the patch (averaged where patches overlap); ``patch_size=1`` occludes
    one pixel at a time.

    Args:
      model: any Keras classifier.
      patch_size: side of the square patch in pixels.
      stride: step between patches (default ``patch_size``: no overlap).
      fill: value of the patch (default: the middle of the input range).
      score: ``"logit"`` or ``"probability"`` of the class.
      batch_size: occluded images per forward pass (across images and positions).
      clip_min, clip_max: the model's input range.
    """

    def __init__(self, model: keras.Model, patch_size: int = 1, stride: int | None = None,
                 fill: float | None = None, score: str = "logit", batch_size: int = 256, *,
                 clip_min: float = 0.0, clip_max: float = 1.0):
        self.patch_size = check_positive_int("patch_size", patch_size)
        self.stride = self.patch_size if stride is None else check_positive_int("stride",
                                                                                 stride)
        if score not in ("logit", "probability"):
            raise invalid("score", "'logit' or 'probability'", score)
        self.score, self.batch_size = score, check_positive_int("batch_size", batch_size)
        super().__init__(model, clip_min=clip_min, clip_max=clip_max)
        self._logits = compiled_logits(self.resolved, self.batch_size)
        self.fill = 0.5 * (self.clip_min + self.clip_max) if fill is None else float(fill)
        if not self.clip_min <= self.fill <= self.clip_max:
            raise invalid("fill", f"a value in [{self.clip_min:g}, {self.clip_max:g}]", fill)

    def _scores(self, x, classes):
        logits = self._logits(x)
        out = _model.softmax(logits) if self.score == "probability" else logits
        return out[np.arange(len(x)), classes]

    def __call__(self, x: ArrayLike, classes: ArrayLike | None = None) -> np.ndarray:
        """(N, H, W) float32 maps ``score_c(x) - score_c(x occluded)``; ``classes=None``
        uses the model's prediction."""
        x = self.images(x)
        classes = self.classes(x, classes)
        h, w = x.shape[1:3]
        p = min(self.patch_size, h, w)
        pos = [(r, c) for r in occlusion._starts(h, p, self.stride)
               for c in occlusion._starts(w, p, self.stride)]
        base = self._scores(x, classes)
        pairs = [(i, r, c) for i in range(len(x)) for r, c in pos]
        total, count = np.zeros(x.shape[:3], "float64"), np.zeros((h, w), "float64")
        for r, c in pos:
            count[r : r + p, c : c + p] += 1
        for part in _chunks(len(pairs), self.batch_size):
            idx = np.array([pairs[k][0] for k in range(part.start, part.stop)])
            batch = x[idx].copy()
            for j, k in enumerate(range(part.start, part.stop)):
                _, r, c = pairs[k]
                batch[j, r : r + p, c : c + p, :] = self.fill
            drop = base[idx] - self._scores(batch, classes[idx])
            for j, k in enumerate(range(part.start, part.stop)):
                i, r, c = pairs[k]
                total[i, r : r + p, c : c + p] += drop[j]
        return (total / np.maximum(count, 1)).astype("float32")


def edge_map(x: np.ndarray) -> np.ndarray:
    """Control that ignores the model: Sobel gradient magnitude of the channel-summed
    image, (N, H, W) float32."""
    g = np.asarray(x, "float32").sum(axis=-1)
    p = np.pad(g, ((0, 0), (1, 1), (1, 1)), mode="edge")
    gx = (p[:, :-2, 2:] + 2 * p[:, 1:-1, 2:] + p[:, 2:, 2:]) - (
        p[:, :-2, :-2] + 2 * p[:, 1:-1, :-2] + p[:, 2:, :-2])
    gy = (p[:, 2:, :-2] + 2 * p[:, 2:, 1:-1] + p[:, 2:, 2:]) - (
        p[:, :-2, :-2] + 2 * p[:, :-2, 1:-1] + p[:, :-2, 2:])
    return np.hypot(gx, gy).astype("float32")


def random_map(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Control that ignores the model and the image: uniform noise, (N, H, W) float32 (the
    same for the same ``seed`` and shape)."""
    x = np.asarray(x)
    return np.random.default_rng(seed).random(x.shape[:3]).astype("float32")


def pixel_maps(maps: np.ndarray) -> np.ndarray:
    """(N, H, W) float32 maps: (N, H, W, C) attributions are summed over channels."""
    m = np.asarray(maps, "float32")
    if m.ndim == 4:
        m = m.sum(axis=-1)
    if m.ndim != 3:
        raise InputError(f"Attribution maps must be (N, H, W) or (N, H, W, C); received shape "
                         f"{m.shape}.")
    return m


def _options(cls):
    """Constructor keywords of a visualizer class that :func:`explainer` passes on."""
    import inspect

    return [p for p in inspect.signature(cls.__init__).parameters
            if p not in ("self", "model", "layer", "clip_min", "clip_max")]


def _vis(cls, call=None, layer_arg=False, **fixed):
    """A builder ``(model, clip, layer, seed, options) -> (x, classes) -> maps``."""

    def build(model, clip, layer, seed, options):
        kwargs = dict({k: v for k, v in options.items() if k in _options(cls)}, **fixed)
        vis = cls(model, layer, **clip, **kwargs) if layer_arg else cls(model, **clip,
                                                                        **kwargs)
        if call is None:
            return vis
        return lambda x, c: call(vis, x, c, seed)

    return build


def _seeded(vis, x, c, seed):
    return vis(x, c, seed=seed)


# name -> builder; every method gives maps of the whole input size.
ATTRIBUTIONS = {
    "saliency": _vis(saliency.Saliency, _seeded),
    "smoothgrad": _vis(saliency.SmoothGrad, _seeded),
    "vargrad": _vis(VarGrad, _seeded),
    "gradient_input": _vis(GradientInput),
    "integrated_gradients": _vis(saliency.IntegratedGradients,
                                 lambda v, x, c, s: v(x, c, baseline=v.clip_min)),
    "guided_backprop": _vis(guided.GuidedBackprop),
    "deconvnet": _vis(guided.Deconvnet),
    "gradcam": _vis(cam.GradCAM, layer_arg=True),
    "gradcam_pp": _vis(cam.GradCAMPlusPlus, layer_arg=True),
    "layercam": _vis(LayerCAM, layer_arg=True),
    "scorecam": _vis(cam.ScoreCAM, layer_arg=True),
    "rise": _vis(RISE, _seeded),
    "pixel_occlusion": _vis(OcclusionMap, patch_size=1, stride=1),
}

# Controls that ignore the model: (x, classes, seed) -> maps.
CONTROLS = {"edge": lambda x, c, seed: edge_map(x),
            "random": lambda x, c, seed: random_map(x, seed)}


def explainer(name: str, model: keras.Model, *, clip_min: float = 0.0, clip_max: float = 1.0,
              layer: Optional[str] = None, seed: int = 0, batch_size: int = 64,
              **options) -> Explainer:
    """The attribution method ``name`` on ``model`` as ``(x, classes) -> maps``.

    Args:
      name: a key of :data:`ATTRIBUTIONS` or :data:`CONTROLS`.
      model: any Keras classifier; the explainer reads its weights at each call (so the
        randomization check sees re-initialized weights).
      clip_min, clip_max: the model's input range.
      layer: layer of the CAM methods (``None``: the last spatial layer).
      seed: seed of the stochastic methods (SmoothGrad, VarGrad, RISE, the random control).
      batch_size: images per call of the method.
      **options: constructor arguments of the method (e.g. ``num_masks`` for RISE); those
        a method does not take are ignored.

    Returns:
      a function of images (N, H, W, C) and classes (N,) returning float32 (N, H, W) maps
      (channels summed for signed per-channel attributions).

    Raises:
      InputError: for an unknown name.
    """
    if name not in ATTRIBUTIONS and name not in CONTROLS:
        raise InputError(f"Unknown attribution method {name!r}. Choose from: "
                         f"{', '.join(list(ATTRIBUTIONS) + list(CONTROLS))}.")
    size = check_positive_int("batch_size", batch_size)
    if name in CONTROLS:
        return lambda x, classes: CONTROLS[name](np.asarray(x, "float32"), classes, int(seed))
    fn = ATTRIBUTIONS[name](model, {"clip_min": clip_min, "clip_max": clip_max}, layer,
                            int(seed), options)

    def explain(x, classes):
        x, classes = np.asarray(x, "float32"), np.asarray(classes)
        return np.concatenate([pixel_maps(fn(x[p], classes[p]))
                               for p in _chunks(len(x), size)])

    return explain
