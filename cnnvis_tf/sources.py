"""Bring your own model and data: models and test images from outside a run directory.

Models (:func:`load_model_source`): a ``.keras`` or ``.h5`` file, a TensorFlow SavedModel
directory (wrapped through ``keras.layers.TFSMLayer`` into a functional model), or a
``keras.applications`` network named ``keras_app:NAME[,key=value...]`` (e.g.
``keras_app:MobileNetV2,alpha=0.35``). Application weights are used only if they are
already in the Keras cache (``~/.keras/models``): nothing is downloaded.

Data (:func:`load_dataset_source`): a built-in dataset name (:data:`datasets.DATASETS`),
an ``.npz`` with ``x_test`` and ``y_test`` (optionally ``x_train``, ``y_train``,
``class_names``), or an image folder with one sub-folder per class. The clip range and the
class names come from the caller or are inferred, and logged with where they came from.

Probability outputs follow the package policy (:mod:`cnnvis_tf.checks`): a model whose
outputs are softmax probabilities is detected, logged once and wrapped to output
``log p`` (:func:`as_logits`), so attacks, metrics and visualizations all see logits.
"""

import contextlib
import dataclasses
import os

import keras
import numpy as np
from absl import logging

from cnnvis_tf import checks, datasets, rundir
from cnnvis_tf.errors import InputError

__all__ = [
    "ModelSource",
    "load_model_source",
    "load_dataset_source",
    "as_logits",
    "is_model_spec",
    "KERAS_APP_PREFIX",
    "IMAGE_EXTENSIONS",
]

KERAS_APP_PREFIX = "keras_app:"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
WEIGHTS = ("auto", "imagenet", "none")


@dataclasses.dataclass
class ModelSource:
    """A model loaded from a file, a SavedModel or keras.applications.

    Attributes:
      model: the classifier, outputting logits (a probability model is wrapped).
      kind: ``"keras"``, ``"h5"``, ``"savedmodel"`` or ``"keras_app"``.
      path: the path or ``keras_app:`` spec it was loaded from.
      outputs: what the loaded model itself outputs: ``"logits"`` or ``"probabilities"``.
      fingerprint: :func:`rundir.model_fingerprint` of the loaded weights.
      details: facts recorded with the results (e.g. application weights).
    """

    model: keras.Model
    kind: str
    path: str
    outputs: str
    fingerprint: str
    details: dict = dataclasses.field(default_factory=dict)

    def facts(self) -> dict:
        """What config.json records about the model source."""
        return {"model_source": self.kind, "model_path": self.path,
                "model_outputs": self.outputs, **self.details}


def is_model_spec(path: str) -> bool:
    """Whether ``path`` names a model this module loads (not a run directory)."""
    path = os.path.expanduser(str(path))
    return (path.startswith(KERAS_APP_PREFIX) or path.endswith((".keras", ".h5", ".hdf5"))
            or os.path.isfile(os.path.join(path, "saved_model.pb")))


# ----------------------------------------------------------------------------- models


def as_logits(model: keras.Model, probe: np.ndarray, name: str = "model") -> tuple:
    """``(logits model, "logits" | "probabilities")``: detects softmax outputs on ``probe``
    (a few inputs), says so in one warning (as attacks do) and wraps such a model to output
    ``log p``."""
    try:
        out = keras.ops.convert_to_numpy(model(probe[:8], training=False))
    except Exception as err:  # noqa: BLE001  (any failure of a user's model is input error)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise InputError(f"{name} failed on inputs of shape {probe[:8].shape} ({first}); "
                         "pass data shaped like the model's input.") from None
    if out.ndim != 2:
        raise InputError(f"{name} outputs shape {out.shape}; a classifier must output "
                         "(batch, classes).")
    if not checks.looks_like_probabilities(out):
        return model, "logits"
    logging.warning("%s outputs probabilities (a softmax head): attacks, metrics and "
                 "visualizations use log p as its logits.", name)
    inputs = keras.Input(shape=tuple(probe.shape[1:]), name="image")
    p = model(inputs)
    z = keras.layers.Lambda(lambda t: keras.ops.log(keras.ops.clip(t, 1e-30, 1.0)),
                            name="log_probabilities")(p)
    return keras.Model(inputs, z, name=f"{model.name}_logits"), "probabilities"


