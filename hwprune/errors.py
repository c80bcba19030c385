"""The one exception type hwprune raises for user-facing problems.

Its message is a single line that says what is wrong and what to do; the CLI
prints it as ``error: <message>`` and exits with status 1.
"""
from __future__ import annotations

__all__ = ["HwpruneError", "UnsupportedModelError", "EncodingError", "SpaceMismatchError"]


class HwpruneError(Exception):
    """Base class: something the user can fix."""


class UnsupportedModelError(HwpruneError):
    """The model cannot be traced, or uses an op whose channels hwprune cannot map."""


class EncodingError(HwpruneError, ValueError):
    """An encoding of the wrong length or with an out-of-range choice."""


class SpaceMismatchError(HwpruneError):
    """A file (space, table, checkpoint) belongs to another model or space."""
