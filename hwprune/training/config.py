"""Training settings shared by the PruningNet and pruned networks, and the learning-rate schedule."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import HwpruneError, check_number

__all__ = ["TrainConfig", "lr_at", "SAMPLING", "TUNE_STEPS"]

SAMPLING = ("sandwich", "single")  # how a PruningNet step picks its networks (supernet/sampling.py)

# distillation steps a candidate with inherited weights gets before it is scored (supernet/evaluate.py's
# InheritEvaluator; here, torch-free, so that `hwprune search --help` shows it without loading torch). Measured on 11
# resnet20 networks of nearly equal predicted latency per budget (Fashion-MNIST, `python benchmarks/within_budget.py`),
# Kendall tau with the accuracy after the benchmark's 3-epoch fine-tune at 30% / 50% of the dense latency: adaptive BN
# alone 0.40 / 0.51 (at 30% every network scores 0.10-0.16, near chance), 20 steps 0.56 / 0.77, 40 steps 0.49 / 0.66;
# 20 steps cost ~2x a candidate of adaptive BN alone
TUNE_STEPS = 20


@dataclass
class TrainConfig:
    epochs: int = 10
    # None: 0.01 per 64 images, scaled linearly with the global batch. Lower than MetaPruning's
    # 0.5 per 1024 because a generator moves each weight by ~(1 + |h|^2) times the nominal step;
    # on the bundled data 0.05 at batch 64 diverged where 0.01 learned (see README).
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 4e-5  # MetaPruning's value for its PruningNets
    label_smoothing: float = 0.1
    schedule: str = "linear"  # linear decay to 0 over the run (the paper's); "cosine" or "constant"
    warmup_steps: int = 0
    seed: int = 0
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints; 0 = only at epoch ends
    amp: bool | None = None  # mixed precision (bfloat16 autocast); None = on for CUDA
    eval_ratios: tuple[float, ...] = (1.0, 0.5)  # PruningNet: uniform widths scored on validation each epoch
    calib_batches: int = 10  # PruningNet: BN recalibration batches before each validation score
    grad_clip: float | None = None
    # PruningNet: which encodings each step trains (supernet/sampling.py): "sandwich" (the widest, the narrowest and
    # random_samples others, gradients averaged) or "single" (MetaPruning's one random encoding)
    sampling: str = "sandwich"
    random_samples: int = 2
    distill: float = 0.9  # PruningNet: weight of the soft targets (the widest's or a teacher's outputs) in the loss
    # convolutions in channels-last memory while training (training/memory_format.py): None = on the CPU, where
    # mobilenet_v2_cifar trained 1.4-1.6x faster that way; False keeps the model's own format
    channels_last: bool | None = None

    def __post_init__(self):
        check_number("epochs", self.epochs, integer=True, inclusive=True)
        check_number("lr", self.lr, optional=True)
        check_number("momentum", self.momentum, inclusive=True, maximum=1)
        check_number("weight_decay", self.weight_decay, inclusive=True)
        check_number("label_smoothing", self.label_smoothing, inclusive=True, maximum=1)
        check_number("warmup_steps", self.warmup_steps, integer=True, inclusive=True)
        check_number("checkpoint_every", self.checkpoint_every, integer=True, inclusive=True)
        check_number("calib_batches", self.calib_batches, integer=True, inclusive=True)
        check_number("grad_clip", self.grad_clip, optional=True)
        check_number("random_samples", self.random_samples, integer=True, inclusive=True)
        check_number("distill", self.distill, inclusive=True, maximum=1)
        if self.sampling not in SAMPLING:
            raise HwpruneError(f"unknown sampling {self.sampling!r}; use {' or '.join(SAMPLING)}")
        if self.schedule not in ("linear", "cosine", "constant"):
            raise HwpruneError(f"unknown lr schedule {self.schedule!r}; use linear, cosine or constant")
        self.eval_ratios = tuple(check_number("eval_ratios entry", r) for r in self.eval_ratios)


def lr_at(cfg: TrainConfig, base_lr: float, step: int, total: int) -> float:
    if step < cfg.warmup_steps:
        return base_lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    if cfg.schedule == "linear":
        return base_lr * max(0.0, 1.0 - t)
    if cfg.schedule == "cosine":
        return base_lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    if cfg.schedule == "constant":
        return base_lr
    raise HwpruneError(f"unknown lr schedule {cfg.schedule!r}; use linear, cosine or constant")
