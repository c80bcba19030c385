"""The store of measured kernels: what makes profiling resumable and shared across models.

One CSV per backend fingerprint (backend, device name, threads, dtype, runtime
versions, options) holds every kernel variant measured with it, for any model.
``profile`` skips what the store already has, so identical kernels are measured
once across layers and across models, and an interrupted profile resumes where it
stopped. The file is rewritten atomically every few seconds and at the end. It also
keeps the quietest times of the reference kernel seen with this setting (the
*anchors* every measurement is judged against, see :mod:`hwprune.profilers.base`),
and each entry's anchor at the time, so entries measured before a quieter state was
found can be measured again.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pandas as pd

from ..errors import HwpruneError
from ..profilers.spec import SPEC_COLUMNS, KernelSpec, Measurement
from ..files.csvmeta import read_csv, write_csv

__all__ = ["KernelStore", "default_cache_dir", "fingerprint_hash"]

FORMAT = "hwprune.kernels/1"
STAT_COLUMNS = ["p10_ms", "median_ms", "p90_ms", "runs", "reference_ms"]


def default_cache_dir() -> Path:
    """``$HWPRUNE_CACHE``, else ``$XDG_CACHE_HOME/hwprune/kernels``, else ``~/.cache/hwprune/kernels``."""
    if os.environ.get("HWPRUNE_CACHE"):
        return Path(os.environ["HWPRUNE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hwprune" / "kernels"


def fingerprint_hash(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]


class KernelStore:
    """Measured kernel variants of one backend fingerprint, keyed by (spec, cin, cout)."""

    def __init__(self, folder: str | os.PathLike, fingerprint: dict, save_every_s: float = 5.0):
        self.fingerprint = fingerprint
        self.path = Path(folder) / f"{fingerprint['backend']}-{fingerprint_hash(fingerprint)}.csv"
        self.save_every_s = save_every_s
        self.rows: dict[tuple[str, int, int], dict] = {}
        self.anchors: dict = {}  # quietest reference-kernel times seen with this backend setting (ms)
        self._dirty, self._saved_at = False, time.monotonic()
        if self.path.exists():
            meta, frame = read_csv(self.path, "kernel store")
            if meta.get("format") != FORMAT or meta.get("fingerprint") != fingerprint:
                raise HwpruneError(f"kernel store {str(self.path)!r} belongs to another backend setting; "
                                   f"delete it or use another cache folder")
            self.anchors.update(meta.get("anchors", {}))
            for row in frame.to_dict("records"):
                spec = KernelSpec.from_row(row)
                self.rows[(spec.key(), int(row["cin"]), int(row["cout"]))] = row

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, spec: KernelSpec, cin: int, cout: int) -> Measurement | None:
        row = self.rows.get((spec.key(), cin, cout))
        if row is None:
            return None
        return Measurement(float(row["p10_ms"]), float(row["median_ms"]), float(row["p90_ms"]), int(row["runs"]),
                           str(row.get("backend_kernels", "")), float(row.get("reference_ms") or 0.0))

    def missing(self, spec: KernelSpec, pairs) -> list[tuple[int, int]]:
        key = spec.key()
        return [p for p in pairs if (key, p[0], p[1]) not in self.rows]

    def stale(self, tolerance: float) -> list[tuple[str, int, int]]:
        """Entries selected against a quiet reference more than ``tolerance`` slower than the quietest now."""
        best = self.anchors.get("kernel_ref_ms")
        if not best:
            return []
        return [k for k, r in self.rows.items() if float(r.get("reference_ms") or 0) > (1 + tolerance) * best]

    def drop(self, keys) -> None:
        for k in keys:
            self.rows.pop(k, None)
        self._dirty = True

    def add(self, spec: KernelSpec, pairs, measurements: list[Measurement]) -> None:
        base = spec.to_row()
        for (cin, cout), m in zip(pairs, measurements):
            self.rows[(spec.key(), cin, cout)] = {
                **base, "cin": cin, "cout": cout, "p10_ms": m.p10_ms, "median_ms": m.median_ms,
                "p90_ms": m.p90_ms, "runs": m.runs, "reference_ms": m.reference_ms, "backend_kernels": m.note,
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self._dirty = True
        if time.monotonic() - self._saved_at >= self.save_every_s:
            self.save()

    def save(self, force: bool = False) -> None:
        if not (self._dirty or force):
            return
        columns = SPEC_COLUMNS + ["cin", "cout"] + STAT_COLUMNS + ["backend_kernels", "measured_at"]
        frame = pd.DataFrame(list(self.rows.values()), columns=columns)
        anchors = {k: v for k, v in self.anchors.items() if not k.startswith("_")}  # "_": this session only
        meta = {"format": FORMAT, "fingerprint": self.fingerprint, "anchors": anchors}
        write_csv(self.path, meta, frame, "hwprune kernel store")
        self._dirty, self._saved_at = False, time.monotonic()
