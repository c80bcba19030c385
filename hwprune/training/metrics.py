"""Top-1 accuracy of a plain model or of a PruningNet candidate."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from .memory_format import channels_last

__all__ = ["accuracy", "CPU_CHUNK"]

# images per forward pass on the CPU: a loader's batch of 256 runs in chunks of 64, which ran 1.1-2.0x faster per image
# on a 2-core EPYC (fwd64 against fwd256 in benchmarks/results/memory_format.csv: smaller activations, kept in cache)
CPU_CHUNK = 64


@torch.no_grad()
def accuracy(model, loader: Iterable, enc: Sequence[int] | None = None, max_batches: int | None = None) -> float:
    """Top-1 accuracy in eval mode of a PruningNet candidate (``enc``) or a plain model."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    correct = total = 0
    with channels_last(model):
        try:
            for k, (x, y) in enumerate(loader):
                if max_batches is not None and k >= max_batches:
                    break
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                chunks = x.split(CPU_CHUNK) if dev.type == "cpu" else (x,)
                out = torch.cat([model(c, enc) if enc is not None else model(c) for c in chunks])
                correct += int((out.argmax(1) == y).sum())
                total += len(y)
        finally:
            model.train(was_training)
    return correct / max(total, 1)
