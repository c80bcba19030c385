"""Atomic checkpoint writes and safe loads (``weights_only=True``; nothing is unpickled).

A checkpoint is a dict of tensors and plain values with a ``format`` key naming
what it holds; configurations (space JSON, encodings, options) travel inside it
so that the module can be rebuilt without pickling code.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import HwpruneError
from .atomic import write_atomic

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "check_keys"]


class CheckpointError(HwpruneError):
    """A checkpoint that is missing, corrupt, truncated or of another kind."""


def save_checkpoint(path: str | Path, payload: dict) -> None:
    if "format" not in payload:
        raise ValueError("checkpoint payload needs a 'format' key")
    write_atomic(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | Path, expect_format: str | None = None, map_location="cpu",
                    required: dict[str, type | tuple] | None = None) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`; one-line errors for bad files, among them a
    ``required`` key (name -> type) that is missing or of another type."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({msg}); delete it and retrain, "
                              f"or restore it from a copy") from None
    if not isinstance(payload, dict) or "format" not in payload:
        raise CheckpointError(f"{path} is not a hwprune checkpoint")
    if expect_format and payload["format"] != expect_format:
        raise CheckpointError(f"{path} holds a {payload['format']!r}, not a {expect_format!r}")
    return check_keys(payload, required or {}, path)


def check_keys(payload: dict, required: dict[str, type | tuple], path) -> dict:
    """``payload`` if it has every ``required`` key (name -> type); else one line naming the first that is not."""
    for key, kind in required.items():
        if key not in payload:
            raise CheckpointError(f"{path} is a {payload.get('format')!r} without its {key!r}: the file is damaged "
                                  f"or was not written by hwprune; write it again")
        if not isinstance(payload[key], kind):
            raise CheckpointError(f"{path}: {key!r} is a {type(payload[key]).__name__}, not what a "
                                  f"{payload.get('format')!r} holds; the file is damaged: write it again")
    return payload
