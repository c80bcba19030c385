"""Verify deployable models against their budget: measured vs predicted latency, and the real speed-up.

Exported files are measured on the backend their latency table was profiled with,
using the profiler's own protocol (warm-up, interleaved passes, quiet-run
selection, the table's statistic), interleaved with each other and with one dense
network (rebuilt from the space stored in the files' metadata). The whole measurement
is taken ``timings`` times (default 2) and each network, the dense one too, keeps its
faster timing, so a speed-up is a ratio of two networks' faster timings, each taken
side by side with the other: on an H200 one timing call in eight read every network
1.6x (``benchmarks/gpu_repeat.py``), and two verify calls read the dense network 1.39
and 1.72 ms. The verdict:
the measured latency may exceed the budget by at most ``tolerance`` (relative;
0 unless asked for), and the report always shows by how much it is over or under.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import HwpruneError, check_number

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["VerifyReport", "verify", "verify_many", "DEFAULT_TOLERANCE"]

DEFAULT_TOLERANCE = 0.0  # a measured latency over the budget is over budget, unless the user allows a margin


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
    speedup: float | None  # dense / pruned, each its faster timing of the same interleaved measurements
    budget_ms: float | None
    tolerance: float
    within_budget: bool | None

    @property
    def prediction_error(self) -> float | None:
        return None if self.predicted_ms is None else self.predicted_ms / self.measured_ms - 1

    @property
    def overshoot(self) -> float | None:
        """measured / budget - 1: positive when over the budget, negative when under."""
        return None if self.budget_ms is None else self.measured_ms / self.budget_ms - 1

    def to_dict(self) -> dict:
        return {**asdict(self), "prediction_error": self.prediction_error, "overshoot": self.overshoot}

    @classmethod
    def from_dict(cls, d: dict) -> "VerifyReport":
        """A report read back from :meth:`to_dict`'s JSON."""
        return cls(**{f.name: d[f.name] for f in fields(cls)})

    def verdict(self) -> str:
        """e.g. '0.3213 ms measured vs 0.3150 ms budget: 2.0% over (tolerance 0%): OVER BUDGET'."""
        side = "over" if self.overshoot > 0 else "under"
        word = "within budget" if self.within_budget else "OVER BUDGET"
        return (f"{self.measured_ms:.4f} ms measured vs {self.budget_ms:.4f} ms budget: {abs(self.overshoot):.1%} "
                f"{side} (tolerance {self.tolerance:.0%}): {word}")

    def summary(self) -> str:
        lines = [f"{self.model} on {self.backend['backend']} {self.backend['device_name']} "
                 f"({self.backend['threads']} thread{'s' if self.backend['threads'] != 1 else ''}, batch "
                 f"{self.backend['batch']}, {self.statistic}):",
                 f"  measured  {self.measured_ms:.4f} ms (p10 {self.measured_p10_ms:.4f}, median "
                 f"{self.measured_median_ms:.4f}, p90 {self.measured_p90_ms:.4f})"]
        if self.predicted_ms is not None:
            lines.append(f"  predicted {self.predicted_ms:.4f} ms ({self.prediction_error:+.1%} vs measured)")
        if self.dense_measured_ms is not None:
            lines.append(f"  dense     {self.dense_measured_ms:.4f} ms measured -> speed-up {self.speedup:.2f}x")
        if self.budget_ms is not None:
            lines.append(f"  budget    {self.verdict()}")
        return "\n".join(lines)


def verify(model_path: str | Path, table, latency_ms: float | None = None, tolerance: float = DEFAULT_TOLERANCE,
           dense: bool = True, passes: int = 5, runs_per_pass: int = 10, profiler=None,
           model: "nn.Module | None" = None, timings: int = 2) -> VerifyReport:
    """Measure one exported ONNX file (written by hwprune) on ``table``'s backend; see :func:`verify_many`."""
    return verify_many([model_path], table, latency_ms, tolerance, dense, passes, runs_per_pass, profiler, model,
                       timings)[0]


