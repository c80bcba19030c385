"""The ``hwprune`` command line: thin click commands over the public API.

:mod:`.app` holds the command group and turns library errors into one line; each
other module here adds one verb to it.
"""
from . import export, info, pretrain, profile, quickstart, retrain, search, train, verify  # noqa: F401  (verbs)
from .app import main

__all__ = ["main"]
