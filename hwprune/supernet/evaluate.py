"""Candidate evaluation: BN recalibration and top-1 accuracy, with PruningNet weights or inherited ones.

An *evaluator* has the candidate's ``space`` and ``score(enc, val, calib, calib_batches)``:
:class:`PruningNetEvaluator` (MetaPruning: generated weights) and :class:`InheritEvaluator`
(EagleEye: the importance-ordered dense weights, sliced, then a few steps of distillation from
the dense model). The search takes either.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn as nn

from ..errors import HwpruneError, check_number
from ..training.config import TUNE_STEPS
from ..training.distill import soft_target_loss
from ..training.memory_format import channels_last
from ..training.metrics import accuracy
from .pruningnet import PruningNet

__all__ = ["recalibrate_bn", "recalibrate_model_bn", "short_tune", "accuracy", "evaluate_candidate",
           "PruningNetEvaluator", "InheritEvaluator", "as_evaluator", "TUNE_STEPS"]


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
        with channels_last(model):
            for k, (x, _) in enumerate(batches):
                if k >= num_batches:
                    break
                model(x.to(dev, non_blocking=True))
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.train(was_training)  # every module's mode, BN's included


def short_tune(model: nn.Module, teacher_logits: Sequence[torch.Tensor], batches: Iterable, lr: float = 0.01) -> None:
    """A few SGD steps (momentum 0.9) that pull ``model``'s outputs toward the teacher's (KL at temperature 1):
    one step per batch of ``batches`` (inputs and labels), whose teacher outputs are ``teacher_logits``.

    Dropout stays off: with it, a candidate's score followed the global random state (mobilenet_v2_cifar's
    classifier dropout moved one network's 20-step score over 0.826-0.830 across six seeds), so a search scored
    each candidate with other masks and a rerun scored it otherwise."""
    was_training = model.training
    dev = next(model.parameters()).device
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    try:
        for (x, y), t in zip(batches, teacher_logits):
            loss = soft_target_loss(model(x.to(dev, non_blocking=True)), t, y, alpha=1.0, temperature=1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        model.train(was_training)


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
    recalibrated on training batches, then the candidate takes ``tune_steps`` steps of
    distillation from ``model`` itself (the dense network's function) on the next training
    batches, the same ones for every candidate, and its statistics are recalibrated again
    before the validation score. 0 steps is
    EagleEye's adaptive BN alone: cheaper, but far from the budget of the dense network the
    inherited networks score near chance and their order says little (see
    :data:`TUNE_STEPS`). ``importance`` holds each group's L1 channel scores, which the
    search's magnitude baseline ranks globally; ``saliency`` the Taylor estimates a Taylor
    order kept (None for another order), which its saliency baseline weighs against cost.
    """

    name = "inherit"

    def __init__(self, space, model: nn.Module, tune_steps: int = TUNE_STEPS, tune_lr: float = 0.01):
        from ..core.importance import channel_importance

        check_number("tune_steps", tune_steps, integer=True, inclusive=True)
        check_number("tune_lr", tune_lr)
        self.space, self.model, self.tune_steps, self.tune_lr = space, model, tune_steps, tune_lr
        self._teacher: tuple[object, int, list[torch.Tensor]] | None = None  # (loader, offset, teacher outputs)
        known = getattr(model, "hwprune_importance", None) or {}  # what order_channels ranked it by
        # L1, the magnitude baseline's criterion (Torch-Pruning's), whatever the order: reused when it is the order
        self.importance = known["scores"] if known.get("metric") == "l1" else channel_importance(space, model, "l1")
        self.saliency = known.get("saliency")  # (order_channels' with metric "taylor")

    def score(self, enc: Sequence[int], val_loader, calib_loader, calib_batches: int = 10) -> float:
        dev = next(self.model.parameters()).device
        pruned = self.space.materialize(enc, source=self.model).to(dev)
        with channels_last(pruned):  # (on the CPU: mobilenet_v2_cifar's candidates score ~1.6x faster)
            recalibrate_model_bn(pruned, calib_loader, calib_batches)
            if self.tune_steps:
                teacher = self._teacher_logits(calib_loader, calib_batches)
                short_tune(pruned, teacher, self._tune_batches(calib_loader, calib_batches), self.tune_lr)
                recalibrate_model_bn(pruned, calib_loader, calib_batches)  # the statistics of the tuned weights
            return accuracy(pruned, val_loader)

    def _tune_batches(self, loader, skip: int):
        """The ``tune_steps`` batches after the recalibration's ``skip`` (from the start again where the loader is
        short)."""
        k, first = 0, True
        while k < self.tune_steps:
            got = 0
            for i, batch in enumerate(loader):
                if first and i < skip:
                    continue
                yield batch
                k, got = k + 1, got + 1
                if k == self.tune_steps:
                    return
            if not got and not first:  # an empty loader
                return
            first = False

    @torch.no_grad()
    def _teacher_logits(self, loader, skip: int) -> list[torch.Tensor]:
        """The dense model's outputs on the tuning batches, computed once per loader (they are the same for every
        candidate: the training loaders' order is fixed). The loader itself is kept with them and compared by
        identity: by ``id`` alone, a loader made for one call and freed could be followed by another at the same
        address, which would then be tuned toward the first one's outputs."""
        if self._teacher is None or self._teacher[0] is not loader or self._teacher[1] != skip:
            dev = next(self.model.parameters()).device
            was_training = self.model.training
            self.model.eval()
            try:
                with channels_last(self.model):
                    logits = [self.model(x.to(dev, non_blocking=True)).float()
                              for x, _ in self._tune_batches(loader, skip)]
            finally:
                self.model.train(was_training)
            self._teacher = (loader, skip, logits)
        return self._teacher[2]


def as_evaluator(obj):
    """A PruningNet becomes a :class:`PruningNetEvaluator`; an evaluator (``space`` and ``score``) stays."""
    if isinstance(obj, PruningNet):
        return PruningNetEvaluator(obj)
    if hasattr(obj, "score") and hasattr(obj, "space"):
        return obj
    raise HwpruneError(f"cannot score candidates with a {type(obj).__name__}: pass a PruningNet or an evaluator "
                       f"(InheritEvaluator(space, ordered_model))")
