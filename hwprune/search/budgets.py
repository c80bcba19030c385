"""Budgets a searched network must meet (latency, FLOPs, params), and the check that one is reachable."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import HwpruneError, check_number

__all__ = ["Budget", "InfeasibleBudgetError", "check_feasible"]


class InfeasibleBudgetError(HwpruneError):
    """A budget no encoding of the space can meet."""


@dataclass(frozen=True)
class Budget:
    latency_ms: float | None = None
    flops: float | None = None
    params: float | None = None

    def __post_init__(self):
        check_number("latency budget (ms)", self.latency_ms, optional=True)
        check_number("FLOPs budget", self.flops, optional=True)
        check_number("params budget", self.params, optional=True)

    def limits(self) -> list[tuple[int, float]]:
        """(column of ``CandidateEvaluator.costs``, limit) of every limit set: latency 0, FLOPs 1, params 2."""
        return [(col, v) for col, v in enumerate((self.latency_ms, self.flops, self.params)) if v is not None]

    def label(self) -> str:
        parts = [f"{self.latency_ms:g}ms" if self.latency_ms is not None else "",
                 f"{self.flops / 1e6:g}MFLOPs" if self.flops is not None else "",
                 f"{self.params / 1e6:g}Mparams" if self.params is not None else ""]
        return " ".join(p for p in parts if p) or "unconstrained"


def check_feasible(ev, budget: Budget) -> None:
    """Refuse a budget below what the narrowest network of the space costs (``ev``: a CandidateEvaluator)."""
    narrowest = np.zeros((1, len(ev.space.groups)), dtype=np.int64)
    c = ev.costs(narrowest)[0]
    for name, col, limit, unit in (("latency", 0, budget.latency_ms, "ms"), ("FLOPs", 1, budget.flops, ""),
                                   ("params", 2, budget.params, "")):
        if limit is not None and c[col] > limit:
            value = f"{c[col]:.4g} ms" if unit else f"{c[col] / 1e6:.4g}M"
            raise InfeasibleBudgetError(f"{name} budget {limit:g}{unit if unit else ''} is below the smallest "
                                        f"{name} this space reaches ({value}, every group at its narrowest); "
                                        f"raise the budget or widen the search space")
