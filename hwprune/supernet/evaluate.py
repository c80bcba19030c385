"""Candidate evaluation with PruningNet weights: BN recalibration and top-1 accuracy."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from ..training.metrics import accuracy
from .pruningnet import PruningNet

__all__ = ["recalibrate_bn", "accuracy", "evaluate_candidate"]


@torch.no_grad()
def recalibrate_bn(pnet: PruningNet, enc: Sequence[int], batches: Iterable, num_batches: int = 10) -> None:
    """Re-estimate the BatchNorm statistics ``enc`` uses, from ``num_batches`` training batches.

    Runs the candidate in train mode with a cumulative average (batch k weighs 1/(k+1)),
    so the statistics become the exact mean over the batches seen, as MetaPruning does
    before scoring a candidate.
    """
    was_training = pnet.training
    dev = next(pnet.parameters()).device
    pnet.train()
    try:
        for k, (x, _) in enumerate(batches):
            if k >= num_batches:
                break
            pnet._bn_momentum = 1.0 / (k + 1)
            pnet(x.to(dev, non_blocking=True), enc)
    finally:
        pnet._bn_momentum = None
        pnet.train(was_training)


def evaluate_candidate(pnet: PruningNet, enc: Sequence[int], val_loader, calib_loader,
                       calib_batches: int = 10) -> float:
    """MetaPruning's fitness: recalibrate BN on training batches, then top-1 on validation."""
    recalibrate_bn(pnet, enc, calib_loader, calib_batches)
    return accuracy(pnet, val_loader, enc)
