"""What a user would do instead of searching, at the same budget: the reference networks a search is judged by.

* ``uniform``: the widest uniform width multiplier that meets the budget (every group
  slimmed by the same ratio);
* ``magnitude``: global magnitude pruning (Torch-Pruning's group-L1 criterion with
  global ranking): each group's channel importances divided by their mean, one
  threshold over all groups, raised until the network meets the budget. It needs the
  dense model's channel importances, so it is there when the evaluator inherits the
  dense weights (``InheritEvaluator.importance``);
* ``saliency``: the latency-saliency knapsack (HALP, Shen et al., NeurIPS 2022), solved
  greedily: from the dense network, channels are removed where they lose the least
  Taylor saliency (the estimated loss change, one scale for every group) per unit of the
  budget's cost saved, from the table (latency) or the space (FLOPs, params), until the
  network meets the budget; then put back where they bring the most saliency per unit of
  cost while it still does. Uniform and magnitude pruning ignore what a layer costs on the
  target; this network spends the budget where the table says channels are cheap. It
  needs the estimates of a Taylor-ordered dense model (``InheritEvaluator.saliency``).
  (On Fashion-MNIST, benchmarks/fashion_mnist.py, the default search seeded with it picked
  mobilenet_v2_cifar networks that fine-tuned 4.0 and 1.3 points above uniform width at 30%
  and 50% of the dense latency, where without it they had 1.7 and 0.6: it keeps the early,
  high-resolution layers wide and cuts the late ones, whose channels the Taylor estimates
  value least per ms the table says they cost.)

All are judged by the same table and scored by the same evaluator as the searched
network, so the result file can say how each one compares before any fine-tuning; and
all are in the search's first generation (``SearchConfig.seed_baselines``), so the search
starts from what a user would otherwise do and returns nothing less fit. Where the searched
network is held to the budget as measured (:func:`~.measured.meet_measured`), the uniform and
magnitude networks are too (:func:`hold_measured`): held to the table, the quickstart's read
4.5% and 4.9% over its budget as measured on a 2-core EPYC, where the searched one read 2.3% under,
so the comparison favoured them.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from .budgets import Budget
from .evaluator import CandidateEvaluator
from .result import describe

__all__ = ["uniform_baseline", "uniform_encodings", "magnitude_baseline", "magnitude_encodings", "saliency_baseline",
           "saliency_encoding", "baseline_encodings", "hold_measured", "BASELINES"]

BASELINES = ("uniform", "magnitude", "saliency")
SALIENCY_STEPS = 6  # choices a group may move at once: a table's latency is flat over some widths and drops after
SLACK = 1.1  # held to the budget as measured, a baseline's widths are timed from those the table puts within this x it
STEP = 0.01  # ... each at least this share of the budget under the one timed before it (by the table)


def uniform_encodings(space) -> tuple[np.ndarray, np.ndarray]:
    """Every uniform-width network the baseline considers, widest first: (multipliers (R,), encodings (R, G)), one
    per width multiplier from 1.0 down in steps of 0.01 (with rounded widths, neighbours can give the same network)."""
    ratios = np.round(np.arange(1.0, 0.0, -0.01), 2)
    return ratios, np.asarray([space.uniform(r) for r in ratios])


def _uniform(ev: CandidateEvaluator, budget: Budget) -> tuple[tuple[int, ...], float] | None:
    """The widest uniform-width network that meets the budget and the multiplier that reached it."""
    ratios, encs = uniform_encodings(ev.space)
    ok = ev.feasible(encs, budget)
    if not ok.any():
        return None
    i = int(np.argmax(ok))
    return tuple(int(v) for v in encs[i]), float(ratios[i])


def _magnitude(ev: CandidateEvaluator, budget: Budget, importance) -> tuple[tuple[int, ...], float] | None:
    """The widest network global magnitude pruning reaches within the budget and its threshold."""
    if importance is None:
        return None
    thresholds, encs = magnitude_encodings(ev.space, importance)
    ok = ev.feasible(encs, budget)
    if not ok.any():
        return None
    i = int(np.argmax(ok))  # the lowest threshold that meets the budget
    return tuple(int(v) for v in encs[i]), float(thresholds[i])


def saliency_encoding(ev: CandidateEvaluator, budget: Budget, saliency: dict[int, np.ndarray] | None,
                      steps: int = SALIENCY_STEPS) -> tuple[int, ...] | None:
    """The latency-saliency knapsack's network of the budget (see the module docstring), or None without
    ``saliency`` (per-channel Taylor estimates of each prunable group, keyed by index into ``space.all_groups``,
    in the model's channel order: :func:`~hwprune.core.importance.order_channels`'s ``saliency``) or where even
    the narrowest network it reaches is over the budget.

    A move narrows (or widens) one group by 1 to ``steps`` choices; its cost is the channels' saliency it loses
    (the trailing ones: the model's order keeps the best first), its gain what it saves of each limit the network
    is over, as a share of that limit. Groups never go to width 0 (no block is dropped)."""
    if not saliency:
        return None
    space = ev.space
    if not budget.limits():
        return None
    cols = np.array([c for c, _ in budget.limits()], dtype=np.int64)
    limits = np.array([v for _, v in budget.limits()], dtype=np.float64)
    # cumulative saliency at each choice of each group: the leading ``width`` channels' sum
    kept = []
    for gi, g in zip(space.prunable_index, space.groups):
        s = np.concatenate([[0.0], np.cumsum(np.clip(np.asarray(saliency[gi], dtype=np.float64), 0, None))])
        kept.append(s[np.asarray(g.choices)])
    low = np.array([1 if g.choices[0] == 0 and len(g.choices) > 1 else 0 for g in space.groups])
    top = np.asarray(space.num_choices) - 1
    n = len(space.groups)
    moves = [(g, k) for g in range(n) for k in range(1, steps + 1)]
    mg, mk = np.array([m[0] for m in moves]), np.array([m[1] for m in moves])

    def neighbours(enc: np.ndarray, sign: int) -> tuple[np.ndarray, np.ndarray]:
        to = enc[mg] + sign * mk
        ok = (to >= low[mg]) & (to <= top[mg])
        encs = np.repeat(enc[None, :], int(ok.sum()), 0)
        encs[np.arange(len(encs)), mg[ok]] = to[ok]
        return encs, ok

    def lost(enc: np.ndarray, encs: np.ndarray, ok: np.ndarray) -> np.ndarray:
        g = mg[ok]
        return np.abs(np.array([kept[j][enc[j]] for j in g]) - np.array([kept[j][e[j]] for j, e in zip(g, encs)]))

    enc = top.copy()
    cost = ev.costs(enc[None, :])[0, cols] / limits  # (each limit's share of the network under ``enc``)
    for _ in range(int(top.sum()) + 1):  # narrow: each move lowers one index, so this many at most
        over = cost > 1
        if not over.any():
            break
        encs, ok = neighbours(enc, -1)
        if not len(encs):
            return None
        costs = ev.costs(encs)[:, cols] / limits
        saved = np.clip(cost[None, :] - costs, 0, None)[:, over].sum(1)
        useful = saved > 1e-12
        if not useful.any():
            return None
        i = int(np.argmin(np.where(useful, lost(enc, encs, ok) / np.where(useful, saved, 1), np.inf)))
        enc, cost = encs[i], costs[i]
    else:
        return None
    for _ in range(int(top.sum()) + 1):  # widen back while the budget holds
        encs, ok = neighbours(enc, +1)
        if not len(encs):
            break
        raw = ev.costs(encs)[:, cols]
        fits = (raw <= limits).all(1)
        costs = raw / limits
        if not fits.any():
            break
        gain = lost(enc, encs, ok) / np.maximum(np.clip(costs - cost[None, :], 0, None).sum(1), 1e-12)
        i = int(np.argmax(np.where(fits, gain, -np.inf)))
        enc, cost = encs[i], costs[i]
    return tuple(int(v) for v in enc)


def saliency_baseline(ev: CandidateEvaluator, budget: Budget, saliency: dict[int, np.ndarray] | None) -> dict | None:
    """The latency-saliency knapsack's network of the budget and its fitness (None without Taylor estimates:
    ``InheritEvaluator.saliency``)."""
    enc = saliency_encoding(ev, budget, saliency)
    if enc is None:
        return None
    return {"criterion": "taylor saliency per cost", **describe(ev, enc, ev.fitness([enc])[0])}


def baseline_encodings(ev: CandidateEvaluator, budget: Budget, importance=None, saliency=None) \
        -> list[tuple[int, ...]]:
    """The uniform, magnitude and saliency networks of the budget (those that exist, once each), unscored."""
    found = [_uniform(ev, budget), _magnitude(ev, budget, importance)]
    found = [b[0] for b in found if b is not None] + [saliency_encoding(ev, budget, saliency)]
    return list(dict.fromkeys(e for e in found if e is not None))


def uniform_baseline(ev: CandidateEvaluator, budget: Budget) -> dict | None:
    """The widest uniform-width network that meets the budget, its width ratio and its fitness."""
    found = _uniform(ev, budget)
    if found is None:
        return None
    return _uniform_entry(ev, *found)


def _uniform_entry(ev: CandidateEvaluator, enc: tuple[int, ...], multiplier: float) -> dict:
    # labelled by the widths it has (kept / original channels over the prunable groups), not by the multiplier
    # that reached them: with rounded widths, 0.53 and 0.50 can give the same network
    kept = sum(ev.space.channels(enc).values()) / sum(g.width for g in ev.space.groups)
    return {"ratio": round(kept, 3), "multiplier": multiplier, **describe(ev, enc, ev.fitness([enc])[0])}


def magnitude_encodings(space, importance: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every network global magnitude pruning passes through, widest first: (thresholds (T,), encodings (T, G)).

    ``importance``: per-channel scores of each prunable group, keyed by index into
    ``space.all_groups`` (:func:`~hwprune.core.importance.channel_importance`). A group at
    threshold t keeps its channels scoring at least t times the group's mean, rounded up
    to the nearest width it may take (at least its narrowest).
    """
    normed = []
    for gi in space.prunable_index:
        s = np.asarray(importance[gi], dtype=np.float64)
        mean = s.mean() if s.size else 0.0
        normed.append(s / mean if mean > 0 else np.ones_like(s))
    thresholds = np.unique(np.concatenate([[0.0], *normed]))
    encs = np.empty((len(thresholds), len(space.groups)), dtype=np.int64)
    for j, (g, s) in enumerate(zip(space.groups, normed)):
        # channels at or above each threshold; at least one (magnitude pruning narrows a layer, never drops a block)
        kept = np.maximum((s[None, :] >= thresholds[:, None]).sum(1), 1)
        choices = np.asarray(g.choices)
        encs[:, j] = np.minimum(np.searchsorted(choices, kept, side="left"), len(choices) - 1)
    return thresholds, encs


