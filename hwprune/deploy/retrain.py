"""Retrain a chosen encoding as a plain pruned network, and its checkpoint format.

The pruned network is :meth:`SearchSpace.materialize` of the encoding, trained from
scratch (MetaPruning's way: fresh CNN initialisation), from the PruningNet's
generated weights (``init="pruningnet"``) or from the importance-ordered dense
model's weights, sliced (``init="inherit"``: fine-tuning), optionally distilled from a
teacher (the dense model). The checkpoint stores the space (JSON), the encoding and
the state dict, never a pickled module; :func:`load_pruned` rebuilds it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn

from ..files.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..errors import HwpruneError
from ..training.config import TrainConfig
from ..training.distill import distillation_loss
from ..training.loop import fit
from ..training.memory_format import channels_last
from ..models._layers import init_weights
from ..core.space import SearchSpace
from ..training.metrics import accuracy

__all__ = ["MODEL_FORMAT", "retrain", "load_pruned", "model_payload"]

MODEL_FORMAT = "hwprune.model/1"
MODEL_KEYS = {"space": str, "encoding": list, "state_dict": dict}  # what load_pruned needs of a model.pt
INITS = ("scratch", "pruningnet", "inherit")


def model_payload(space: SearchSpace, enc: Sequence[int], model: nn.Module, **extra) -> dict:
    return {"format": MODEL_FORMAT, "space": space.to_json(), "encoding": [int(v) for v in enc],
            "channels": space.channels(enc), "state_dict": model.state_dict(), **extra}


def load_pruned(path: str | Path, model: nn.Module | None = None, map_location="cpu") -> tuple[nn.Module, dict]:
    """Rebuild a pruned network from its checkpoint; returns (module in eval mode, checkpoint info)."""
    ck = load_checkpoint(path, MODEL_FORMAT, map_location, required=MODEL_KEYS)
    space = SearchSpace.from_json(ck["space"], model)
    pruned = space.materialize(ck["encoding"])
    try:
        pruned.load_state_dict(ck["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not match its own encoding: {str(e).splitlines()[0]}") from None
    info = {k: v for k, v in ck.items() if k not in ("state_dict", "optimizer", "torch_rng")}
    info["space_obj"] = space
    return pruned.eval(), info


def retrain(space: SearchSpace, enc: Sequence[int], train_loader, *, config: TrainConfig | None = None,
            init: str = "scratch", pnet=None, source: nn.Module | None = None, teacher: nn.Module | None = None,
            val_loader=None, test_loader=None, device=None,
            run_dir: str | Path | None = None, resume: bool = False, progress: bool | None = None,
            log: Callable[[str], None] | None = None, meta: dict | None = None) -> tuple[nn.Module, list[dict]]:
    """Train the pruned network of ``enc``; with ``run_dir`` writes ``model.pt`` (+ accuracy) and ``history.csv``.

    ``meta``: plain settings stored in the checkpoint (the data it was trained on), for export and verify.
    """
    cfg = config or TrainConfig()
    enc = space.check(enc)
    if init not in INITS:
        raise HwpruneError(f"init must be one of {INITS}, got {init!r}")
    if init == "pruningnet":
        if pnet is None:
            raise HwpruneError("init='pruningnet' needs the trained PruningNet (pnet=...)")
        model = pnet.materialize(enc)
    elif init == "inherit":
        if source is None:
            raise HwpruneError("init='inherit' needs the (importance-ordered) dense model (source=...)")
        model = space.materialize(enc, source=source)
    else:
        torch.manual_seed(cfg.seed)
        model = space.materialize(enc)
        init_weights(model)
    if device is None:
        device = next(pnet.parameters()).device if pnet is not None else torch.device("cpu")
    model = model.to(device)
    if teacher is not None:
        teacher = teacher.to(device)
    ckpt = Path(run_dir) / "model.pt" if run_dir else None
    fingerprint = f"{space.fingerprint}:{','.join(map(str, enc))}"
    evaluate = (lambda: {"val_acc": accuracy(model, val_loader)}) if val_loader is not None else None
    with channels_last(teacher, enabled=cfg.channels_last):  # (the teacher runs a forward pass every step)
        history = fit(model, train_loader, cfg, forward=lambda m, x, step: m(x),
                      payload=lambda: model_payload(space, enc, model, init=init, meta=dict(meta or {})),
                      fmt=MODEL_FORMAT, fingerprint=fingerprint, checkpoint=ckpt,
                      loss_fn=distillation_loss(teacher, label_smoothing=cfg.label_smoothing) if teacher else None,
                      evaluate=evaluate, resume=resume, progress=progress, log=log)
    if ckpt is not None:  # final accuracies beside the weights
        ck = load_checkpoint(ckpt, MODEL_FORMAT) if ckpt.exists() else {}
        if ck.get("fingerprint") != fingerprint:  # training saved nothing (0 epochs): never keep another run's file
            ck = model_payload(space, enc, model, init=init, meta=dict(meta or {}), fingerprint=fingerprint)
        ck["val_acc"] = accuracy(model, val_loader) if val_loader is not None else None
        ck["test_acc"] = accuracy(model, test_loader) if test_loader is not None else None
        save_checkpoint(ckpt, ck)
    return model.eval(), history
