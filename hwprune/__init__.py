"""hwprune: hardware-aware channel pruning for PyTorch CNNs.

MetaPruning (Liu et al., ICCV 2019) with candidates constrained by latency measured
on the target device. The public API is what this module exports; everything else
may change. Names load on first use, so ``import hwprune`` (and ``hwprune --help``)
does not pay for torch, onnxruntime or pandas until something needs them.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

from .errors import EncodingError, HwpruneError, SpaceMismatchError, UnsupportedModelError

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "SearchSpace": ".space", "ChannelGroup": ".space", "default_ratios": ".space",
    "create_model": ".models", "list_models": ".models",
    "profile": ".latency", "LatencyTable": ".latency", "validate_table": ".latency",
    "FidelityReport": ".latency", "TableMismatchError": ".latency", "MissingEntryError": ".latency",
    "ProfilerUnavailableError": ".profilers", "list_profilers": ".profilers",
    "PruningNet": ".meta",
    "TrainConfig": ".train", "train_pruningnet": ".train", "load_pruningnet": ".train",
    "SearchConfig": ".search", "SearchResult": ".search", "search": ".search",
    "retrain": ".retrain", "load_pruned": ".retrain",
    "export_onnx": ".export", "build_tensorrt_engine": ".export",
    "verify": ".verify", "VerifyReport": ".verify",
}

__all__ = ["HwpruneError", "UnsupportedModelError", "EncodingError", "SpaceMismatchError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'hwprune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """Keeps ``hwprune.search`` the function: importing the submodule ``hwprune.search``
    would otherwise bind the module object over it (``from hwprune.search import ...``
    still finds the module through ``sys.modules``)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .latency import (FidelityReport, LatencyTable, MissingEntryError, TableMismatchError, profile,
                          validate_table)
    from .meta import PruningNet
    from .models import create_model, list_models
    from .profilers import ProfilerUnavailableError, list_profilers
    from .search import SearchConfig, SearchResult, search
    from .space import ChannelGroup, SearchSpace, default_ratios
    from .train import TrainConfig, load_pruningnet, train_pruningnet
    from .retrain import load_pruned, retrain
    from .export import build_tensorrt_engine, export_onnx
    from .verify import VerifyReport, verify
