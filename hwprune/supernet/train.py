"""PruningNet training by stochastic structure sampling (MetaPruning, section 3.2).

By default every step trains a sandwich (the widest network, the narrowest and two
random ones; ``supernet/sampling.py``), the widest on the labels and the others
distilled in place from its outputs (or from a dense ``teacher``), gradients
averaged into one update; ``sampling="single"`` is the paper's one encoding per
step on the labels. The encodings are seeded by ``(seed, step)``: all data-parallel
ranks run the same candidates, and a resumed run draws exactly what the
uninterrupted one would. Together with seeded data order and augmentation, the
saved optimizer and RNG states, a run interrupted at any checkpoint and resumed ends
with the same weights as one never interrupted.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..files.checkpoint import CheckpointError, check_keys, load_checkpoint
from ..training.config import TrainConfig
from ..training.distill import soft_target_loss
from ..training.loop import fit
from ..training.memory_format import channels_last
from .pruningnet import PruningNet
from .sampling import LatencyWindow, step_encodings
from ..core.space import SearchSpace

__all__ = ["train_pruningnet", "load_pruningnet", "pruningnet_from_payload", "pnet_payload", "PNET_FORMAT",
           "sample_encoding", "sampled_step"]

PNET_FORMAT = "hwprune.pruningnet/1"


def sample_encoding(space: SearchSpace, seed: int, step: int) -> tuple[int, ...]:
    """The encoding ``sampling="single"`` trains at ``step``: the same on every rank and after a resume."""
    return step_encodings(space, seed, step, "single")[0]


def pnet_payload(pnet: PruningNet, meta: dict | None = None) -> dict:
    """What rebuilds a PruningNet: its space (JSON), options and weights; ``meta``: plain settings that travel
    with it (the data it was trained on), so later stages need nothing but the checkpoint."""
    return {"format": PNET_FORMAT, "fingerprint": pnet.space.fingerprint, "space": pnet.space.to_json(),
            "pnet": dict(pnet.config), "state_dict": pnet.state_dict(), "meta": dict(meta or {})}


def load_pruningnet(path: str | Path, model: nn.Module | None = None, map_location="cpu") -> PruningNet:
    """Rebuild a trained PruningNet. ``model`` is needed only for models outside the zoo."""
    return pruningnet_from_payload(load_checkpoint(path, PNET_FORMAT, map_location), model, path)


def pruningnet_from_payload(ck: dict, model: nn.Module | None = None, path: str | Path = "the checkpoint") \
        -> PruningNet:
    """The PruningNet a loaded checkpoint (:func:`pnet_payload`) describes."""
    check_keys(ck, {"space": str, "pnet": dict, "state_dict": dict}, path)
    space = SearchSpace.from_json(ck["space"], model)
    pnet = PruningNet(space, **{"anchored": False, "bn_affine": False, **ck["pnet"]})  # older files lack both
    try:
        pnet.load_state_dict(ck["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not match its own space: {str(e).splitlines()[0]}") from None
    return pnet


def sampled_step(model, x: torch.Tensor, y: torch.Tensor, encs: list, cfg: TrainConfig,
                 target: torch.Tensor | None = None,
                 autocast=contextlib.nullcontext) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward every encoding of one step, gradients averaged; returns (mean loss, first output).

    Without ``target`` (a teacher's logits) the first network learns the labels and, in a
    sandwich with ``cfg.distill > 0``, the others learn its outputs (in-place distillation:
    ``distill`` x KL + (1 - ``distill``) x cross-entropy).
    """
    total, first = 0.0, None
    for enc in encs:
        with autocast():
            out = model(x, enc).float()
        if target is None:  # the widest network (or the single sample) learns the labels
            loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
            if cfg.sampling == "sandwich" and cfg.distill > 0:
                target = out.detach()
        else:
            loss = soft_target_loss(out, target, y, alpha=cfg.distill, temperature=1.0,
                                    label_smoothing=cfg.label_smoothing)
        (loss / len(encs)).backward()  # averaged: the learning rate means what it means with one sample
        total += float(loss.detach()) / len(encs)
        first = out.detach() if first is None else first
    return torch.tensor(total), first


def train_pruningnet(pnet: PruningNet, train_loader, epochs: int | None = None, *, config: TrainConfig | None = None,
                     val_loader=None, calib_loader=None, run_dir: str | Path | None = None, resume: bool = False,
                     progress: bool | None = None, log: Callable[[str], None] | None = None,
                     meta: dict | None = None, window: LatencyWindow | None = None,
                     teacher: nn.Module | None = None) -> list[dict]:
    """Train ``pnet`` by sampling encodings every step (``config.sampling``); returns one history row per epoch.

    ``window``: draw the random encodings from this latency range (the one the search
    will explore) instead of uniformly per group. ``teacher``: distil every sampled
    network from this model's outputs (with weight ``config.distill``) instead of the
    widest network's. With ``run_dir``, writes ``pruningnet.pt`` (atomically, every
    epoch and every ``checkpoint_every`` steps) and ``history.csv``; ``resume=True``
    continues from it. Under ``torch.distributed`` the model is wrapped in
    DistributedDataParallel and rank 0 writes the files. With ``val_loader`` and
    ``calib_loader``, each epoch reports validation top-1 at the uniform widths
    ``config.eval_ratios``.
    """
    cfg = config or TrainConfig()
    if epochs is not None:
        cfg.epochs = epochs
    space = pnet.space
    if teacher is not None:
        teacher.eval()

    def evaluate() -> dict:
        from .evaluate import evaluate_candidate

        return {f"val_acc@{r:g}": evaluate_candidate(pnet, space.uniform(r), val_loader, calib_loader,
                                                     cfg.calib_batches) for r in cfg.eval_ratios}

    def train_step(model, x, y, step, autocast):
        target = None
        if teacher is not None and cfg.distill > 0:
            with torch.no_grad():
                target = teacher(x).float()
        encs = step_encodings(space, cfg.seed, step, cfg.sampling, cfg.random_samples, window)
        return sampled_step(model, x, y, encs, cfg, target, autocast)

    with channels_last(teacher, enabled=cfg.channels_last):
        return fit(pnet, train_loader, cfg, train_step=train_step,
                   payload=lambda: pnet_payload(pnet, meta), fmt=PNET_FORMAT, fingerprint=space.fingerprint,
                   checkpoint=Path(run_dir) / "pruningnet.pt" if run_dir else None,
                   evaluate=evaluate if val_loader is not None and calib_loader is not None else None,
                   resume=resume, progress=progress, log=log)
