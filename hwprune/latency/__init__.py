"""Latency lookup tables: what the search trusts instead of FLOPs.

:func:`profile` measures a space's kernels on a backend into a :class:`LatencyTable`;
:func:`validate_table` measures random networks end to end and reports how well the
table predicts them, beside a FLOPs predictor and the machine's own test-retest noise.
"""
from .fidelity import FidelityReport, validate_table
from .profiling import profile
from .table import LatencyTable, MissingEntryError, TableMismatchError

__all__ = ["profile", "LatencyTable", "validate_table", "FidelityReport", "MissingEntryError",
           "TableMismatchError"]