def magnitude_baseline(ev: CandidateEvaluator, budget: Budget, importance: dict[int, np.ndarray] | None) \
        -> dict | None:
    """The widest network global L1 magnitude pruning reaches within the budget (None without importances, which
    are L1 scores: ``InheritEvaluator.importance``)."""
    found = _magnitude(ev, budget, importance)
    return None if found is None else _magnitude_entry(ev, *found)


def _magnitude_entry(ev: CandidateEvaluator, enc: tuple[int, ...], threshold: float) -> dict:
    return {"metric": "l1", "threshold": round(threshold, 6), **describe(ev, enc, ev.fitness([enc])[0])}


def hold_measured(ev: CandidateEvaluator, best: dict, budget: Budget, measure: Callable[[list], list[float]],
                  top: int = 8, rounds: int = 3, log: Callable[[str], None] = print) -> None:
    """Hold ``best``'s uniform and magnitude networks (a search result's entry for ``budget``) to the latency budget
    as measured, as the searched one is (:func:`~.measured.meet_measured`): each walks its networks (uniform width
    multipliers, magnitude thresholds) widest first from those ``ev``'s table puts within :data:`SLACK` x the
    budget (and within its other limits), each at least :data:`STEP` of the budget under the one before it (by the
    table: magnitude thresholds step a channel at a time, and 24 of them spanned 0.5% of resnet20's latency),
    ``top`` at a time (``measure``: encodings -> measured ms) up to ``rounds`` x ``top``, and keeps the first
    measured within the budget, scored by ``ev``. Its entry gains ``measured_ms`` and ``measured_within``; where
    none is within it stays the table's, ``measured_within`` false."""
    limited = replace(budget, latency_ms=SLACK * budget.latency_ms)
    walks = {"uniform": (uniform_encodings(ev.space), _uniform_entry)}
    importance = getattr(ev.scorer, "importance", None)
    if importance is not None:
        walks["magnitude"] = (magnitude_encodings(ev.space, importance), _magnitude_entry)
    for name, ((keys, encs), entry) in walks.items():
        if best.get(name) is None:
            continue
        ladder, last = [], np.inf  # (each network by the widest multiplier, or lowest threshold, reaching it)
        for k, e, ok, ms in zip(keys, encs, ev.feasible(encs, limited), ev.costs(encs)[:, 0]):
            if ok and ms <= last - STEP * budget.latency_ms and len(ladder) < rounds * top:
                ladder.append((tuple(int(v) for v in e), float(k)))
                last = ms
        kept = None
        for start in range(0, len(ladder), top):
            batch = ladder[start:start + top]
            kept = next(((e, k, ms) for (e, k), ms in zip(batch, measure([e for e, _ in batch]))
                         if ms <= budget.latency_ms), None)
            if kept is not None:
                break
        if kept is None:
            best[name]["measured_within"] = False
            log(f"[{budget.label()}] none of the {len(ladder)} widest {name} networks measured within the budget; "
                f"keeping the one the table put within it")
            continue
        enc, key, ms = kept
        was = best[name]["encoding"]
        channels = [sum(ev.space.channels(e).values()) for e in (was, enc)]
        if list(enc) != list(was):
            best[name] = entry(ev, enc, key)
        best[name].update(measured_ms=round(float(ms), 5), measured_within=True)
        moved = "the table's own" if list(enc) == list(was) else \
            f"{channels[1]} channels where the table's had {channels[0]}"
        log(f"[{budget.label()}] the {name} network measured {ms:.4g} ms within the budget ({moved})")
