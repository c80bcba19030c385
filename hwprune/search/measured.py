"""Meeting a latency budget as measured, not only as predicted.

A search keeps the fittest of the candidates its table predicts within the budget, and so
favours the ones the table underestimates: on Fashion-MNIST resnet20 the searched winners
measured 2.6-7.9% over their budgets when timed again. :func:`meet_measured` times the
fittest candidates of each latency budget on the table's own backend (interleaved, the
table's statistic), best first, and keeps the fittest one whose measured latency is within
the budget: what the L1 baseline's bisection on measured latency does for its ratio.

Every such timing (:func:`table_meter`, what a search also steers by) is taken twice, and
each network keeps its faster reading: on an H200 one timing call in eight measured every
network, the dense one too, at 1.56-1.63x its prediction, the others at 0.85-1.01x
(``benchmarks/gpu_repeat.py``); a search that steered by one timing in which 3 of 4 networks
read 1.6x asked the table for 62% of its budget and picked a network uniform pruning beat by
5 points. A machine slower throughout (a table made on another) reads slow both times and
still steers.
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..errors import HwpruneError
from .baselines import hold_measured
from .result import SearchResult

if TYPE_CHECKING:
    from ..core.space import SearchSpace
    from ..latency.table import LatencyTable
    from .evaluator import CandidateEvaluator

__all__ = ["meet_measured", "budget_candidates", "fittest_candidates", "table_meter"]

CANDIDATE_KEYS = (  # a candidate's fields a search result's best entry takes from it (its encoding, costs, fitness)
    "encoding", "channels", "latency_ms", "flops", "params", "fitness")


def meet_measured(result: SearchResult, space: "SearchSpace", table: "LatencyTable", top: int = 8,
                  rounds: int = 3, profiler=None, passes: int = 5, runs_per_pass: int = 10,
                  log: Callable[[str], None] = print, baselines: "CandidateEvaluator | None" = None) -> SearchResult:
    """For every latency budget of ``result``, time its ``top`` fittest candidates (up to ``rounds`` times ``top``
    until one fits) and make the fittest within the budget as measured the best; ``result.best`` entries gain
    ``measured_ms``, ``measured_rank`` (by the search's fitness, 0: its fittest; the steps of its fill,
    :mod:`.fill`, are timed first, widest first, and ``filled["steps"]`` says how far the one kept widens it, or is
    gone where none was within), ``measured_checked`` and
    ``table_over_measured`` (the median of predicted over measured latency of the candidates timed). A budget none
    of them meets keeps its winner, with ``measured_within`` false, and says so. There, and where the table
    over-predicts these networks and the winner measures more than 3% under the budget, it says what to ask the
    table for instead: the budget times that ratio (on Fashion-MNIST resnet20 at 28x28 the table put networks
    near 30% and 50% of the dense latency 5-7% over their measured latency, and every winner left that share of
    its budget unused).

    ``baselines``: the search's evaluator, bound to ``table``; with it the result's uniform and magnitude networks
    are held to each budget as measured too, and scored again where that changes them
    (:func:`~.baselines.hold_measured`), so that the three compare at the same measured latency."""
    if top < 1 or rounds < 1:
        raise HwpruneError(f"top and rounds must be positive, got top={top}, rounds={rounds}")
    measure = table_meter(space, table, profiler, passes, runs_per_pass)
    for i, (budget, best) in enumerate(zip(result.budgets, result.best)):
        if budget.latency_ms is None:
            continue
        if baselines is not None:
            hold_measured(baselines, best, budget, measure, top, rounds, log)
        pool = budget_candidates(result, i)
        checked, chosen, ratios = 0, None, []
        for start in range(0, min(len(pool), rounds * top), top):
            batch = pool[start:start + top]
            for rank, (c, m) in enumerate(zip(batch, measure([c["encoding"] for c in batch])), start):
                checked += 1
                ratios.append(c["latency_ms"] / m)
                if m <= budget.latency_ms:
                    chosen = (rank, c, m)
                    break
            if chosen is not None:
                break
        best["measured_checked"] = checked
        ratio = best["table_over_measured"] = round(float(np.median(ratios)), 4)
        if chosen is None:
            best["measured_within"] = False
            log(f"[{budget.label()}] none of the {checked} fittest candidates measured within the budget; keeping "
                f"the search's winner (its latency is the table's prediction). The table puts these networks at "
                f"{ratio:.3f} x their measured latency: search again with --latency-ms {budget.latency_ms * ratio:.4g} "
                f"(and this --measure-top), or profile the table again on a quiet machine")
            continue
        rank, c, ms = chosen
        best.update({k: c[k] for k in CANDIDATE_KEYS})
        # (the fill's steps before it; none counted where a rerank's winner replaced the filled one)
        steps = sum("filled" in p for p in pool[:rank]) if "filled" in best else 0
        if "filled" in c and "filled" in best:  # a step of the winner's fill: as far as it widens within the budget
            best["filled"] = {**best["filled"], "steps": c["filled"]}
            rank, what = 0, f"the fittest candidate widened {c['filled']} of {steps + c['filled']} widths"
        else:
            best.pop("filled", None)
            rank = rank - steps
            what = f"the {ordinal(rank)} fittest candidate"
        best.update(measured_ms=round(float(ms), 5), measured_rank=rank, measured_within=True)
        over = "; no step of the winner's fill within" if steps and "filled" not in best else ""
        log(f"[{budget.label()}] measured {ms:.4g} ms: {what} (fitness {c['fitness']:.4f}{over}) is the fittest "
            f"within the budget")
        if ms < 0.97 * budget.latency_ms and ratio > 1.02:
            log(f"[{budget.label()}] it leaves {1 - ms / budget.latency_ms:.0%} of the budget unused: the table puts "
                f"these networks at {ratio:.3f} x their measured latency; search again with --latency-ms "
                f"{budget.latency_ms * ratio:.4g} (and this --measure-top) to use it")
    return result


def table_meter(space: "SearchSpace", table: "LatencyTable", profiler=None, passes: int = 5,
                runs_per_pass: int = 10, timings: int = 2) -> Callable[[list], list[float]]:
    """Encodings -> their latency (ms) timed here on ``table``'s backend, interleaved, as the table's statistic: what
    a search steers by (``search(measure=...)``, ``SearchConfig.steer_after``) and :func:`meet_measured` checks
    with. The networks are timed ``timings`` times, each a separate interleaved measurement in its own visiting
    order, and each keeps its fastest reading (module docstring: one call a busy machine slowed throughout)."""
    if timings < 1:
        raise HwpruneError(f"timings must be at least 1, got {timings}")
    if profiler is None:
        from ..latency.fidelity import profiler_for_table

        profiler = profiler_for_table(table)

    calls = itertools.count()  # every timing of every call visits the networks in its own order

    def measure(encs: list) -> list[float]:
        ms = profiler.measure_networks_fastest([space.materialize(tuple(e)) for e in encs], space.input_shapes[0],
                                               table.statistic, timings=timings, passes=passes,
                                               runs_per_pass=runs_per_pass, seed=next(calls) * timings)
        return [m.value(table.statistic) for m in ms]
    return measure


def budget_candidates(result: SearchResult, budget_index: int, fill: bool = True) -> list[dict]:
    """What meeting budget ``budget_index`` as measured steps down through: its candidates, fittest first
    (:func:`fittest_candidates`), only those within the latency a steered search last asked the table for (what is
    over it is predicted over the budget as measured). ``fill=False``: the searched candidates alone, without the
    steps of the winner's fill (a step that was also searched stays, as a candidate)."""
    best = result.best[budget_index]
    winner = best.get("filled", {}).get("from", best)["encoding"]  # (the fittest, where the best is its fill)
    history = result.history if fill else [h for h in result.history if "filled" not in h]
    return fittest_candidates(history, budget_index, winner, best.get("steered", {}).get("asked_ms"))


def fittest_candidates(history: list[dict], budget_index: int, winner: list[int],
                       limit_ms: float | None = None) -> list[dict]:
    """The candidates evaluated for a budget, each once, fittest first (the search's winner first on ties); those
    scored again (``rescored``, :func:`~.rerank.rerank`) come first, by that score, then the winner's fill ladder
    (``filled``, :mod:`.fill`), widest first. ``limit_ms``: only those the table predicts within it (a steered
    search's last ask, ``best["steered"]["asked_ms"]``)."""
    seen, out = set(), []
    for h in sorted(history, key=lambda h: "filled" not in h):  # (a fill step also searched: kept as the step)
        key = tuple(h["encoding"])
        if limit_ms is not None and h["latency_ms"] is not None and h["latency_ms"] > limit_ms:
            continue
        if h["budget"] == budget_index and key not in seen:
            seen.add(key)
            out.append(h)
    return sorted(out, key=lambda h: ("rescored" not in h, "filled" not in h,
                                      -h.get("rescored", h.get("filled", h["fitness"])), h["encoding"] != list(winner)))


def ordinal(rank: int) -> str:
    n = rank + 1
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
