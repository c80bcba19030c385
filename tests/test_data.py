"""Datasets from local files and the bundled default; seeded splits and augmentation."""
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from hwprune.data import DataError, SeededSampler, load_dataset, make_loaders


def test_bundled_mnist_is_real_balanced_and_split_deterministically():
    d = load_dataset("bundled")
    assert d.images.shape == (5000, 1, 32, 32) and d.images.dtype == torch.uint8
    assert np.bincount(d.labels.numpy()).tolist() == [500] * 10
    assert 0.05 < d.images.float().mean().item() / 255 < 0.2  # dark background, bright strokes
    parts = [set(d.train_idx), set(d.val_idx), set(d.test_idx)]
    assert sum(map(len, parts)) == 5000 and not (parts[0] & parts[1]) and not (parts[1] & parts[2])
    again = load_dataset("bundled")
    assert np.array_equal(again.val_idx, d.val_idx)
    assert not np.array_equal(load_dataset("bundled", seed=1).val_idx, d.val_idx)


def test_limit_keeps_every_class():
    d = load_dataset("bundled").limit_train(200)
    assert len(d.train_idx) == 200 and set(d.labels[d.train_idx].tolist()) == set(range(10))


def test_augmentation_is_seeded_per_epoch_and_sample():
    L = make_loaders(load_dataset("bundled"), 32)
    ds = L.train.dataset
    ds.set_epoch(0)
    a, b = ds[5][0], ds[5][0]
    ds.set_epoch(1)
    c = ds[5][0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(float(L.val.dataset[0][0].mean())) < 3  # normalised


def test_calibration_images_do_not_follow_the_training_seed():
    """The channel order (Taylor) and adaptive BN come from the calibration batches: a network searched under one
    seed and fine-tuned under another must keep the channels that were scored, while training order still varies."""
    data = load_dataset("bundled")
    a, b = make_loaders(data, 32, seed=0), make_loaders(data, 32, seed=7)
    batches = lambda loader: [x for x, _ in loader][:3]  # noqa: E731
    assert all(torch.equal(x, y) for x, y in zip(batches(a.calib), batches(b.calib)))
    assert len(a.calib.dataset) == len(b.calib.dataset) > 0
    assert not torch.equal(next(iter(a.train))[1], next(iter(b.train))[1])


def test_sampler_shards_and_resumes_mid_epoch():
    s0, s1 = SeededSampler(100, seed=3, rank=0, world=2), SeededSampler(100, seed=3, rank=1, world=2)
    a, b = list(s0), list(s1)
    assert len(a) == len(b) == 50 and not set(a) & set(b)
    s0.set_epoch(0, start=20)
    assert list(s0) == a[20:]
    s0.set_epoch(1)
    assert list(s0) != a


def _png_folder(root, n=4, corrupt=False):
    from PIL import Image

    for c, cls in enumerate(["cat", "dog"]):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((12, 12, 3), 40 * c + i, np.uint8)).save(root / cls / f"{i}.png")
    if corrupt:
        (root / "dog" / "bad.png").write_bytes(b"not a png")


def test_image_folder(tmp_path):
    _png_folder(tmp_path)
    d = load_dataset(tmp_path, val_fraction=0.25, test_fraction=0.0)
    assert d.classes == ["cat", "dog"] and d.images.shape == (8, 3, 12, 12)
    assert d.labels.tolist() == [0] * 4 + [1] * 4 and len(d.val_idx) == 2
    assert d.images[5, 0, 0, 0] == 40 + 1
    assert load_dataset(tmp_path, image_size=8).images.shape[-1] == 8


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty"):
        load_dataset(tmp_path / "empty")
    _png_folder(tmp_path / "bad", corrupt=True)
    with pytest.raises(DataError, match=r"cannot read image .*bad\.png"):
        load_dataset(tmp_path / "bad")


def test_cifar_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1", 20), ("data_batch_2", 20), ("test_batch", 10)):
        batch = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    d = load_dataset(tmp_path)
    assert d.images.shape == (50, 3, 32, 32) and len(d.test_idx) == 10 and d.flip
    assert len(d.train_idx) + len(d.val_idx) == 40


def test_cifar_batch_refuses_foreign_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(DataError, match="refers to builtins.print"):
        load_dataset(tmp_path)


def _idx(path, arr):
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


def test_mnist_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    _idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (30, 28, 28)))
    _idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 30))
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (6, 28, 28)))
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 6))
    d = load_dataset(tmp_path, image_size=32)
    assert d.images.shape == (36, 1, 32, 32) and len(d.test_idx) == 6 and not d.flip
    raw = (tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(gzip.decompress(raw)[:-100]))
    with pytest.raises(DataError, match="is truncated"):
        load_dataset(tmp_path)


def test_batch_larger_than_split_is_refused():
    d = load_dataset("bundled")
    d.train_idx = d.train_idx[:10]
    with pytest.raises(DataError, match="fewer than one batch"):
        make_loaders(d, 64)


def test_a_first_validation_batch_sees_every_class():
    """The bundled file is sorted by class: a score on the first batches (--val-batches 1) must still be fair."""
    d = load_dataset("bundled")
    loaders = make_loaders(d, 64, eval_batch_size=64)
    _, y = next(iter(loaders.val))
    assert len(set(y.tolist())) == 10
    assert np.array_equal(load_dataset("bundled").val_idx, d.val_idx)  # still seeded


def test_train_and_val_folders_are_training_and_test(tmp_path):
    """ImageNet's layout is one dataset (not two classes named train and val): val/ becomes the test set, its labels
    matched to train/'s by class name."""
    from PIL import Image

    _png_folder(tmp_path / "train")
    (tmp_path / "val" / "dog").mkdir(parents=True)  # val lacks a class: still matched by name
    Image.fromarray(np.full((12, 12, 3), 7, np.uint8)).save(tmp_path / "val" / "dog" / "x.png")
    d = load_dataset(tmp_path, val_fraction=0.25)
    assert d.classes == ["cat", "dog"] and len(d.test_idx) == 1 and len(d.train_idx) + len(d.val_idx) == 8
    assert d.labels[d.test_idx[0]] == 1 and d.images[d.test_idx[0], 0, 0, 0] == 7
    (tmp_path / "val" / "cow").mkdir()
    Image.fromarray(np.full((12, 12, 3), 7, np.uint8)).save(tmp_path / "val" / "cow" / "x.png")
    with pytest.raises(DataError, match=r"has classes that .* lacks: \['cow'\]"):
        load_dataset(tmp_path)


def test_fashion_mnist_by_name(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    _idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (40, 28, 28)))
    _idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 40))
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (8, 28, 28)))
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 8))
    monkeypatch.setenv("HWPRUNE_FASHION_MNIST", str(tmp_path))
    d = load_dataset("fashion-mnist")
    assert d.name == "fashion-mnist" and d.classes[0] == "T-shirt/top" and len(d.test_idx) == 8
    monkeypatch.setenv("HWPRUNE_FASHION_MNIST", str(tmp_path / "missing"))
    with pytest.raises(DataError, match="fashion-mnist is not installed .*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")
