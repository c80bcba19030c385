"""Candidate evaluation: BN recalibration and top-1 accuracy, with PruningNet weights or inherited ones.

An *evaluator* has the candidate's ``space`` and ``score(enc, val, calib, calib_batches)``:
:class:`PruningNetEvaluator` (MetaPruning: generated weights) and :class:`InheritEvaluator`
(EagleEye: the importance-ordered dense weights, sliced). The search takes either.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn as nn

from ..errors import HwpruneError
from ..training.metrics import accuracy
from .pruningnet import PruningNet

__all__ = ["recalibrate_bn", "recalibrate_model_bn", "accuracy", "evaluate_candidate", "PruningNetEvaluator",
           "InheritEvaluator", "as_evaluator"]


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


@torch.no_grad()
def recalibrate_model_bn(model: nn.Module, batches: Iterable, num_batches: int = 10) -> None:
    """Re-estimate a plain model's BatchNorm statistics as the exact mean over ``num_batches`` batches
    (EagleEye's adaptive BN: inherited weights, statistics of the pruned network's own activations)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    was_training = model.training
    dev = next(model.parameters()).device
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.eval()
    for m in bns:
        m.train()  # only BN updates its statistics; dropout and the rest stay in eval mode
    try:
        for k, (x, _) in enumerate(batches):
            if k >= num_batches:
                break
            model(x.to(dev, non_blocking=True))
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.train(was_training)  # every module's mode, BN's included


class PruningNetEvaluator:
    """Scores a candidate with PruningNet-generated weights (MetaPruning's fitness)."""

    name = "pruningnet"

    def __init__(self, pnet: PruningNet):
        self.pnet, self.space = pnet, pnet.space

    def score(self, enc: Sequence[int], val_loader, calib_loader, calib_batches: int = 10) -> float:
        return evaluate_candidate(self.pnet, enc, val_loader, calib_loader, calib_batches)


class InheritEvaluator:
    """Scores a candidate with the dense model's weights, sliced (EagleEye): no PruningNet to train.

    ``model`` should be importance-ordered (:func:`~hwprune.core.importance.order_channels`),
    so that the slice keeps each group's best channels; BatchNorm statistics are
    recalibrated on training batches before the validation score. ``importance`` holds
    each group's L1 channel scores, which the search's magnitude baseline ranks globally.
    """

    name = "inherit"

    def __init__(self, space, model: nn.Module):
        from ..core.importance import channel_importance

        self.space, self.model = space, model
        known = getattr(model, "hwprune_importance", None) or {}  # what order_channels ranked it by
        # L1, the magnitude baseline's criterion (Torch-Pruning's), whatever the order: reused when it is the order
        self.importance = known["scores"] if known.get("metric") == "l1" else channel_importance(space, model, "l1")

    def score(self, enc: Sequence[int], val_loader, calib_loader, calib_batches: int = 10) -> float:
        dev = next(self.model.parameters()).device
        pruned = self.space.materialize(enc, source=self.model).to(dev)
        recalibrate_model_bn(pruned, calib_loader, calib_batches)
        return accuracy(pruned, val_loader)


def as_evaluator(obj):
    """A PruningNet becomes a :class:`PruningNetEvaluator`; an evaluator (``space`` and ``score``) stays."""
    if isinstance(obj, PruningNet):
        return PruningNetEvaluator(obj)
    if hasattr(obj, "score") and hasattr(obj, "space"):
        return obj
    raise HwpruneError(f"cannot score candidates with a {type(obj).__name__}: pass a PruningNet or an evaluator "
                       f"(InheritEvaluator(space, ordered_model))")
