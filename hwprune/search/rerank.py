"""Scoring the fittest candidates again, with a costlier fitness.

The search scores hundreds of candidates, so its fitness is cheap: with the inherit evaluator,
20 distillation steps each. Where networks are tiny that ranking can be far from what fine-tuning
gives: on Fashion-MNIST resnet20 at 30% of the dense latency (2-core Xeon) it scored the search's
pick 0.491 and the widths L1 pruning keeps 0.397, which fine-tuned through the same path to 0.806 and
0.816 (`benchmarks/l1_widths.py`); an earlier run on 11 networks at 30% found 100 and 200 steps no
better than 20, and in the benchmark (`fashion_mnist.py`, hwprune-rerank) the 8 fittest scored with
300 steps gained 0.5 points twice and lost 1 point once at 30%, and lost 0.1 at 50%, within the
fine-tuning seeds' spread.

The search also picks its winner on the few validation batches it scores every candidate on, so the fittest of
hundreds is in part the one luckiest on those images: on Fashion-MNIST mobilenet_v2_cifar at 50% of the dense
latency (`benchmarks/pick_scores.py`), the default search's pick scored 0.826 on its 4 batches and 0.812 on the
next 4, where the other methods' picks moved by -0.6 to +0.5 points, and on the 8 networks the benchmark
fine-tuned there Kendall tau with the fine-tuned accuracy was 0.36 on the search's batches and 0.76 on the next 4.
So a rerank scores on batches the search never selected on: ``skip_batches`` (the search's ``val_batches``) are
passed over, and :data:`VAL_FACTOR` times as many after them are scored (they are few candidates).

:func:`rerank` scores the ``top`` fittest distinct candidates of every
budget with such a ``scorer``, and the budget's baseline networks (:mod:`.baselines`, in
the search's first generation), and makes the best by that score the winner, so that the longer score
never finds the network a user would otherwise prune worse than the one returned; every history entry
it scored carries ``rescored``, and :func:`~.measured.fittest_candidates` orders those first, by it, so
that meeting the budget as measured (:func:`~.measured.meet_measured`) steps down in that order.
"""
from __future__ import annotations

import time
from typing import Callable

from ..errors import HwpruneError
from .baselines import BASELINES
from .evaluator import _Limited, _Rotated, score_many
from .measured import CANDIDATE_KEYS, ordinal, budget_candidates
from .result import SearchResult

__all__ = ["rerank", "fresh_batches", "VAL_FACTOR"]

VAL_FACTOR = 4  # a rerank scores this many times the search's validation batches, after them


def fresh_batches(search_batches: int | None) -> dict:
    """:func:`rerank`'s ``val_batches`` and ``skip_batches`` after a search that scored its candidates on
    ``search_batches`` validation batches: :data:`VAL_FACTOR` x as many after them (None: the search scored all of
    them, so the rerank does too)."""
    return {"val_batches": VAL_FACTOR * search_batches if search_batches else None,
            "skip_batches": search_batches or 0}


