"""The model as hwprune sees it: traced channel groups, layer kinds, the SearchSpace and materialize.

Nothing here trains, measures or searches; every later stage builds on these types.
"""
from .space import ChannelGroup, SearchSpace, default_ratios

__all__ = ["SearchSpace", "ChannelGroup", "default_ratios"]
