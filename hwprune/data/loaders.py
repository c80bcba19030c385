"""Loaders over an :class:`~hwprune.data.datasets.ImageData`: normalised splits, seeded augmentation.

Training augmentation is seeded per (epoch, sample) and the sampler per epoch, so a
resumed run sees exactly the batches an uninterrupted one would, on any number of
processes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import check_number
from .datasets import DataError, ImageData

__all__ = ["SeededSampler", "Loaders", "make_loaders"]


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
    calib: DataLoader  # training images without augmentation, fixed order whatever the seed: channel order, BN
    test: DataLoader | None
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: list[float]
    std: list[float]


def make_loaders(data: ImageData, batch_size: int = 128, *, seed: int = 0, workers: int = 0,
                 rank: int = 0, world: int = 1, eval_batch_size: int = 256) -> Loaders:
    check_number("batch_size", batch_size, integer=True, minimum=1, inclusive=True)
    check_number("eval_batch_size", eval_batch_size, integer=True, minimum=1, inclusive=True)
    check_number("workers", workers, integer=True, inclusive=True)
    if len(data.train_idx) < batch_size * world:
        raise DataError(f"training split has {len(data.train_idx)} images, fewer than one batch of "
                        f"{batch_size} per process; lower the batch size")
    train_set = _Split(data, data.train_idx, augment=True, seed=seed)
    sampler = SeededSampler(len(train_set), seed, shuffle=True, rank=rank, world=world)
    train = DataLoader(train_set, batch_size, sampler=sampler, num_workers=workers, drop_last=True)
    # the calibration images and their order do not follow ``seed`` (they are seed 0's): the channel order is
    # estimated on them (Taylor) and adaptive BN runs on them, so a network searched under one seed and fine-tuned
    # under another keeps the channels that were scored (with a seeded subset, the channels two seeds kept at 30% of
    # resnet20's latency overlapped by 36-67% per group, and fine-tunes of one encoding spread 3.8 points)
    rng = np.random.default_rng((0, 1))
    calib_idx = np.sort(rng.permutation(data.train_idx)[: min(len(data.train_idx), 20 * eval_batch_size)])
    mk = lambda idx: DataLoader(_Split(data, idx, augment=False, seed=seed), eval_batch_size,  # noqa: E731
                                shuffle=False, num_workers=workers)
    calib = DataLoader(_Split(data, calib_idx, augment=False, seed=seed), batch_size,
                       sampler=SeededSampler(len(calib_idx), 1, shuffle=True), num_workers=workers)
    mean, std = data.mean_std()
    return Loaders(train, mk(data.val_idx), calib, mk(data.test_idx) if len(data.test_idx) else None,
                   data.num_classes, data.input_shape, mean, std)
