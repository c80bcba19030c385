"""The training loop shared by PruningNet training and pruned-network retraining.

One loop with atomic checkpoints (every epoch and every ``checkpoint_every``
steps), exact resume (optimizer, RNG and the epoch position are saved; data order
is seeded per epoch by :class:`~hwprune.data.loaders.SeededSampler`), data parallelism
under ``torch.distributed``, mixed precision on CUDA, and a progress bar on a
terminal or one log line per epoch otherwise. What differs between callers, the
forward pass of a step, the loss, the per-epoch evaluation and what the checkpoint
must hold to rebuild the module, comes in as functions.
"""
from __future__ import annotations

import csv
import io
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn as nn

from ..files.atomic import write_atomic
from ..files.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..data.loaders import SeededSampler
from ..errors import HwpruneError
from .config import TrainConfig, lr_at
from .distributed import world_info
from .memory_format import channels_last

__all__ = ["fit"]


def fit(module: nn.Module, train_loader, cfg: TrainConfig, *, payload: Callable[[], dict], fmt: str,
        fingerprint: str, forward: Callable | None = None, checkpoint: str | Path | None = None,
        loss_fn: Callable | None = None, evaluate: Callable[[], dict] | None = None, resume: bool = False,
        progress: bool | None = None, log: Callable[[str], None] | None = None,
        train_step: Callable | None = None) -> list[dict]:
    """Train ``module``; returns one history row per epoch (loss, train accuracy, lr, images/s, ``evaluate()``).

    ``forward(model, x, step)`` runs one step's batch (``model`` may be the DDP wrapper);
    ``loss_fn(out, y, x)`` defaults to label-smoothed cross-entropy; ``payload()`` is
    what the checkpoint holds besides the training state (format ``fmt``); a checkpoint
    whose ``fingerprint`` differs is refused on resume. ``train_step(model, x, y, step,
    autocast)``, where given, replaces ``forward`` and ``loss_fn``: it runs the step's
    forward and backward passes itself (several, accumulating gradients, for a sandwich
    step) and returns ``(loss, out)`` for the log.
    """
    rank, world = world_info()
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    say = log if rank == 0 else (lambda s: None)
    if progress is None:
        progress = sys.stderr.isatty()
    progress = progress and rank == 0
    device = next(module.parameters()).device
    amp = cfg.amp if cfg.amp is not None else device.type == "cuda"
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)  # noqa: E731
    sampler = train_loader.sampler
    seeded = isinstance(sampler, SeededSampler)  # can start mid-epoch; other samplers replay and skip
    steps_per_epoch = (sampler.n // sampler.world) // train_loader.batch_size if seeded else len(train_loader)
    if steps_per_epoch < 1:
        raise HwpruneError("the training loader yields no full batch; lower the batch size")
    total = cfg.epochs * steps_per_epoch
    base_lr = cfg.lr if cfg.lr is not None else 0.01 * train_loader.batch_size * world / 64
    opt = torch.optim.SGD(module.parameters(), lr=base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    crit = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    loss_fn = loss_fn or (lambda out, y, x: crit(out, y))

    def plain_step(model, x, y, step, autocast):  # one forward and its loss's backward
        with autocast():
            out = forward(model, x, step)
            loss = loss_fn(out.float(), y, x)
        loss.backward()
        return loss, out

    train_step = train_step or plain_step
    model = module
    if world > 1:
        model = nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    ckpt = Path(checkpoint) if checkpoint else None
    state = {"epoch": 0, "step_in_epoch": 0, "history": [], "sums": [0.0, 0, 0, 0.0]}
    if resume and ckpt is not None and ckpt.exists():
        ck = load_checkpoint(ckpt, fmt)
        if ck.get("fingerprint") != fingerprint:
            raise CheckpointError(f"{ckpt} was trained for another search space or encoding; use a new run folder")
        module.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["torch_rng"])
        state = {k: ck[k] for k in state}
        if state["epoch"] >= cfg.epochs:
            say(f"{ckpt} has finished its {state['epoch']} epoch{'s' if state['epoch'] != 1 else ''}; nothing to "
                f"train (pass a larger --epochs to extend it)")
        else:
            say(f"resuming {ckpt} at epoch {state['epoch'] + 1} of {cfg.epochs}, step {state['step_in_epoch']}")
    elif resume:
        say(f"nothing to resume at {ckpt}; starting a new run")

    def save():
        if ckpt is None or rank != 0:
            return
        save_checkpoint(ckpt, {**payload(), "format": fmt, "fingerprint": fingerprint, "optimizer": opt.state_dict(),
                               "torch_rng": torch.get_rng_state(), "config": asdict(cfg), **state})

    # channels last on the CPU (one process: DistributedDataParallel's gradient buckets keep the strides it wrapped)
    with channels_last(module, enabled=cfg.channels_last if world == 1 else False):
        try:
            while state["epoch"] < cfg.epochs:
                epoch = state["epoch"]
                skip = state["step_in_epoch"]
                if seeded:
                    sampler.set_epoch(epoch, start=skip * train_loader.batch_size)
                    skip = 0
                elif hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(epoch)
                if hasattr(train_loader.dataset, "set_epoch"):
                    train_loader.dataset.set_epoch(epoch)
                bar = _bar(progress, steps_per_epoch, state["step_in_epoch"], f"epoch {epoch + 1}/{cfg.epochs}")
                t0, seen = time.perf_counter(), 0
                module.train()
                for x, y in train_loader:
                    if skip:
                        skip -= 1
                        continue
                    step = epoch * steps_per_epoch + state["step_in_epoch"]
                    for g in opt.param_groups:
                        g["lr"] = lr_at(cfg, base_lr, step, total)
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    opt.zero_grad(set_to_none=True)
                    loss, out = train_step(model, x, y, step, autocast)
                    if not torch.isfinite(loss):  # before the step: the weights stay as they were
                        raise HwpruneError(f"loss became {loss.item()} at step {step}; lower the learning rate "
                                           f"(--lr) and resume")
                    if cfg.grad_clip:
                        nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
                    opt.step()
                    s = state["sums"]
                    s[0] += loss.item() * len(y)
                    s[1] += int((out.argmax(1) == y).sum())
                    s[2] += len(y)
                    state["step_in_epoch"] += 1
                    seen += len(y)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{s[0] / s[2]:.3f}", acc=f"{s[1] / s[2]:.3f}",
                                        img_s=f"{seen * world / (time.perf_counter() - t0):.0f}")
                    if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
                        save()
                if bar is not None:
                    bar.close()
                s = state["sums"]
                row = {"epoch": epoch + 1, "loss": s[0] / max(s[2], 1), "train_acc": s[1] / max(s[2], 1),
                       "lr": opt.param_groups[0]["lr"], "img_per_s": seen * world / max(time.perf_counter() - t0, 1e-9)}
                if evaluate is not None:
                    row.update(evaluate())
                    module.train()
                state["history"].append(row)
                state["epoch"], state["step_in_epoch"], state["sums"] = epoch + 1, 0, [0.0, 0, 0, 0.0]
                save()
                if rank == 0 and ckpt is not None:
                    _write_history(ckpt.parent / "history.csv", state["history"])
                say("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
            if world > 1:
                _check_ranks_agree(module, say)
        except KeyboardInterrupt:
            save()  # the state after the last finished step: --resume continues from here
            say(f"interrupted; saved {ckpt} at epoch {state['epoch'] + 1}, step {state['step_in_epoch']}"
                if ckpt else "interrupted")
            raise
    return state["history"]


def _check_ranks_agree(module: nn.Module, say) -> None:
    """All ranks must end with the same weights: they ran the same steps on averaged gradients."""
    sums = torch.stack([p.detach().double().sum() for p in module.parameters()]).cpu()  # (P,)
    world = world_info()[1]
    gathered = [torch.zeros_like(sums) for _ in range(world)]
    dist.all_gather(gathered, sums.to(next(module.parameters()).device) if dist.get_backend() == "nccl" else sums)
    spread = max(float((g.cpu() - sums).abs().max()) for g in gathered)
    if spread > 1e-6 * (1 + float(sums.abs().max())):
        raise HwpruneError(f"data-parallel ranks disagree after training (max parameter-sum difference {spread:.3g})")
    say(f"ranks agree: {world} processes hold identical weights")


def _bar(enabled: bool, total: int, initial: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)


def _write_history(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))

    def write(f):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
        f.write(buf.getvalue().encode())

    write_atomic(path, write)
