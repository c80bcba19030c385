"""How well a latency table predicts real networks, measured.

``validate_table`` samples N random encodings, builds their networks, measures each
end to end twice on the table's backend (two independent interleaved measurements,
one after the other) and compares:

- the table's prediction with the first measurement,
- a FLOPs-proportional prediction (ms per GFLOP fitted on the table's calibration
  networks, the same data the table's overhead was fitted on) with it,
- the second measurement with the first: test-retest, the floor for any
  predictor's error on this machine.

For each: the share within +-10%, the mean absolute percentage error, and Spearman's
rank correlation (what a search that ranks candidates cares about).

:meth:`FidelityReport.rescore` judges another calibration of the same table on a
report's stored measurements, without measuring again.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..profilers.registry import get_profiler
from ..files.atomic import write_atomic
from .profiling import progress_bar

if TYPE_CHECKING:
    from ..core.space import SearchSpace
    from .table import LatencyTable

__all__ = ["FidelityReport", "validate_table", "agreement"]


def agreement(predicted, measured) -> dict:
    """within_10pct (share), mape (share), spearman of ``predicted`` against ``measured``."""
    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    err = np.abs(p - m) / m
    rho = pd.Series(p).corr(pd.Series(m), method="spearman") if len(p) > 1 else float("nan")
    return {"within_10pct": float(np.mean(err <= 0.10)), "mape": float(np.mean(err)), "spearman": float(rho)}


@dataclass
class FidelityReport:
    model: str
    backend: dict
    statistic: str
    n: int
    lut: dict  # agreement of the table's prediction with the measurement
    flops: dict  # agreement of the FLOPs-proportional prediction
    retest: dict  # agreement of a second measurement with the first
    seconds: float
    drift: list = field(default_factory=list)  # per measurement: machine speed vs profile time (reference probe)
    load_average: list = field(default_factory=list)  # 1/5/15-minute load when it finished (other jobs)
    encodings: list = field(default_factory=list)
    measured_ms: list = field(default_factory=list)
    retest_ms: list = field(default_factory=list)
    lut_ms: list = field(default_factory=list)
    flops_ms: list = field(default_factory=list)
    calibration: dict = field(default_factory=dict)  # the table's model, overhead and scale behind lut_ms
    rescored: str = ""  # set when lut_ms was recomputed from these measurements for another calibration

    def summary(self) -> str:
        """A small text table: the three predictors side by side."""
        rows = [("LUT (this table)", self.lut), ("FLOPs-proportional", self.flops),
                ("test-retest", self.retest)]
        b = self.backend
        threads = f"{b['threads']} thread{'s' if b['threads'] != 1 else ''}"
        lines = [f"fidelity: {self.model} on {b['backend']} {b['device_name']} ({threads}, batch "
                 f"{b['batch']}), {self.n} random networks, {self.statistic} latency",
                 f"{'predictor':<22}{'within +-10%':>14}{'MAPE':>9}{'Spearman':>10}"]
        for name, r in rows:
            lines.append(f"{name:<22}{r['within_10pct']:>13.1%}{r['mape']:>9.1%}{r['spearman']:>10.3f}")
        if self.calibration:
            c = self.calibration
            lines.append(f"table calibration: {c.get('model', 'constant')}, {c['overhead_ms']:+.3f} ms + "
                         f"{c.get('scale', 1.0):.3f} x kernel sum" + (f" ({self.rescored})" if self.rescored else ""))
        if self.drift:
            lines.append("machine speed vs profiling (reference probe, >1 = slower): " + ", ".join(
                f"{d['probe_vs_profile']:.2f}" for d in self.drift) + f"; load average {self.load_average}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        write_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FidelityReport":
        """Read a report written by :meth:`save` (plain JSON)."""
        from ..errors import HwpruneError

        try:
            data = json.loads(Path(path).read_text())
            names = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in names})
        except (OSError, ValueError, TypeError) as e:
            raise HwpruneError(f"cannot read fidelity report {str(path)!r} ({e}); validate the table again") from e

    def rescore(self, table: "LatencyTable") -> "FidelityReport":
        """This report with the LUT column predicted by ``table`` (the same space, e.g. recalibrated)
        against the same measurements; the FLOPs and test-retest columns are unchanged."""
        import time

        from ..errors import HwpruneError

        if table.meta["space"]["model"] != self.model:
            raise HwpruneError(f"this report is for {self.model}, not the table's {table.meta['space']['model']}")
        lut = table.predict_batch(np.array(self.encodings))
        return replace(self, lut=agreement(lut, self.measured_ms), lut_ms=_r(lut), calibration=_calibration(table),
                       rescored=f"LUT column rescored {time.strftime('%Y-%m-%d')} on the stored measurements")

    def plot(self, path: str | os.PathLike) -> None:
        """Scatter PNG: predicted vs measured for the table and for FLOPs, with the +-10% band."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        m = np.asarray(self.measured_ms)
        fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
        lo, hi = 0.9 * min(m.min(), min(self.lut_ms), min(self.flops_ms)), \
            1.1 * max(m.max(), max(self.lut_ms), max(self.flops_ms))
        xs = np.linspace(lo, hi, 10)
        ax.plot(xs, xs, color="black", lw=1)
        ax.fill_between(xs, 0.9 * xs, 1.1 * xs, color="grey", alpha=0.2, label="+-10%")
        ax.scatter(m, self.flops_ms, s=12, color="tab:orange", alpha=0.7,
                   label=f"FLOPs: {self.flops['within_10pct']:.0%} in 10%, rho {self.flops['spearman']:.3f}")
        ax.scatter(m, self.lut_ms, s=12, color="tab:blue",
                   label=f"LUT: {self.lut['within_10pct']:.0%} in 10%, rho {self.lut['spearman']:.3f}")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"measured latency, ms ({self.statistic})")
        ax.set_ylabel("predicted latency, ms")
        b = self.backend
        ax.set_title(f"{self.model}: {b['backend']} {b['device']}, {b['threads']} thr, n={self.n}\n"
                     f"test-retest {self.retest['within_10pct']:.0%} in 10%, rho {self.retest['spearman']:.3f}",
                     fontsize=9)
        ax.legend(fontsize=8, loc="upper left")
        fig.tight_layout()
        write_atomic(path, lambda f: fig.savefig(f, format="png"))
        plt.close(fig)


