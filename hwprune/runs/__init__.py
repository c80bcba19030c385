"""Run folders and the pipeline's stages over them; ``quickstart`` is a list of those stages.

Every stage (profile, train, search, retrain, export, verify) is one function over a
:class:`~.folder.RunFolder`: it writes its files there and records its settings,
files and timings in the folder's ``run.json``. The CLI verbs,
:func:`~.quickstart.quickstart` and the benchmarks call these same functions.
Names load on first use, so the CLI's option defaults (:mod:`.settings`) cost no torch import.
"""
import importlib

_LAZY = {"RunFolder": ".folder", "RunFolderError": ".folder", "TrainJob": ".settings", "DataSettings": ".settings",
         "ProfileSettings": ".settings", "profile_stage": ".stages", "train_stage": ".stages",
         "search_stage": ".stages", "retrain_stage": ".deploy_stages", "export_stage": ".deploy_stages",
         "verify_stage": ".deploy_stages", "quickstart": ".quickstart"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'hwprune.runs' has no attribute {name!r}")