def rerank(result: SearchResult, scorer, val_loader, calib_loader, top: int = 8, calib_batches: int = 10,
           val_batches: int | None = None, baselines: bool = True, log: Callable[[str], None] = print,
           skip_batches: int = 0, draws: int = 1, workers: int | None = 1) -> SearchResult:
    """Score the ``top`` fittest candidates of each budget of ``result`` with ``scorer`` (anything with
    ``score(enc, val, calib, calib_batches)``: an :class:`~hwprune.supernet.evaluate.InheritEvaluator` tuned for
    more steps) on ``val_batches`` validation batches (None: all) after the first ``skip_batches`` (those the search
    scored on; where the loader has none after them, on its first ``val_batches``, and the log says so), and make
    the best by that score each budget's winner. With
    ``baselines``, the budget's baseline networks (``result.best``'s ``uniform``, ``magnitude`` and ``saliency``)
    are scored too, where the search evaluated them. With ``draws`` > 1 each score is the mean over that many draws
    of the batches a candidate is recalibrated and tuned on (the d-th from ``d * (calib_batches + tune_steps)``
    batches into ``calib_loader``; the first, the search's own): one draw's luck on them moves a 20-step score by up
    to 2 points. ``workers``: processes that score (:func:`~.evaluator.score_many`; None: one per core).
    ``result.best`` entries gain ``rescored`` and ``rescored_rank`` (the winner's rank by the search's own fitness,
    0: the search's winner);
    ``result.stats["rerank"]`` records what was done."""
    if not isinstance(top, int) or top < 1:
        raise HwpruneError(f"rerank needs a positive number of candidates to score again, got top={top!r}")
    if not isinstance(draws, int) or draws < 1:
        raise HwpruneError(f"rerank averages over a positive number of draws of tuning batches, got draws={draws!r}")
    if not isinstance(skip_batches, int) or skip_batches < 0:
        raise HwpruneError(f"rerank skips a whole number of validation batches, got skip_batches={skip_batches!r}")
    val = _Limited(val_loader, val_batches or None, start=skip_batches)
    scored = val.batches()
    if not scored and skip_batches:
        log(f"the validation data has no batch after the {skip_batches} the search scored on: scoring again on "
            f"those (pass more validation images for an unbiased rerank)")
        skip_batches, val = 0, _Limited(val_loader, val_batches or None)
        scored = val.batches()
    fresh = f", on {scored} validation batches after the search's {skip_batches}" if skip_batches else ""
    started = time.perf_counter()
    stride = calib_batches + getattr(scorer, "tune_steps", 0)
    calibs = [calib_loader] + [_Rotated(calib_loader, d * stride) for d in range(1, draws)]  # (kept: one each)
    for i, best in enumerate(result.best):
        # (within the latency a steered search last asked the table for; the searched ones, not the fill's steps)
        ranked = budget_candidates(result, i, fill=False)
        named = {tuple(best[b]["encoding"]): b for b in BASELINES if baselines and best.get(b)}
        ranks = list(range(min(top, len(ranked))))
        ranks += [r for r in range(len(ranks), len(ranked)) if tuple(ranked[r]["encoding"]) in named]
        encs = [tuple(ranked[r]["encoding"]) for r in ranks]
        per_draw = [score_many(scorer, encs, val, calib, calib_batches, workers) for calib in calibs]
        scores = {e: sum(s[k] for s in per_draw) / draws for k, e in enumerate(encs)}
        for h in result.history:
            if h["budget"] == i and tuple(h["encoding"]) in scores:
                h["rescored"] = scores[tuple(h["encoding"])]
        rank = max(ranks, key=lambda r: (scores[tuple(ranked[r]["encoding"])], -r))  # ties: the fitter
        winner = ranked[rank]
        best.update({k: winner[k] for k in CANDIDATE_KEYS})
        best.update(rescored=winner["rescored"], rescored_rank=rank)
        best.pop("filled", None)  # (the winner as scored again, not widened)
        first = scores[tuple(ranked[0]["encoding"])]
        also = [named[tuple(ranked[r]["encoding"])] for r in ranks[min(top, len(ranked)):]]
        also = f" and the {' and '.join(also)} network{'s' * (len(also) > 1)}" if also else ""
        which = named.get(tuple(winner["encoding"]))
        log(f"[{result.budgets[i].label()}] scored the {min(top, len(ranked))} fittest{also} again"
            f"{f' (mean of {draws} draws of tuning batches)' if draws > 1 else ''}: the "
            f"{ordinal(rank)} by the search's fitness{f' (the {which} network)' if which else ''} is the best "
            f"({winner['rescored']:.4f}; the search's winner {first:.4f}){fresh}")
    result.stats["rerank"] = {"top": top, "baselines": baselines, "skip_batches": skip_batches, "val_batches": scored,
                              "scorer": getattr(scorer, "name", type(scorer).__name__),
                              "tune_steps": getattr(scorer, "tune_steps", None), "draws": draws,
                              "seconds": round(time.perf_counter() - started, 2)}
    return result

