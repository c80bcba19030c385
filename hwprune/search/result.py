"""A search's result: the best encoding per budget with its costs, every evaluated candidate, the Pareto front."""
from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files.atomic import write_atomic, write_json
from .budgets import Budget
from .evaluator import CandidateEvaluator, Enc

__all__ = ["SearchResult", "RESULT_FORMAT", "pareto_front", "save_result", "describe", "read_result"]

RESULT_FORMAT = "hwprune.search-result/1"


@dataclass
class SearchResult:
    fingerprint: str
    budgets: list[Budget]
    best: list[dict]  # per budget: encoding, channels, costs, fitness, and the baselines (uniform, magnitude)
    history: list[dict]  # every evaluated candidate
    pareto: list[int] = field(default_factory=list)  # indices into history: accuracy vs latency (or FLOPs) front
    stats: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": RESULT_FORMAT, "fingerprint": self.fingerprint,
                "budgets": [asdict(b) for b in self.budgets], "best": self.best,
                "pareto": [self.history[i] for i in self.pareto], "stats": self.stats}


def read_result(path: str | Path) -> dict:
    """A search's ``result.json``, refused in one line when it is not one (a checkpoint, a table, damaged JSON)."""
    from ..errors import HwpruneError
    from ..files.jsonfile import read_json

    res = read_json(path, RESULT_FORMAT, "search result (result.json)", "pass the result.json that hwprune search "
                    "wrote")
    bests = res.get("best")
    if not isinstance(bests, list) or not all(isinstance(b, dict) and isinstance(b.get("encoding"), list)
                                              and isinstance(b.get("budget"), dict) for b in bests):
        raise HwpruneError(f"{path} is damaged: its 'best' entries lack an encoding or a budget; search again")
    return res


def describe(ev: CandidateEvaluator, enc: Enc, fitness: float) -> dict:
    lat, flops, params = ev.costs(np.asarray([enc]))[0]
    return {"encoding": list(enc), "channels": ev.space.channels(enc),
            "latency_ms": None if np.isnan(lat) else round(float(lat), 5),
            "flops": int(flops), "params": int(params), "fitness": round(float(fitness), 5)}


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of points not dominated by one with lower-or-equal x and higher-or-equal y."""
    order = sorted(range(len(xs)), key=lambda i: (xs[i], -ys[i]))
    front, best = [], -np.inf
    for i in order:
        if ys[i] > best:
            front.append(i)
            best = ys[i]
    return front


def save_result(result: SearchResult, run_dir: str | Path, plot: bool = True) -> dict[str, Path]:
    """Write ``result.json``, ``history.csv`` and (with matplotlib) ``pareto.png`` into ``run_dir``."""
    run_dir = Path(run_dir)
    paths = {"result": run_dir / "result.json", "history": run_dir / "history.csv"}
    write_json(paths["result"], result.to_json())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["budget", "generation", "encoding", "latency_ms", "flops", "params", "fitness", "filled"])
    for h in result.history:  # (filled: the step of the winner's fill ladder, empty for a searched candidate)
        w.writerow([h["budget"], h["generation"], " ".join(map(str, h["encoding"])), h["latency_ms"], h["flops"],
                    h["params"], h["fitness"], h.get("filled", "")])
    write_atomic(paths["history"], lambda f: f.write(buf.getvalue().encode()))
    if plot:
        from .plots import plot_pareto

        paths["pareto"] = plot_pareto(result, run_dir / "pareto.png")
    return paths
