"""Evolutionary search for the best channel configuration under latency / FLOPs / params budgets.

``hwprune.search`` is this package, and it is also callable: ``hp.search(pnet, val, calib,
table=..., latency_ms=...)`` runs :func:`hwprune.search.evolution.search`, so the public
function and ``import hwprune.search`` (the module) are one name.
"""
import sys
import types

from .budgets import Budget, InfeasibleBudgetError, check_feasible
from .config import SearchConfig
from .evaluator import CandidateEvaluator
from .evolution import _Evolution, search
from .result import SearchResult, pareto_front, save_result

__all__ = ["search", "SearchConfig", "SearchResult", "Budget", "InfeasibleBudgetError", "CandidateEvaluator",
           "pareto_front", "save_result", "check_feasible"]

_Evaluator = CandidateEvaluator  # the name tests and older code use


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
