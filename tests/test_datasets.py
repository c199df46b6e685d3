"""Dataset loaders against tiny fixture files in each real format."""

import os
import pickle

import numpy as np
import pytest
import scipy.io
import tensorflow as tf

from cnnvis_tf import datasets
from cnnvis_tf.errors import DataFilesError, InputError


def _images(n, h, w, c, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def test_mnist_npz(tmp_path):
    xtr, xte = _images(20, 28, 28, 1)[..., 0], _images(10, 28, 28, 1, 1)[..., 0]
    ytr, yte = np.arange(20) % 10, np.arange(10)
    np.savez(tmp_path / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    d = datasets.load("mnist", str(tmp_path))
    assert d.x_train.shape == (20, 28, 28, 1) and d.x_test.shape == (10, 28, 28, 1)
    assert d.x_train.dtype == np.float32
    np.testing.assert_allclose(d.x_train[..., 0], xtr / 255.0, atol=1e-7)
    np.testing.assert_array_equal(d.y_test, yte)
    assert d.source.endswith("mnist.npz")
    assert (d.clip_min, d.clip_max) == (0.0, 1.0)
    np.testing.assert_allclose(d.mean, [xtr.mean() / 255.0], rtol=1e-5)
    np.testing.assert_allclose(d.std, [(xtr / 255.0).std()], rtol=1e-4)


def test_mnist_embedded_split():
    d = datasets.load("mnist", embedded=True, seed=0)
    assert d.source == "embedded"
    assert d.x_train.shape == (4000, 28, 28, 1) and d.x_test.shape == (1000, 28, 28, 1)
    assert np.bincount(d.y_test).tolist() == [100] * 10  # stratified
    assert np.bincount(d.y_train).tolist() == [400] * 10
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert len(set(d.y_train[:50])) > 5  # shuffled, not sorted by class
    again = datasets.load("mnist", embedded=True, seed=0)
    np.testing.assert_array_equal(d.x_test, again.x_test)
    # Every seed of a variant is evaluated on the same test split (tables compare like with
    # like); the seed still changes the training subset and the validation split.
    other = datasets.load("mnist", embedded=True, seed=1)
    np.testing.assert_array_equal(d.x_test, other.x_test)
    np.testing.assert_array_equal(d.y_test, other.y_test)
    a = datasets.load("mnist", embedded=True, seed=0, train_size=100)
    b = datasets.load("mnist", embedded=True, seed=1, train_size=100)
    assert not np.array_equal(a.y_train, b.y_train)
    sub = datasets.load("mnist", embedded=True, seed=0, train_size=100)
    assert sub.x_train.shape[0] == 100


def test_mnist_falls_back_to_embedded_only_without_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))
    assert datasets.load("mnist").source == "embedded"
    with pytest.raises(DataFilesError, match=r"mnist\.npz.*--download"):
        datasets.load("mnist", str(tmp_path))


def _write_cifar10(root, n=6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    img = np.zeros((n, 32, 32, 3), np.uint8)
    img[..., 0] = 255  # red channel only: checks the CHW -> HWC transpose
    data = img.transpose(0, 3, 1, 2).reshape(n, -1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": list(np.arange(n) % 10)}, f)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names}, f)
    return folder


def test_cifar10_batches(tmp_path):
    _write_cifar10(tmp_path)
    d = datasets.load("cifar10", str(tmp_path))
    assert d.x_train.shape == (30, 32, 32, 3) and d.x_test.shape == (6, 32, 32, 3)
    np.testing.assert_allclose(d.x_train[..., 0], 1.0)
    np.testing.assert_allclose(d.x_train[..., 1:], 0.0)
    assert d.class_names[0] == "airplane" and d.num_classes == 10 and d.hflip


def test_cifar100(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 8), ("test", 4)):
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": np.zeros((n, 3072), np.uint8),
                         b"fine_labels": list(range(95, 95 + n))[:n]}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, f)
    with pytest.raises(DataFilesError, match="labels outside 0..99"):
        datasets.load("cifar100", str(tmp_path))
    with open(folder / "train", "wb") as f:
        pickle.dump({b"data": np.zeros((8, 3072), np.uint8), b"fine_labels": [99] * 8}, f)
    with open(folder / "test", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 3072), np.uint8), b"fine_labels": [3] * 4}, f)
    d = datasets.load("cifar100", str(tmp_path))
    assert d.num_classes == 100 and d.class_names[3] == "c3"
    assert d.y_train.tolist() == [99] * 8


def test_cifar_corrupt_and_wrong_shape(tmp_path):
    folder = _write_cifar10(tmp_path)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataFilesError, match="data_batch_3.*corrupt"):
        datasets.load("cifar10", str(tmp_path))
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, f)
    with pytest.raises(DataFilesError, match="data_batch_3"):
        datasets.load("cifar10", str(tmp_path))


def test_missing_files_message(tmp_path):
    with pytest.raises(DataFilesError) as err:
        datasets.load("cifar10", str(tmp_path / "nowhere"))
    msg = str(err.value)
    assert "data_batch_1" in msg and "test_batch" in msg and "--download" in msg
    assert "nowhere" in msg and "\n" not in msg
    for name, expected in (("svhn", "train_32x32.mat"), ("tiny_imagenet", "val_annotations.txt"),
                           ("cifar100", "cifar-100-python/train")):
        with pytest.raises(DataFilesError, match=expected):
            datasets.load(name, str(tmp_path))


