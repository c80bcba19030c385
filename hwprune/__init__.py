"""hwprune: hardware-aware channel pruning for PyTorch CNNs.

MetaPruning (Liu et al., ICCV 2019) with candidates constrained by latency measured
on the target device. The public API is what this module exports; everything else
may change.
"""
from .errors import EncodingError, HwpruneError, SpaceMismatchError, UnsupportedModelError
from .latency import (FidelityReport, LatencyTable, MissingEntryError, TableMismatchError, profile,
                      validate_table)
from .models import create_model, list_models
from .profilers import ProfilerUnavailableError, list_profilers
from .space import ChannelGroup, SearchSpace, default_ratios

__version__ = "0.1.0"

__all__ = [
    "SearchSpace", "ChannelGroup", "default_ratios",
    "create_model", "list_models",
    "HwpruneError", "UnsupportedModelError", "EncodingError", "SpaceMismatchError",
    "profile", "LatencyTable", "validate_table", "FidelityReport", "TableMismatchError", "MissingEntryError",
    "ProfilerUnavailableError", "list_profilers",
]
