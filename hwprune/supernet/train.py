"""PruningNet training by stochastic structure sampling (MetaPruning, section 3.2).

Every step draws one encoding, uniform per group, from a generator seeded by
``(seed, step)``: all data-parallel ranks run the same candidate, and a resumed run
draws exactly what the uninterrupted one would. Together with seeded data order and
augmentation, the saved optimizer and RNG states, a run interrupted at any
checkpoint and resumed ends with the same weights as one never interrupted.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch.nn as nn

from ..files.checkpoint import CheckpointError, check_keys, load_checkpoint
from ..training.config import TrainConfig
from ..training.loop import fit
from .pruningnet import PruningNet
from ..core.space import SearchSpace

__all__ = ["train_pruningnet", "load_pruningnet", "pruningnet_from_payload", "pnet_payload", "PNET_FORMAT",
           "sample_encoding"]

PNET_FORMAT = "hwprune.pruningnet/1"


def sample_encoding(space: SearchSpace, seed: int, step: int) -> tuple[int, ...]:
    """The encoding trained at ``step``: the same on every rank and after a resume."""
    return space.sample(np.random.default_rng((seed, step)))


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


def train_pruningnet(pnet: PruningNet, train_loader, epochs: int | None = None, *, config: TrainConfig | None = None,
                     val_loader=None, calib_loader=None, run_dir: str | Path | None = None, resume: bool = False,
                     progress: bool | None = None, log: Callable[[str], None] | None = None,
                     meta: dict | None = None) -> list[dict]:
    """Train ``pnet`` by sampling one encoding per step; returns one history row per epoch.

    With ``run_dir``, writes ``pruningnet.pt`` (atomically, every epoch and every
    ``checkpoint_every`` steps) and ``history.csv``; ``resume=True`` continues from it.
    Under ``torch.distributed`` the model is wrapped in DistributedDataParallel and
    rank 0 writes the files. With ``val_loader`` and ``calib_loader``, each epoch
    reports validation top-1 at the uniform widths ``config.eval_ratios``.
    """
    cfg = config or TrainConfig()
    if epochs is not None:
        cfg.epochs = epochs
    space = pnet.space

    def evaluate() -> dict:
        from .evaluate import evaluate_candidate

        return {f"val_acc@{r:g}": evaluate_candidate(pnet, space.uniform(r), val_loader, calib_loader,
                                                     cfg.calib_batches) for r in cfg.eval_ratios}

    return fit(pnet, train_loader, cfg, forward=lambda m, x, step: m(x, sample_encoding(space, cfg.seed, step)),
               payload=lambda: pnet_payload(pnet, meta), fmt=PNET_FORMAT, fingerprint=space.fingerprint,
               checkpoint=Path(run_dir) / "pruningnet.pt" if run_dir else None,
               evaluate=evaluate if val_loader is not None and calib_loader is not None else None,
               resume=resume, progress=progress, log=log)