def _first_output(out):
    if isinstance(out, dict):
        if len(out) != 1:
            raise InputError(f"The SavedModel has {len(out)} outputs ({', '.join(out)}); a "
                             "classifier with one output (the class scores) is needed.")
        return next(iter(out.values()))
    if isinstance(out, (list, tuple)):
        if len(out) != 1:
            raise InputError(f"The SavedModel has {len(out)} outputs; a classifier with one "
                             "output (the class scores) is needed.")
        return out[0]
    return out


def _load_savedmodel(path):
    try:
        layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    except (ValueError, OSError, KeyError) as err:
        raise InputError(f"{path} could not be loaded as a SavedModel with a "
                         f"'serving_default' signature ({str(err).splitlines()[0][:200]}); "
                         "export it with model.export(path) or tf.saved_model.save.") from None
    _, kwargs = layer.call_endpoint_fn.structured_input_signature
    specs = list(kwargs.values())
    if len(specs) != 1 or specs[0].shape.rank is None or specs[0].shape.rank < 2:
        raise InputError(f"SavedModel {path} takes {len(specs)} inputs "
                         f"({', '.join(kwargs)}); one image batch input is needed.")
    inputs = keras.Input(shape=tuple(specs[0].shape[1:]), name="image")
    outputs = _first_output(layer(inputs))
    return keras.Model(inputs, outputs, name=os.path.basename(os.path.normpath(path)))


@contextlib.contextmanager
def _no_download(allowed):
    """Makes keras.applications' weight fetch use the Keras cache only: a file not yet there
    raises :class:`_NotCached` instead of being downloaded."""
    from keras.src.utils import file_utils

    real = file_utils.get_file

    def cached_only(fname=None, origin=None, *args, cache_subdir="datasets", cache_dir=None,
                    **kwargs):
        home = cache_dir or os.environ.get("KERAS_HOME",
                                           os.path.join(os.path.expanduser("~"), ".keras"))
        target = os.path.join(home, cache_subdir, fname or os.path.basename(origin or ""))
        if not (allowed and os.path.exists(target)):
            raise _NotCached(target)
        return real(fname, origin, *args, cache_subdir=cache_subdir, cache_dir=cache_dir,
                    **kwargs)

    file_utils.get_file = cached_only
    try:
        yield
    finally:
        file_utils.get_file = real


class _NotCached(Exception):
    pass


def _parse_app(spec):
    """``(name, kwargs)`` of ``keras_app:NAME[,key=value...]``."""
    body = spec[len(KERAS_APP_PREFIX):]
    name, *pairs = [p.strip() for p in body.split(",")]
    fn = getattr(keras.applications, name, None) if name else None
    if not callable(fn) or not name[:1].isupper():
        known = sorted(n for n in dir(keras.applications) if n[:1].isupper())
        raise InputError(f"--model={spec}: {name!r} is not a keras.applications model; "
                         f"choose one of: {', '.join(known)}.")
    kwargs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--model={spec}: {pair!r} is not key=value (e.g. "
                             f"{KERAS_APP_PREFIX}MobileNetV2,alpha=0.35).")
        try:
            kwargs[key] = float(value) if "." in value else int(value)
        except ValueError:
            kwargs[key] = {"true": True, "false": False}.get(value.lower(), value)
    return name, fn, kwargs


def _preprocess_fn(name):
    """The ``preprocess_input`` of the application's module (expects 0..255 pixels)."""
    for module in dir(keras.applications):
        mod = getattr(keras.applications, module)
        if getattr(mod, name, None) is not None and hasattr(mod, "preprocess_input"):
            return mod.preprocess_input
    return None


