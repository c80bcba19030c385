"""What a user would do instead of searching, at the same budget: the reference networks a search is judged by.

* ``uniform``: the widest uniform width multiplier that meets the budget (every group
  slimmed by the same ratio);
* ``magnitude``: global magnitude pruning (Torch-Pruning's group-L1 criterion with
  global ranking): each group's channel importances divided by their mean, one
  threshold over all groups, raised until the network meets the budget. It needs the
  dense model's channel importances, so it is there when the evaluator inherits the
  dense weights (``InheritEvaluator.importance``).

Both are judged by the same table and scored by the same evaluator as the searched
network, so the result file can say how each one compares before any fine-tuning; and
both are in the search's first generation (``SearchConfig.seed_baselines``), so the search
starts from what a user would otherwise do and returns nothing less fit.
"""
from __future__ import annotations

import numpy as np

from .budgets import Budget
from .evaluator import CandidateEvaluator
from .result import describe

__all__ = ["uniform_baseline", "uniform_encodings", "magnitude_baseline", "magnitude_encodings", "baseline_encodings",
           "BASELINES"]

BASELINES = ("uniform", "magnitude")


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


def baseline_encodings(ev: CandidateEvaluator, budget: Budget, importance=None) -> list[tuple[int, ...]]:
    """The uniform and magnitude networks of the budget (those that exist, once each), unscored."""
    found = [b[0] for b in (_uniform(ev, budget), _magnitude(ev, budget, importance)) if b is not None]
    return list(dict.fromkeys(found))


def uniform_baseline(ev: CandidateEvaluator, budget: Budget) -> dict | None:
    """The widest uniform-width network that meets the budget, its width ratio and its fitness."""
    found = _uniform(ev, budget)
    if found is None:
        return None
    enc, multiplier = found
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
    if found is None:
        return None
    enc, threshold = found
    return {"metric": "l1", "threshold": round(threshold, 6), **describe(ev, enc, ev.fitness([enc])[0])}
