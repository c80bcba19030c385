"""hwprune: hardware-aware channel pruning for PyTorch CNNs.

MetaPruning (Liu et al., ICCV 2019) with candidates constrained by latency measured
on the target device. The public API is what this module exports; everything else
may change. Names load on first use, so ``import hwprune`` (and ``hwprune --help``)
does not pay for torch, onnxruntime or pandas until something needs them.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import EncodingError, HwpruneError, SpaceMismatchError, UnsupportedModelError
from .version import __version__


# public name -> module that defines it
_LAZY = {
    "SearchSpace": ".core.space", "ChannelGroup": ".core.space", "default_ratios": ".core.space",
    "create_model": ".models", "list_models": ".models", "load_model": ".models",
    "order_channels": ".core.importance", "InheritEvaluator": ".supernet.evaluate",
    "profile": ".latency", "LatencyTable": ".latency", "validate_table": ".latency",
    "FidelityReport": ".latency", "TableMismatchError": ".latency", "MissingEntryError": ".latency",
    "ProfilerUnavailableError": ".profilers", "list_profilers": ".profilers",
    "PruningNet": ".supernet.pruningnet",
    "TrainConfig": ".training.config", "train_pruningnet": ".supernet.train", "load_pruningnet": ".supernet.train",
    "SearchConfig": ".search", "SearchResult": ".search", "search": None,  # the package itself, callable
    "retrain": ".deploy.retrain", "load_pruned": ".deploy.retrain",
    "export_onnx": ".deploy.export", "build_tensorrt_engine": ".deploy.export",
    "verify": ".deploy.verify", "VerifyReport": ".deploy.verify",
}

__all__ = ["HwpruneError", "UnsupportedModelError", "EncodingError", "SpaceMismatchError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        module = _LAZY[name]
        value = importlib.import_module(f".{name}" if module is None else module, __name__)
        value = value if module is None else getattr(value, name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'hwprune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .latency import (FidelityReport, LatencyTable, MissingEntryError, TableMismatchError, profile,
                          validate_table)
    from .supernet.pruningnet import PruningNet
    from .core.importance import order_channels
    from .models import create_model, list_models, load_model
    from .supernet.evaluate import InheritEvaluator
    from .profilers import ProfilerUnavailableError, list_profilers
    from . import search
    from .search import SearchConfig, SearchResult
    from .core.space import ChannelGroup, SearchSpace, default_ratios
    from .supernet.train import load_pruningnet, train_pruningnet
    from .training.config import TrainConfig
    from .deploy.retrain import load_pruned, retrain
    from .deploy.export import build_tensorrt_engine, export_onnx
    from .deploy.verify import VerifyReport, verify