def _load_keras_app(spec, input_shape, num_classes, clip_min, clip_max, weights):
    name, fn, kwargs = _parse_app(spec)
    if weights not in WEIGHTS:
        raise InputError(f"weights={weights!r}: choose one of {', '.join(WEIGHTS)}.")
    if input_shape is None:
        raise InputError(f"--model={spec} needs data to size its input: pass --dataset.")

    def build(w):  # ImageNet weights: the network's own input size, 1000 classes
        args = {"weights": w, "classifier_activation": None}
        if w is None:
            args.update(input_shape=tuple(input_shape), classes=int(num_classes))
        try:
            return fn(**{**args, **kwargs})
        except (ValueError, TypeError) as err:
            raise InputError(f"--model={spec} could not be built for inputs of shape "
                             f"{tuple(input_shape)} ({str(err).splitlines()[0][:200]}).") \
                from None

    used = None
    if weights != "none":
        try:
            with _no_download(allowed=True):
                net, used = build("imagenet"), "imagenet"
        except _NotCached as missing:
            if weights == "imagenet":
                raise InputError(f"--model={spec}: the ImageNet weights are not in the Keras "
                                 f"cache ({missing}) and nothing is downloaded here; copy "
                                 "the file there, or use --weights=auto or none for random "
                                 "weights.") from None
            logging.warning("%s: no ImageNet weights in the Keras cache (%s); using random "
                            "weights (weights=None, %d classes).", name, missing, num_classes)
    if used is None:
        with _no_download(allowed=False):
            net = build(None)
    preprocess = _preprocess_fn(name)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    scale = 255.0 / (clip_max - clip_min)
    h = inputs
    size = tuple(net.inputs[0].shape[1:])
    if size[:2] != tuple(input_shape[:2]):  # pretrained: resize to the network's input
        h = keras.layers.Resizing(size[0], size[1], name="resize_to_network")(h)
    if size[-1] == 3 and input_shape[-1] == 1:
        h = keras.layers.Concatenate(name="gray_to_rgb")([h, h, h])
    if preprocess is not None:  # the application's own input scaling, from 0..255 pixels
        h = keras.layers.Lambda(lambda t: preprocess((t - clip_min) * scale),
                                name="preprocess_input")(h)
    model = keras.Model(inputs, net(h), name=name)
    return model, {"keras_app": name, "keras_app_kwargs": kwargs,
                   "weights": used or "random"}


def load_model_source(path: str, *, input_shape: tuple | None = None,
                      num_classes: int | None = None, clip_min: float = 0.0,
                      clip_max: float = 1.0, weights: str = "auto",
                      probe: np.ndarray | None = None) -> ModelSource:
    """Loads a model from ``path``: a ``.keras``/``.h5`` file, a SavedModel directory, or
    ``keras_app:NAME[,key=value...]``.

    Args:
      path: where the model is (``~`` expanded).
      input_shape, num_classes: the data's (needed to build a ``keras_app`` model).
      clip_min, clip_max: the input range (random probes; application preprocessing).
      weights: ``keras_app`` only: ``"auto"`` (ImageNet weights if cached, else random,
        with a warning), ``"imagenet"`` (an error if not cached) or ``"none"``.
      probe: a few inputs to detect probability outputs on (default: uniform noise).

    Returns:
      A :class:`ModelSource` whose ``model`` outputs logits.

    Raises:
      InputError: missing or unreadable files, unknown applications, uncached weights
        asked for, models that are not single-output classifiers.
    """
    spec = os.path.expanduser(str(path or ""))
    details = {}
    if spec.startswith(KERAS_APP_PREFIX):
        model, details = _load_keras_app(spec, input_shape, num_classes, clip_min, clip_max,
                                         weights)
        kind = "keras_app"
    elif os.path.isdir(spec):
        if not os.path.isfile(os.path.join(spec, "saved_model.pb")):
            raise InputError(f"--model_path={spec} is a folder without saved_model.pb: pass "
                             "a .keras or .h5 file, a SavedModel folder, or a run directory "
                             "as --model_dir.")
        model, kind = _load_savedmodel(spec), "savedmodel"
    elif spec.endswith((".keras", ".h5", ".hdf5")):
        if not os.path.isfile(spec):
            raise InputError(f"Model file {spec!r} does not exist: pass the path of a .keras "
                             "or .h5 file.")
        model = rundir.load_model(spec)
        kind = "keras" if spec.endswith(".keras") else "h5"
    else:
        raise InputError(f"--model_path={spec!r} is not a .keras or .h5 file nor a "
                         "SavedModel folder (and --model takes keras_app:NAME).")
    if len(getattr(model, "inputs", None) or [None]) != 1:
        raise InputError(f"{spec}: the model has {len(model.inputs)} inputs; one image input "
                         "is needed.")
    fingerprint = rundir.model_fingerprint(model)
    if probe is None:
        shape = tuple(32 if d is None else int(d) for d in model.inputs[0].shape[1:])
        probe = np.random.default_rng(0).uniform(clip_min, clip_max, (4,) + shape)
    logits_model, outputs = as_logits(model, np.asarray(probe, np.float32), name=spec)
    logging.info("Model %s (%s): %d parameters, outputs %s", spec, kind, model.count_params(),
                 outputs)
    return ModelSource(model=logits_model, kind=kind, path=spec, outputs=outputs,
                       fingerprint=fingerprint, details=details)


