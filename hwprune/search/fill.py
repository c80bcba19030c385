"""Filling a budget: the search's winner widened until the next width would break a limit.

A search keeps the fittest candidate under the budget, and its fitness (a few batches, a short tune) does not
order networks near the top by their accuracy after fine-tuning: on Fashion-MNIST resnet20 at 50% of the dense
latency, Kendall tau among 20 searched networks was 0.49, and the winner at 30% sat 10% under its budget as
measured. A wider network of the same channel order keeps every channel the narrower one has, so after the same
fine-tuning it is at least as accurate in expectation, and the latency it adds was granted by the budget.

:func:`fill_ladder` widens the winner one group one width at a time, each time the group that has grown least
relative to the winner's width (the winner's proportions kept, as a compound scaling of it would), while the
table (and the FLOPs and params limits) keeps it within the budget. A group whose residual branch the winner drops
stays dropped: dropping a block is a structural choice the search made, not spare width. Every step is kept, so
that meeting the budget as measured (:func:`~.measured.meet_measured`) steps down the ladder from its widest
network before it gives up the filled width.

``rule="saliency"`` (``SearchConfig.fill_rule``) widens instead the group whose added channels bring the most Taylor
saliency of the dense model (the inherit evaluator's per-channel estimates, in its channel order) per ms the table
adds, width the table prices at nothing first: the latency-saliency baseline's rule (:mod:`.baselines`), spent on
the budget the winner leaves.
"""
from __future__ import annotations

import numpy as np

from ..errors import HwpruneError
from .budgets import Budget
from .evaluator import CandidateEvaluator, Enc
from .result import describe

__all__ = ["fill_ladder", "fill_winners", "check_fill_rule"]


def fill_ladder(ev: CandidateEvaluator, enc: Enc, budget: Budget, rule: str = "proportion",
                saliency: dict[int, np.ndarray] | None = None) -> list[Enc]:
    """The networks from ``enc`` (excluded) to the widest the fill reaches within ``budget``, one group widened by
    one choice per step (``rule``: module docstring; "saliency" needs ``saliency``, keyed as
    :func:`~.baselines.saliency_encoding`'s); empty where ``budget`` sets no limit or no group can widen within it."""
    if not budget.limits():
        return []
    check_fill_rule(rule, saliency)
    groups = ev.space.groups
    start = np.asarray(enc, dtype=np.int64)
    base = np.array([g.choices[c] for g, c in zip(groups, start)], dtype=float)
    top = np.asarray(ev.space.num_choices) - 1
    free = np.array([not (g.droppable and c == 0) for g, c in zip(groups, start)])  # (a dropped block stays so)
    col = budget.limits()[0][0]
    kept = None if rule != "saliency" else [  # each group's leading channels' saliency at each of its choices
        np.concatenate([[0.0], np.cumsum(np.clip(np.asarray(saliency[gi], dtype=np.float64), 0, None))])[
            np.asarray(g.choices)] for gi, g in zip(ev.space.prunable_index, groups)]
    cur, ladder = start.copy(), []
    # (the saliency rule's current cost: the start's, then each step's own; the proportion rule needs none)
    now = ev.costs(start[None])[0, col] if kept is not None else None
    while True:
        grow = np.flatnonzero(free & (cur < top))
        if not len(grow):
            break
        nxt = np.repeat(cur[None], len(grow), 0)
        nxt[np.arange(len(grow)), grow] += 1
        ok = ev.feasible(nxt, budget)
        if not ok.any():
            break
        cost = ev.costs(nxt)[:, col]
        if kept is None:
            growth = np.array([groups[g].choices[nxt[i, g]] for i, g in enumerate(grow)]) / base[grow]
            order = np.lexsort((grow, cost, growth))  # least relative growth, then the cheapest, then the first group
        else:
            gain = np.array([kept[g][nxt[i, g]] - kept[g][cur[g]] for i, g in enumerate(grow)])
            added = cost - now
            free_width = added <= 0
            # width the table prices at nothing first (the most saliency), then the most saliency per cost added
            per = np.where(free_width, gain, gain / np.where(free_width, 1.0, added))
            order = np.lexsort((grow, -per, ~free_width))
        i = next(i for i in order if ok[i])
        cur, now = nxt[i], cost[i]
        ladder.append(tuple(int(v) for v in cur))
    return ladder


def check_fill_rule(rule: str, saliency) -> None:
    """Refuse a saliency fill without the dense model's saliency, in one line."""
    if rule == "saliency" and not saliency:
        raise HwpruneError("fill_rule='saliency' needs the dense model's Taylor saliency: score with the inherit "
                           "evaluator (a Taylor-ordered dense model), or fill by proportion")


def fill_winners(ev: CandidateEvaluator, evolutions, generation: int, log) -> dict[int, list[dict]]:
    """{budget index: the history entries of its winner's fill ladder, narrowest first, each scored and marked
    ``filled`` (its step) and ``generation``}, for the budgets whose winner widens (``evolutions``: each budget's
    search, its ``top`` fittest first); within the budget as the table was last asked (a steered search's ask)."""
    out = {}
    rule = ev.cfg.fill_rule
    for evo in evolutions:
        f, e = evo.top[0]
        ladder = fill_ladder(ev, e, evo.budget, rule, getattr(ev.scorer, "saliency", None))
        if not ladder:
            continue
        fits = ev.fitness(ladder)
        out[evo.index] = [{"budget": evo.index, "generation": generation, "filled": k, **describe(ev, le, lf)}
                          for k, (le, lf) in enumerate(zip(ladder, fits), 1)]
        col, _ = evo.budget.limits()[0]
        before, after = ev.costs(np.asarray([e, ladder[-1]]))[:, col]
        cost = f"{before:.4g} -> {after:.4g} ms predicted" if col == 0 else \
            f"{before / 1e6:.4g}M -> {after / 1e6:.4g}M {'FLOPs' if col == 1 else 'params'}"
        log(f"[{evo.budget.label()}] filled the winner toward the budget: {len(ladder)} width"
            f"{'s' * (len(ladder) > 1)} widened, {cost} "
            f"(fitness {f:.4f} -> {fits[-1]:.4f}; the widest is the winner, --no-fill keeps the fittest)")
    return out
