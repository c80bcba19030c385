"""Progress on long work: a tqdm bar on a terminal, a line every few seconds elsewhere (a log file, CI).

A job that runs for minutes must never look hung: where stderr is not a terminal, a
:class:`Progress` writes ``desc: done/total unit, elapsed, ETA`` at most every
``every`` seconds, and once at the end. ``quiet`` silences both.
"""
from __future__ import annotations

import sys
import time
from typing import Callable

__all__ = ["Progress", "progress"]


class Progress:
    """Counts work done; see the module docstring."""

    def __init__(self, total: float, desc: str, *, unit: str = "entry", quiet: bool = False, every: float = 10.0,
                 write: Callable[[str], None] | None = None, tty: bool | None = None):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.done, self.started = 0.0, time.perf_counter()
        self._last = self.started
        tty = sys.stderr.isatty() if tty is None else tty
        self._write = write or (lambda s: print(s, file=sys.stderr, flush=True))
        self._bar = None
        self._lines = not quiet and not tty
        if not quiet and tty:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True,
                             bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}, {rate_fmt}]")

    def update(self, n: float = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._lines and time.perf_counter() - self._last >= self.every:
            self._line()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._lines and self.done:
            self._line()
        self._lines = False

    def _line(self) -> None:
        now = time.perf_counter()
        self._last = now
        elapsed = now - self.started
        eta = elapsed / self.done * (self.total - self.done) if 0 < self.done < self.total else 0.0
        units = self.unit if self.unit.endswith("s") or self.total == 1 else (
            self.unit[:-1] + "ies" if self.unit.endswith("y") else self.unit + "s")
        self._write(f"{self.desc}: {self.done:.0f}/{self.total:.0f} {units}, {elapsed:.0f} s"
                    + (f", about {eta:.0f} s left" if eta else ""))

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: float, desc: str, quiet: bool = False, unit: str = "entry") -> Progress:
    return Progress(total, desc, unit=unit, quiet=quiet)