# ----------------------------------------------------------------------------- data


def _infer_clip(x, clip_min, clip_max, what):
    """The clip range: given values, else the smallest usual range holding ``x``."""
    lo, hi = float(np.min(x)), float(np.max(x))
    if clip_min is not None and clip_max is not None:
        origin = "flags"
    else:
        for a, b in ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)):
            if a <= lo and hi <= b:
                break
        else:
            a, b = lo, hi
        clip_min = a if clip_min is None else clip_min
        clip_max = b if clip_max is None else clip_max
        origin = "inferred from the pixel values"
    clip_min, clip_max = float(clip_min), float(clip_max)
    if not clip_min < clip_max:
        raise InputError(f"--clip_min={clip_min:g} must be below --clip_max={clip_max:g}.")
    if lo < clip_min - 1e-6 or hi > clip_max + 1e-6:
        raise InputError(f"{what} has pixel values in [{lo:g}, {hi:g}], outside the clip range "
                         f"[{clip_min:g}, {clip_max:g}]; pass --clip_min/--clip_max that hold "
                         "them.")
    logging.info("%s: clip range [%g, %g] (%s)", what, clip_min, clip_max, origin)
    return clip_min, clip_max


def _labels(y, n, what, key):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if len(y) != n:
        raise InputError(f"{what}: {key} has {len(y)} labels for {n} images; give one class id "
                         "per image.")
    if not np.issubdtype(y.dtype, np.number) or (len(y) and (
            y.min() < 0 or not np.all(np.equal(np.mod(y, 1), 0)))):
        raise InputError(f"{what}: {key} must hold class ids 0, 1, ... (or one-hot rows).")
    return y.astype(np.int64)


def _images(x, what, key):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.number):
        raise InputError(f"{what}: {key} is not numeric ({x.dtype}).")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or len(x) == 0:
        raise InputError(f"{what}: {key} has shape {x.shape}; expected a non-empty image batch "
                         "(N, H, W) or (N, H, W, C).")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{what}: {key} contains NaN or Inf.")
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def _class_names(given, stored, num_classes, what):
    if given:
        names, origin = [str(n) for n in given], "flags"
    elif stored is not None:
        names, origin = [str(n) for n in stored], "the data"
    else:
        names, origin = [str(i) for i in range(num_classes)], "class ids"
    if len(names) < num_classes:
        raise InputError(f"{what}: {len(names)} class names for labels up to "
                         f"{num_classes - 1}; give one name per class (--class_names=a,b,...).")
    logging.info("%s: %d classes (names from %s): %s", what, len(names), origin,
                 ", ".join(names[:10]) + (", ..." if len(names) > 10 else ""))
    return names


def _from_npz(path, clip_min, clip_max, class_names):
    what = f"--dataset={path}"
    arrays = rundir.read_npz(path, required=("x_test", "y_test"), what=what)
    x_test = _images(arrays["x_test"], what, "x_test")
    y_test = _labels(arrays["y_test"], len(x_test), what, "y_test")
    if "x_train" in arrays and "y_train" in arrays:
        x_train = _images(arrays["x_train"], what, "x_train")
        y_train = _labels(arrays["y_train"], len(x_train), what, "y_train")
        if x_train.shape[1:] != x_test.shape[1:]:
            raise InputError(f"{what}: x_train images {x_train.shape[1:]} and x_test images "
                             f"{x_test.shape[1:]} differ in shape.")
    else:
        x_train, y_train = np.zeros((0,) + x_test.shape[1:], np.float32), np.zeros(0, np.int64)
    lo, hi = _infer_clip(np.concatenate([x_test.reshape(-1), x_train.reshape(-1)]),
                         clip_min, clip_max, what)
    stored = arrays.get("class_names")
    num = int(max(y_test.max(initial=0), y_train.max(initial=0))) + 1
    names = _class_names(class_names, stored, num, what)
    return x_train, y_train, x_test, y_test, names, lo, hi


def _read_image(path, what):
    import tensorflow as tf

    try:
        img = tf.io.decode_image(tf.io.read_file(path), expand_animations=False).numpy()
    except (tf.errors.OpError, ValueError) as err:
        raise InputError(f"{what}: {path} is not a readable image "
                         f"({str(err).splitlines()[0][:120]}); remove or replace it.") from None
    return img


