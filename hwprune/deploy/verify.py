"""Verify a deployable model against its budget: measured vs predicted latency, and the real speed-up.

The exported file is measured on the backend its latency table was profiled with,
using the profiler's own protocol (warm-up, interleaved passes, quiet-run
selection, the table's statistic), interleaved with the dense network (rebuilt
from the space stored in the file's metadata), so the speed-up is a ratio measured
side by side. The verdict: the measured latency may exceed the budget by at most
``tolerance`` (relative).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from typing import TYPE_CHECKING

from ..errors import HwpruneError

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["VerifyReport", "verify"]

DEFAULT_TOLERANCE = 0.05  # measured latency may exceed the budget by 5% (noise on a shared machine)


@dataclass
class VerifyReport:
    model: str
    backend: dict
    statistic: str
    measured_ms: float
    measured_p10_ms: float
    measured_median_ms: float
    measured_p90_ms: float
    predicted_ms: float | None
    dense_measured_ms: float | None
    dense_predicted_ms: float | None
    speedup: float | None  # dense / pruned, measured
    budget_ms: float | None
    tolerance: float
    within_budget: bool | None

    @property
    def prediction_error(self) -> float | None:
        return None if self.predicted_ms is None else self.predicted_ms / self.measured_ms - 1

    def to_dict(self) -> dict:
        return {**asdict(self), "prediction_error": self.prediction_error}

    @classmethod
    def from_dict(cls, d: dict) -> "VerifyReport":
        """A report read back from :meth:`to_dict`'s JSON."""
        return cls(**{f.name: d[f.name] for f in fields(cls)})

    def summary(self) -> str:
        lines = [f"{self.model} on {self.backend['backend']} {self.backend['device_name']} "
                 f"({self.backend['threads']} threads, batch {self.backend['batch']}, {self.statistic}):",
                 f"  measured  {self.measured_ms:.4f} ms (p10 {self.measured_p10_ms:.4f}, median "
                 f"{self.measured_median_ms:.4f}, p90 {self.measured_p90_ms:.4f})"]
        if self.predicted_ms is not None:
            lines.append(f"  predicted {self.predicted_ms:.4f} ms ({self.prediction_error:+.1%} vs measured)")
        if self.dense_measured_ms is not None:
            lines.append(f"  dense     {self.dense_measured_ms:.4f} ms measured -> speed-up {self.speedup:.2f}x")
        if self.budget_ms is not None:
            verdict = "within budget" if self.within_budget else "OVER BUDGET"
            lines.append(f"  budget    {self.budget_ms:.4f} ms (+{self.tolerance:.0%} tolerance): {verdict}")
        return "\n".join(lines)


def verify(model_path: str | Path, table, latency_ms: float | None = None, tolerance: float = DEFAULT_TOLERANCE,
           dense: bool = True, passes: int = 5, runs_per_pass: int = 10, profiler=None,
           model: "nn.Module | None" = None) -> VerifyReport:
    """Measure an exported ONNX file (written by hwprune) on ``table``'s backend; see the module docstring.

    ``model``: the unpruned model, needed only for a model outside the zoo, to rebuild the
    pruned and dense networks from the space stored in the file (torch backends run
    modules, not the file; onnxruntime measures the file itself).
    """
    from ..core.space import SearchSpace
    from ..latency.fidelity import profiler_for_table
    from .export import read_metadata

    path = Path(model_path)
    if not path.is_file():
        raise HwpruneError(f"model file {path} does not exist")
    if tolerance < 0:
        raise HwpruneError(f"tolerance must be >= 0, got {tolerance}")
    meta = read_metadata(path)
    space = enc = None
    if "space" in meta and "encoding" in meta and (meta["space"].get("model_spec") or model is not None):
        space = SearchSpace.from_json(meta["space"], model)
        enc = tuple(meta["encoding"])
    if space is not None:
        table.check(space, check_device=False)  # a table of another space would predict nonsense
    profiler = profiler or profiler_for_table(table)
    shape = tuple(space.input_shapes[0]) if space is not None else tuple(meta.get("input_shape") or ())
    if not shape:
        profiler.close()
        raise HwpruneError(f"{path} has no hwprune metadata; export it with hwprune export")
    if not getattr(profiler, "consumes_onnx", False) and space is None:
        profiler.close()
        raise HwpruneError(f"the {table.backend['backend']} backend measures torch modules, and {path} holds a model "
                           f"outside the zoo: pass the unpruned model (verify(..., model=...)) to rebuild it, or "
                           f"verify with an onnxruntime table")
    items: list = [path.read_bytes() if getattr(profiler, "consumes_onnx", False) else space.materialize(enc)]
    if dense and space is not None:
        items.append(space.materialize(space.full()))
    try:
        ms = profiler.measure_networks(items, (table.backend["batch"], *shape[1:]), passes=passes,
                                       runs_per_pass=runs_per_pass)
    finally:
        profiler.close()
    stat = table.statistic
    measured = ms[0].value(stat)
    predicted = table.predict(enc) if enc is not None else None
    dense_ms = ms[1].value(stat) if len(ms) > 1 else None
    return VerifyReport(
        model=str(path), backend=table.backend, statistic=stat, measured_ms=measured,
        measured_p10_ms=ms[0].value("p10"), measured_median_ms=ms[0].value("median"),
        measured_p90_ms=ms[0].value("p90"), predicted_ms=predicted, dense_measured_ms=dense_ms,
        dense_predicted_ms=table.predict(space.full()) if space is not None else None,
        speedup=dense_ms / measured if dense_ms else None, budget_ms=latency_ms, tolerance=tolerance,
        within_budget=None if latency_ms is None else measured <= latency_ms * (1 + tolerance))