def verify_many(model_paths: Sequence[str | Path], table, latency_ms: float | None = None,
                tolerance: float = DEFAULT_TOLERANCE, dense: bool = True, passes: int = 5, runs_per_pass: int = 10,
                profiler=None, model: "nn.Module | None" = None, timings: int = 2) -> list[VerifyReport]:
    """Measure exported files of one space, interleaved with each other and one dense network (module docstring).

    ``latency_ms``: the budget; None takes each file's own, the budget it was searched for
    (``hwprune export`` stores it), and leaves the verdict out for a file without one.

    ``model``: the unpruned model, needed only for a model outside the zoo, to rebuild the
    pruned and dense networks from the space stored in the files (torch backends run
    modules, not files; onnxruntime measures the files themselves).

    ``timings``: how many times the whole interleaved measurement is taken; each network keeps
    its timing with the lowest value of the table's statistic (1: one timing, as before 2026-12-04).
    """
    from ..core.space import SearchSpace
    from ..latency.fidelity import profiler_for_table
    from .export import read_metadata

    check_number("tolerance", tolerance, inclusive=True)
    check_number("the latency budget (ms)", latency_ms, optional=True)
    check_number("passes", passes, integer=True, minimum=1, inclusive=True)
    check_number("runs_per_pass", runs_per_pass, integer=True, minimum=1, inclusive=True)
    check_number("timings", timings, integer=True, minimum=1, inclusive=True)
    paths = [Path(p) for p in model_paths]
    for path in paths:
        if not path.is_file():
            raise HwpruneError(f"model file {path} does not exist")
    metas = [read_metadata(p) for p in paths]
    spaces = {json.dumps(m["space"], sort_keys=True) for m in metas if "space" in m}
    if len(spaces) > 1:
        raise HwpruneError("these files are networks of different spaces; verify them one at a time")
    space, encs = None, [None] * len(paths)
    first = next((m for m in metas if "space" in m and "encoding" in m), None)
    if first is not None and (first["space"].get("model_spec") or model is not None):
        space = SearchSpace.from_json(first["space"], model)
        encs = [tuple(m["encoding"]) if "encoding" in m else None for m in metas]
    if space is not None:  # a table of another space would predict nonsense, whatever the user allows
        from ..latency.table_space import space_difference, space_key

        if space_key(space, table.backend["batch"]) != table.space_key:
            raise HwpruneError(f"{paths[0]} is a network of another space than the table "
                               f"({space_difference(table.meta['space'], space)}); --allow-mismatch reuses a table "
                               f"across machines and settings, not across spaces: verify with the table its search "
                               f"used")
        table = table.for_space(space)  # (a table of the space with or without dropped blocks: the same kernels)
    shape = tuple(space.input_shapes[0]) if space is not None else tuple(metas[0].get("input_shape") or ())
    if not shape:
        raise HwpruneError(f"{paths[0]} has no hwprune metadata; export it with hwprune export")
    profiler = profiler or profiler_for_table(table)
    try:
        onnx = getattr(profiler, "consumes_onnx", False)
        if not onnx and (space is None or None in encs):
            raise HwpruneError(f"the {table.backend['backend']} backend measures torch modules, and {paths[0]} holds "
                               f"a model outside the zoo: pass the unpruned model (verify(..., model=...)) to "
                               f"rebuild it, or verify with an onnxruntime table")
        items: list = [p.read_bytes() if onnx else space.materialize(e) for p, e in zip(paths, encs)]
        if dense and space is not None:
            items.append(space.materialize(space.full()))
        ms = profiler.measure_networks_fastest(items, (table.backend["batch"], *shape[1:]), table.statistic,
                                               timings=timings, passes=passes, runs_per_pass=runs_per_pass)
    finally:
        profiler.close()
    stat = table.statistic
    dense_ms = ms[len(paths)].value(stat) if len(ms) > len(paths) else None
    reports = []
    for path, enc, m, meta in zip(paths, encs, ms, metas):
        measured = m.value(stat)
        budget = latency_ms if latency_ms is not None else meta.get("budget_ms")
        reports.append(VerifyReport(
            model=str(path), backend=table.backend, statistic=stat, measured_ms=measured,
            measured_p10_ms=m.value("p10"), measured_median_ms=m.value("median"), measured_p90_ms=m.value("p90"),
            predicted_ms=table.predict(enc) if enc is not None else None, dense_measured_ms=dense_ms,
            dense_predicted_ms=table.predict(space.full()) if space is not None else None,
            speedup=dense_ms / measured if dense_ms else None, budget_ms=budget, tolerance=tolerance,
            within_budget=None if budget is None else measured <= budget * (1 + tolerance)))
    return reports