def _from_folder(path, clip_min, clip_max, class_names, image_size):
    import tensorflow as tf

    what = f"--dataset={path}"
    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d))
                     and not d.startswith("."))
    if not classes:
        raise InputError(f"{what} has no class sub-folders: put the images of each class in "
                         "a sub-folder named after it (e.g. cats/1.png, dogs/2.png).")
    images, labels, files = [], [], []
    for k, c in enumerate(classes):
        names = sorted(f for f in os.listdir(os.path.join(path, c))
                       if f.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise InputError(f"{what}: class folder {c!r} holds no images "
                             f"({', '.join(IMAGE_EXTENSIONS)}); add some or remove it.")
        for f in names:
            images.append(_read_image(os.path.join(path, c, f), what))
            labels.append(k)
            files.append(os.path.join(c, f))
    channels = max(img.shape[-1] for img in images)
    images = [np.repeat(img[..., :1], 3, axis=-1) if channels >= 3 and img.shape[-1] < 3
              else img[..., :channels] for img in images]
    images = [img[..., :3] if channels == 4 else img for img in images]  # drop alpha
    if image_size:
        size = tuple(int(s) for s in image_size)
        images = [tf.image.resize(img, size).numpy() for img in images]
    shapes = sorted({img.shape for img in images})
    if len(shapes) != 1:
        raise InputError(f"{what} holds images of several sizes ({shapes[0]} ... "
                         f"{shapes[-1]}); pass --image_size=H,W to resize them.")
    x = np.stack(images).astype(np.float32) / 255.0
    lo, hi = _infer_clip(x, clip_min, clip_max, what)
    if class_names:
        names = _class_names(class_names, None, len(classes), what)
    else:
        names = _class_names(None, classes, len(classes), what)
    logging.info("%s: %d images in %d class folders", what, len(x), len(classes))
    return (np.zeros((0,) + x.shape[1:], np.float32), np.zeros(0, np.int64), x,
            np.asarray(labels, np.int64), names, lo, hi)


def load_dataset_source(spec: str, *, data_dir: str | None = None,
                        clip_min: float | None = None, clip_max: float | None = None,
                        class_names: list | None = None, image_size: tuple | None = None,
                        seed: int = 0) -> datasets.Dataset:
    """Loads evaluation data from ``spec``: a built-in dataset name, an ``.npz`` or an image
    folder (one sub-folder per class; its name is the class name).

    Args:
      spec: what ``--dataset`` says (``~`` expanded).
      data_dir: a built-in dataset's folder.
      clip_min, clip_max: the input range (default: inferred from the pixels: [0, 1],
        [-1, 1] or [0, 255]; uint8 arrays and image files are scaled to [0, 1]).
      class_names: names of the classes (default: the folders, the npz's ``class_names``,
        or the class ids).
      image_size: ``(height, width)`` every image of a folder is resized to.
      seed: a built-in dataset's split seed.

    Returns:
      A :class:`datasets.Dataset` (the images in ``x_test``; ``x_train`` is empty unless
      the npz holds ``x_train``/``y_train``).

    Raises:
      InputError: unknown names, missing files or keys, empty folders, unreadable images,
        mixed sizes, pixels outside the clip range.
    """
    if not spec:
        raise InputError("--dataset is required with --model_path/--model: a built-in name "
                         f"({', '.join(datasets.DATASETS)}), an .npz or an image folder.")
    if spec in datasets.DATASETS:
        return datasets.load(spec, os.path.expanduser(data_dir) if data_dir else None,
                             seed=seed)
    path = os.path.expanduser(str(spec))
    if path.endswith(".npz"):
        parts = _from_npz(path, clip_min, clip_max, class_names)
    elif os.path.isdir(path):
        parts = _from_folder(path, clip_min, clip_max, class_names, image_size)
    else:
        raise InputError(f"--dataset={spec!r} is neither a built-in dataset "
                         f"({', '.join(datasets.DATASETS)}), an existing .npz file nor an "
                         "image folder.")
    x_train, y_train, x_test, y_test, names, lo, hi = parts
    return datasets.Dataset(os.path.basename(os.path.normpath(path)), x_train, y_train, x_test,
                            y_test, list(names), path, clip_min=lo, clip_max=hi)
