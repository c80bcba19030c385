"""Plots written into run folders (matplotlib, non-interactive backend)."""
from __future__ import annotations

from pathlib import Path

from ..files.atomic import write_atomic

__all__ = ["plot_pareto"]


def plot_pareto(result, path: str | Path) -> Path:
    """Every evaluated candidate, the accuracy-latency front, the budgets and the uniform baselines.

    ``result`` is a :class:`~hwprune.search.result.SearchResult` (its ``history``, ``pareto`` and ``best``);
    this module does not import it, so that the result can write its own plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_latency = all(h["latency_ms"] is not None for h in result.history)
    x = lambda d: d["latency_ms"] if by_latency else d["flops"] / 1e6  # noqa: E731
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter([x(h) for h in result.history], [h["fitness"] for h in result.history], s=8, alpha=0.35,
               color="tab:gray", label="evaluated candidates")
    front = sorted((result.history[i] for i in result.pareto), key=x)
    ax.plot([x(h) for h in front], [h["fitness"] for h in front], "-o", ms=3, color="tab:blue", label="Pareto front")
    for k, best in enumerate(result.best):
        b = best["budget"]
        limit = b["latency_ms"] if by_latency else (b["flops"] / 1e6 if b["flops"] is not None else None)
        if limit is not None:
            ax.axvline(limit, color="tab:red", ls="--", lw=1, label="budget" if k == 0 else None)
        ax.scatter([x(best)], [best["fitness"]], marker="*", s=160, color="tab:orange", zorder=5,
                   label="best (searched)" if k == 0 else None)
        if best.get("uniform"):
            u = best["uniform"]
            ax.scatter([x(u)], [u["fitness"]], marker="s", s=50, color="tab:green", zorder=5,
                       label="uniform width (same budget)" if k == 0 else None)
    ax.set_xlabel("predicted latency (ms, from the latency table)" if by_latency else "MFLOPs (MACs)")
    ax.set_ylabel("val top-1, PruningNet weights (not retrained)")
    ax.set_title("search candidates, scored before any retraining", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = write_atomic(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return path
