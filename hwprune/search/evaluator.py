"""What the search asks of a candidate: its costs (vectorised) and its fitness (cached, spread over ranks).

Fitness is validation top-1 after BatchNorm recalibration on training batches, with the
weights the evaluator gives (:mod:`hwprune.supernet.evaluate`: PruningNet-generated, or
inherited from the ordered dense model).
"""
from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

from ..errors import HwpruneError
from ..supernet.evaluate import as_evaluator
from ..training.distributed import world_info
from .budgets import Budget
from .config import SearchConfig

__all__ = ["CandidateEvaluator", "Enc", "score_many", "scoring_processes"]

Enc = tuple[int, ...]
_SCORING: tuple = ()  # what forked scoring processes score with (set before the fork, read in the children)


# the most multiply-accumulates per image of a dense network whose candidates a search scores in one process per
# core by default (a memory guard: each process holds its own candidate, activations and gradients). On a 2-core
# EPYC two forked 1-thread processes scored 1.40x the candidates one 2-thread process did at 31M MACs (resnet20,
# 28x28) and 1.21x at 73M (mobilenet_v2_cifar, benchmarks/scoring_workers.py); resnet18 at 98M-592M MACs gained
# 1.07-1.09x while one process peaked at 0.64-1.99 GB (1.36 GB at 333M; scoring_workers.py --sides), so on a
# many-core machine a larger network would multiply gigabytes for a few percent
FORK_MAX_MACS = 300e6


def scoring_processes(workers: int | None, *loaders, space=None) -> int:
    """How many processes :func:`score_many` scores in: ``workers``, or where None (:class:`SearchConfig`'s default)
    one per core this process may run on, if ``space``'s dense network takes at most :data:`FORK_MAX_MACS` (or
    ``space`` is None); 1 (here, on torch's threads) where processes cannot be forked safely: not Linux, CUDA already
    in use here, or a loader of ``loaders`` that starts worker processes of its own (a forked scoring process may not
    start processes)."""
    if workers is None:
        if space is not None and space.flops(space.full()) > FORK_MAX_MACS:
            return 1
        try:
            workers = len(os.sched_getaffinity(0))
        except AttributeError:  # (not Linux: scored here below anyway)
            workers = os.cpu_count() or 1
    if workers <= 1 or not sys.platform.startswith("linux") or torch.cuda.is_initialized():
        return 1
    if any(getattr(_unwrapped(loader), "num_workers", 0) for loader in loaders):
        return 1
    return workers


def _unwrapped(loader):
    """The loader a window of it (:class:`_Limited`, :class:`_Rotated`) reads."""
    while isinstance(loader, (_Limited, _Rotated)):
        loader = loader.loader
    return loader


def score_many(scorer, encs: list[Enc], val, calib, calib_batches: int, workers: int | None = 1) -> list[float]:
    """``scorer.score`` of every encoding, in order: here, or in ``workers`` processes forked from this one (one
    torch thread each; the scorer and loaders are theirs by the fork, not pickled; None: one per core for a small
    network). Where processes cannot be forked safely, here (:func:`scoring_processes`). (One candidate goes to a
    process too: scored here, on this process's threads, it could score otherwise than its generation's others.)"""
    workers = scoring_processes(workers, val, calib, space=getattr(scorer, "space", None))
    if workers <= 1 or not encs:
        return [float(scorer.score(e, val, calib, calib_batches)) for e in encs]
    global _SCORING
    _SCORING = (scorer, val, calib, calib_batches)
    try:
        with mp.get_context("fork").Pool(min(workers, len(encs)), initializer=torch.set_num_threads,
                                         initargs=(1,)) as pool:
            return pool.map(_score_one, encs, chunksize=1)
    finally:
        _SCORING = ()


def _score_one(enc: Enc) -> float:
    scorer, val, calib, calib_batches = _SCORING
    return float(scorer.score(enc, val, calib, calib_batches))


class CandidateEvaluator:
    """Costs (vectorised) and fitness (cached, spread over ranks) of encodings."""

    def __init__(self, evaluator, table, val_loader, calib_loader, cfg: SearchConfig):
        self.scorer = as_evaluator(evaluator)  # a PruningNet, or anything with space and score()
        self.space, self.table, self.cfg = self.scorer.space, table, cfg
        self.val = _Limited(val_loader, cfg.val_batches) if cfg.val_batches else val_loader
        self.calib = calib_loader
        self.cache: dict[Enc, float] = {}
        self.evaluated = 0
        self.eval_seconds = 0.0

    def costs(self, encs: np.ndarray) -> np.ndarray:
        """(N, 3): predicted latency (ms, NaN without a table), FLOPs, params."""
        lat = self.table.predict_batch(encs) if self.table is not None else np.full(len(encs), np.nan)
        return np.stack([lat, self.space.flops_batch(encs), self.space.params_batch(encs)], 1)

    def feasible(self, encs: np.ndarray, budget: Budget) -> np.ndarray:
        c = self.costs(encs)
        ok = np.ones(len(encs), bool)
        for col, limit in budget.limits():
            ok &= c[:, col] <= limit
        return ok

    def fitness(self, encs: list[Enc]) -> list[float]:
        todo = [e for e in dict.fromkeys(encs) if e not in self.cache]
        if todo:
            t = time.perf_counter()
            rank, world = world_info()
            workers = self.cfg.workers if world == 1 else 1  # (under torchrun the ranks split the candidates)
            mine = dict(zip(todo[rank::world], score_many(self.scorer, todo[rank::world], self.val, self.calib,
                                                          self.cfg.calib_batches, workers)))
            if world > 1:
                parts: list = [None] * world
                dist.all_gather_object(parts, mine)
                for p in parts:
                    mine.update(p)
            self.cache.update(mine)
            self.evaluated += len(todo)
            self.eval_seconds += time.perf_counter() - t
        return [self.cache[e] for e in encs]


class _Rotated:
    """One pass over ``loader`` from its ``k``-th batch, then its first ``k``: another draw of the batches a
    candidate is recalibrated and tuned on (the training loaders' order is fixed, so every candidate scored with one
    such view gets the same batches)."""

    def __init__(self, loader, k: int):
        try:
            self.loader, self.k = loader, k % max(1, len(loader))
        except TypeError:
            raise HwpruneError(f"another draw of calibration batches starts {k} batches in and wraps around: it "
                               f"needs a loader with a length (a DataLoader), not a {type(loader).__name__}") from None

    def __iter__(self):
        yield from itertools.islice(iter(self.loader), self.k, None)
        yield from itertools.islice(iter(self.loader), self.k)

    def __len__(self):
        return len(self.loader)


class _Limited:
    """``n`` batches of ``loader`` (every one after the first ``start``; ``n=None``: to its end)."""

    def __init__(self, loader, n, start: int = 0):
        self.loader, self.n, self.start = loader, n, start

    def __iter__(self):
        for k, batch in enumerate(self.loader):
            if self.n is not None and k >= self.start + self.n:
                return
            if k >= self.start:
                yield batch

    def batches(self) -> int:
        """How many batches the window holds: from the loader's length where it has one (a DataLoader), without
        loading them; otherwise by iterating it once."""
        try:
            total = len(self.loader)
        except TypeError:
            return sum(1 for _ in self)
        return max(0, (total if self.n is None else min(total, self.start + self.n)) - self.start)
