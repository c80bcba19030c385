"""Evolutionary search for the best channel configuration under latency / FLOPs / params budgets.

``hwprune.search`` is this package, and it is also callable: ``hp.search(pnet, val, calib,
table=..., latency_ms=...)`` runs :func:`hwprune.search.evolution.search`, so the public
function and ``import hwprune.search`` (the module) are one name. Names load on first
use, so the CLI can read :class:`~.config.SearchConfig`'s defaults without torch.
"""
import importlib
import sys
import types

_LAZY = {"search": ".evolution", "_Evolution": ".evolution", "SearchConfig": ".config", "Budget": ".budgets",
         "InfeasibleBudgetError": ".budgets", "check_feasible": ".budgets", "CandidateEvaluator": ".evaluator",
         "SearchResult": ".result", "pareto_front": ".result", "save_result": ".result",
         "uniform_baseline": ".baselines", "magnitude_baseline": ".baselines",
         "saliency_baseline": ".baselines", "meet_measured": ".measured",
         "table_meter": ".measured", "rerank": ".rerank"}

__all__ = ["search", "SearchConfig", "SearchResult", "Budget", "InfeasibleBudgetError", "CandidateEvaluator",
           "pareto_front", "save_result", "check_feasible", "meet_measured", "table_meter",
           "rerank"]


def __getattr__(name: str):
    if name == "_Evaluator":  # the name tests and older code use
        name = "CandidateEvaluator"
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'hwprune.search' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from .evolution import search

        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
