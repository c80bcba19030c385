"""Devices and data parallelism: which device to use, and this process's rank in the job.

Every caller asks :func:`world_info` (or :func:`is_main`) instead of querying
``torch.distributed`` itself, so a single process and a torchrun job take the same
code path.
"""
from __future__ import annotations

import atexit
import os
import re

import torch
import torch.distributed as dist

from ..errors import HwpruneError

__all__ = ["world_info", "is_main", "resolve_device", "init_distributed"]


def world_info() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside a distributed job."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True in the process that writes files (rank 0, or the only one)."""
    return world_info()[0] == 0


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when torch sees a GPU, else CPU; under torchrun, ``cuda`` -> this rank's GPU."""
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise HwpruneError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise HwpruneError("CUDA was asked for but torch sees no GPU; use --device cpu")
        if "LOCAL_RANK" in os.environ and device == "cuda":
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return torch.device(device)


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); returns (rank, world)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        # left to interpreter teardown, the process group's threads were destroyed while joinable and a rank aborted
        # after the job had finished ("terminate called without an active exception", SIGABRT, once in several
        # runs of the two-process test): leave the group first
        atexit.register(_leave)
    return world_info()


def _leave() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