def test_svhn_mat(tmp_path):
    for name, n in (("train_32x32.mat", 7), ("test_32x32.mat", 3)):
        x = _images(n, 32, 32, 3).transpose(1, 2, 3, 0)
        y = np.array([10, 1, 2, 3, 4, 5, 6][:n]).reshape(-1, 1)
        scipy.io.savemat(tmp_path / name, {"X": x, "y": y})
    d = datasets.load("svhn", str(tmp_path))
    assert d.x_train.shape == (7, 32, 32, 3) and d.y_train[0] == 0  # label 10 is digit 0
    assert not d.hflip
    with pytest.raises(DataFilesError, match="extra_32x32.mat"):
        datasets.load("svhn", str(tmp_path), svhn_extra=True)
    x = _images(5, 32, 32, 3).transpose(1, 2, 3, 0)
    scipy.io.savemat(tmp_path / "extra_32x32.mat", {"X": x, "y": np.full((5, 1), 10)})
    e = datasets.load("svhn", str(tmp_path), svhn_extra=True)
    assert e.x_train.shape == (12, 32, 32, 3) and e.y_train[-1] == 0
    i = datasets.load("svhn", str(tmp_path), normalization="imagenet")
    np.testing.assert_allclose(i.mean, datasets.IMAGENET_MEAN, rtol=1e-6)
    with pytest.raises(InputError, match="RGB"):
        datasets.load("mnist", embedded=True, normalization="imagenet")
    with pytest.raises(InputError, match="svhn only"):
        datasets.load("mnist", embedded=True, svhn_extra=True)
    (tmp_path / "test_32x32.mat").write_bytes(b"\x00garbage")
    with pytest.raises(DataFilesError, match="test_32x32.mat"):
        datasets.load("svhn", str(tmp_path))


def test_tiny_imagenet_folder(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819"]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn01629819\tnewt\n")
    jpeg = tf.io.encode_jpeg(tf.constant(_images(1, 64, 64, 3)[0])).numpy()
    for w in wnids:
        d = root / "train" / w / "images"
        d.mkdir(parents=True)
        for i in range(3):
            (d / f"{w}_{i}.JPEG").write_bytes(jpeg)
    lines = []
    for i, w in enumerate(wnids * 2):
        (root / "val" / "images" / f"val_{i}.JPEG").write_bytes(jpeg)
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    d = datasets.load("tiny_imagenet", str(tmp_path))
    assert d.x_train.shape == (6, 64, 64, 3) and d.x_test.shape == (4, 64, 64, 3)
    assert d.class_names == ["goldfish", "newt"] and d.y_test.tolist() == [0, 1, 0, 1]
    (root / "val" / "images" / "val_2.JPEG").write_bytes(b"broken")
    with pytest.raises(DataFilesError, match="val_2.JPEG"):
        datasets.load("tiny_imagenet", str(tmp_path))


def test_unknown_dataset_and_bad_args():
    with pytest.raises(InputError, match="Unknown dataset 'imagenet'"):
        datasets.load("imagenet")
    with pytest.raises(InputError, match="train_size"):
        datasets.load("mnist", embedded=True, train_size=10**6)
    with pytest.raises(InputError, match="batch_size"):
        datasets.pipeline(np.zeros((2, 4, 4, 1), np.float32), np.zeros(2), 0)


def test_pipeline_batches_shuffles_and_augments():
    x = np.random.default_rng(0).uniform(size=(10, 8, 8, 3)).astype("float32")
    y = np.arange(10)
    plain = list(datasets.pipeline(x, y, 4).as_numpy_iterator())
    assert [len(b[1]) for b in plain] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in plain]), y)
    shuffled = np.concatenate([b[1] for b in datasets.pipeline(x, y, 4, shuffle=True, seed=3)])
    assert sorted(shuffled.tolist()) == y.tolist() and shuffled.tolist() != y.tolist()
    aug = list(datasets.pipeline(x, y, 10, augment=True, crop_padding=2, seed=1))[0][0].numpy()
    assert aug.shape == x.shape and aug.min() >= 0.0 and aug.max() <= 1.0
    assert not np.allclose(aug, x)
    # Reflect-padded crops and flips only move pixels around: per-image values come from x.
    for a, b in zip(aug, x):
        assert np.isin(np.round(a, 6), np.round(b, 6)).all()


def test_facts_for_config():
    d = datasets.load("mnist", embedded=True, train_size=50)
    facts = d.facts()
    assert facts["input_shape"] == [28, 28, 1] and facts["clip_min"] == 0.0
    assert facts["class_names"] == [str(i) for i in range(10)] and facts["data_source"] == "embedded"
    assert len(facts["normalization"]["mean"]) == 1
    assert os.path.basename(__file__) == "test_datasets.py"


def test_keras_cache_layout_is_found(tmp_path, monkeypatch):
    """Keras 3 extracts CIFAR into ~/.keras/datasets/cifar-10-batches-py-target/."""
    target = tmp_path / "datasets" / "cifar-10-batches-py-target"
    target.mkdir(parents=True)
    _write_cifar10(target)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    d = datasets.load("cifar10")
    assert d.x_test.shape == (6, 32, 32, 3) and "cifar-10-batches-py-target" in d.source