def profiler_for_table(table):
    """A profiler with the settings a table was measured with (backend, device, threads, batch, dtype, options),
    anchored to the reference speeds seen when it was profiled."""
    b = table.backend
    options = {k: b[k] for k in ("opt_level", "chunk_kb", "cudnn_benchmark", "workspace_mb") if k in b}
    profiler = get_profiler(b["backend"], b["device"], threads=b["threads"], batch_size=b["batch"], dtype=b["dtype"],
                            options=options)
    profiler.anchors = dict(table.meta.get("anchors", {}))
    return profiler


def validate_table(table: "LatencyTable", space: "SearchSpace", n: int = 100, seed: int = 1, passes: int = 5,
                   runs_per_pass: int = 10, profiler=None, report: str | os.PathLike | None = None,
                   plot: str | os.PathLike | None = None, quiet: bool = False) -> FidelityReport:
    """Measure ``n`` random networks of ``space`` and compare them with ``table`` (module docstring).

    The networks are measured on a backend built from the table's own fingerprint
    (backend, device, threads, batch, dtype, options). ``report``/``plot``: write the
    JSON report and the scatter PNG there.
    """
    import time

    from ..errors import HwpruneError

    table.check(space, check_device=False)
    table = table.for_space(space)
    b = table.backend
    profiler = profiler or profiler_for_table(table)
    # judge quiet visits against the reference speed seen at profile time, so both measure the same machine state
    profiler.anchors = dict(table.meta.get("anchors", {}))
    if n < 2:
        raise HwpruneError("validate at least 2 networks (rank correlation needs two)")
    started = time.time()
    rng = np.random.default_rng(seed)
    encs = [space.sample(rng) for _ in range(n)]
    models = [space.materialize(e) for e in encs]
    measured, drift = [], []
    for rep in range(2):  # the second pass is the test-retest measurement
        bar = progress_bar(n, f"validate {rep + 1}/2", quiet, unit="net")
        try:
            ms = profiler.measure_networks(models, space.input_shapes[0], passes=passes,
                                           runs_per_pass=runs_per_pass, seed=seed + 1000 * rep, progress=bar.update)
        finally:
            bar.close()
        measured.append(np.array([m.value(table.statistic) for m in ms]))
        unverified = sum(m.note.startswith("unverified") for m in ms)
        if "session_probe_ms" in profiler.anchors and table.meta.get("anchors", {}).get("probe_ms"):
            drift.append({"probe_vs_profile": round(profiler.anchors["session_probe_ms"] /
                                                    table.meta["anchors"]["probe_ms"], 3),
                          "networks_unverified": unverified})
    lut = table.predict_batch(np.array(encs))
    rate = table.meta["calibration"]["flops_ms_per_gflop"]
    flops = space.flops_batch(np.array(encs)).astype(np.float64) * b["batch"] / 1e9 * rate
    result = FidelityReport(
        model=table.meta["space"]["model"], backend=b, statistic=table.statistic, n=n,
        lut=agreement(lut, measured[0]), flops=agreement(flops, measured[0]),
        retest=agreement(measured[1], measured[0]), seconds=round(time.time() - started, 1), drift=drift,
        load_average=_loadavg(),
        encodings=[list(map(int, e)) for e in encs], measured_ms=_r(measured[0]), retest_ms=_r(measured[1]),
        lut_ms=_r(lut), flops_ms=_r(flops), calibration=_calibration(table))
    if report:
        result.save(report)
    if plot:
        result.plot(plot)
    return result


def _calibration(table: "LatencyTable") -> dict:
    c = table.meta.get("calibration", {})
    return {"model": c.get("model", "constant"), "overhead_ms": round(table.overhead_ms, 5),
            "scale": round(table.scale, 5)}


def _loadavg() -> list[float]:
    try:
        with open("/proc/loadavg") as f:
            return [float(v) for v in f.read().split()[:3]]
    except OSError:
        return []


def _r(a) -> list[float]:
    return [round(float(v), 5) for v in a]
