"""The one exception type hwprune raises for user-facing problems, and the checks of option values that raise it.

Its message is a single line that says what is wrong and what to do; the CLI
prints it as ``error: <message>`` and exits with status 1. The same checks guard
the Python API and the CLI, so a bad value is refused wherever it comes in.
"""
from __future__ import annotations

import math

__all__ = ["HwpruneError", "UnsupportedModelError", "EncodingError", "SpaceMismatchError", "check_number",
           "check_encoding"]


class HwpruneError(Exception):
    """Base class: something the user can fix."""


class UnsupportedModelError(HwpruneError):
    """The model cannot be traced, or uses an op whose channels hwprune cannot map."""


class EncodingError(HwpruneError, ValueError):
    """An encoding of the wrong length or with an out-of-range choice."""


class SpaceMismatchError(HwpruneError):
    """A file (space, table, checkpoint) belongs to another model or space."""


def check_number(name: str, value, *, minimum: float | None = 0, inclusive: bool = False, maximum: float | None = None,
                 integer: bool = False, optional: bool = False):
    """``value`` if it is a finite number above ``minimum`` (at least it, with ``inclusive``) and at most
    ``maximum`` (an integer with ``integer``; None with ``optional``); otherwise one line naming ``name``."""
    if value is None and optional:
        return value
    what = "an integer" if integer else "a number"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and minimum is not None:
        ok = value >= minimum if inclusive else value > minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        bounds = []
        if minimum is not None:
            bounds.append(f"{'at least' if inclusive else 'above'} {minimum:g}")
        if maximum is not None:
            bounds.append(f"at most {maximum:g}")
        raise HwpruneError(f"{name} must be {what}{' ' + ' and '.join(bounds) if bounds else ''}, got {value!r}")
    return value


def check_encoding(enc, num_choices, owner: str = "the space", names=None) -> tuple[int, ...]:
    """``enc`` as a tuple of choice indices, one per prunable group, each in range; else an
    :class:`EncodingError` naming the entry (``names``: the groups', for the message)."""
    if isinstance(enc, (str, bytes)) or not hasattr(enc, "__iter__"):
        raise EncodingError(f"an encoding is a sequence of choice indices, one per prunable group; got "
                            f"{type(enc).__name__} {enc!r:.40}")
    raw = list(enc)
    for i, v in enumerate(raw):
        if isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "__index__") \
                or not float(v).is_integer():
            raise EncodingError(f"encoding entry {i} is {v!r}: an encoding holds choice indices (integers); for "
                                f"a width ratio use space.uniform(ratio)")
    out = tuple(int(v) for v in raw)
    if len(out) != len(num_choices):
        raise EncodingError(f"encoding has {len(out)} entries but {owner} has {len(num_choices)} prunable groups")
    for i, (v, n) in enumerate(zip(out, num_choices)):
        if not 0 <= v < n:
            group = f" (group {names[i]!r})" if names else ""
            raise EncodingError(f"encoding entry {i}{group} is {v}; it must be in 0..{n - 1}")
    return out
