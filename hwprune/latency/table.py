"""LatencyTable: measured kernel latencies of one space on one backend, and the predictor over them.

``predict(enc)`` is ``overhead + scale * sum``: the sum, over the network's kernels
(see :mod:`.kernels`), of the measured latency of each kernel at the widths ``enc``
gives it, calibrated (:mod:`.calibration`) on whole networks measured at profile
time. The overhead holds the session call, layout reorders at the network's ends and
ops that cost the same at every width; ``scale`` is 1 unless kernels measurably cost
more inside a network than alone (several threads on a small CPU).

For speed the lookups are compiled once: each kernel's latency depends on the
choices of at most a few groups, so it becomes a small dense array indexed by those
choice indices; a prediction is a few integer products and one gather per kernel,
vectorised over many encodings in :meth:`LatencyTable.predict_batch`.

The file is a CSV (one row per measured kernel variant, full column names) with a
metadata block: backend fingerprint (backend, device name, threads, batch, dtype,
runtime versions), date, statistic, calibration, and the space's fingerprint and
kernels. Loading checks it against the space and the machine it is used on.
"""
from __future__ import annotations

import itertools
import math
import os
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from ..errors import EncodingError, HwpruneError, SpaceMismatchError, check_encoding
from ..profilers.machine import cpu_name, version_of
from ..profilers.onnxruntime import HISTORIC_CHUNK_KB
from ..profilers.spec import SPEC_COLUMNS, KernelSpec
from ..files.csvmeta import read_csv, write_csv
from .interpolate import Interpolator
from .kernels import Slot, kernel_slots
from .layouts import edge_groups, edge_time
from .table_space import saved_key, space_difference, space_key, space_meta

if TYPE_CHECKING:
    from ..core.space import SearchSpace

__all__ = ["LatencyTable", "TableMismatchError", "MissingEntryError", "space_key"]

FORMAT = "hwprune.latency/1"
COLUMNS = ["op", "cin", "cout", "kernel", "stride", "groups", "height", "width", "batch", "dtype", "median_ms",
           "p10_ms", "p90_ms", "runs", "padding", "dilation", "bias", "batchnorm", "activation", "residual",
           "residual_activation", "backend_kernels"]


class TableMismatchError(SpaceMismatchError):
    """The table was measured for another space, backend or device."""


class MissingEntryError(HwpruneError, LookupError):
    """A kernel width the table has no measurement for (and interpolation is off)."""


_OVERRIDE = "--allow-mismatch (allow_mismatch=True in Python)"
# backend settings a fingerprint names only where they differ from what tables were measured with before
UNRECORDED = {"chunk_kb": HISTORIC_CHUNK_KB}


class LatencyTable:
    """Kernel latencies + calibrated overhead of one space on one backend; see the module docstring."""

    def __init__(self, entries: pd.DataFrame, meta: dict, interpolate: bool = False):
        self.entries = _normalize(entries).reset_index(drop=True)
        self.meta = meta
        self.interpolate = interpolate
        self.statistic = meta.get("statistic", "p10")
        self.overhead_ms = float(meta.get("calibration", {}).get("overhead_ms", 0.0))
        self.scale = float(meta.get("calibration", {}).get("scale", 1.0))  # tables before the affine model: 1
        # what a dropped residual block saves beyond its kernels (hwprune.latency.calibration); 0 where none drop
        self.block_ms = float(meta.get("calibration", {}).get("block_ms", 0.0))
        self._compile()

    # ---- identity -----------------------------------------------------------------------------
    @property
    def backend(self) -> dict:
        return self.meta["backend"]

    @property
    def space_key(self) -> str:
        return saved_key(self.meta["space"], self.backend["batch"])

    def __repr__(self) -> str:
        b = self.backend
        return (f"LatencyTable({self.meta['space']['model']}, {b['backend']} on {b['device_name']}, "
                f"{b['threads']} threads, batch {b['batch']}, {len(self.entries)} entries, "
                f"overhead {self.overhead_ms:.3f} ms" + (f", scale {self.scale:.3f})" if self.scale != 1 else ")"))

    # ---- lookups ------------------------------------------------------------------------------
    def lookup(self, spec: KernelSpec, cin: int, cout: int) -> float:
        """Measured latency (ms, the table's statistic) of one kernel variant."""
        v = self._entry(spec, int(cin), int(cout))
        if math.isnan(v):
            raise MissingEntryError(f"no latency entry for {spec.op} {spec.key()} at cin={cin}, cout={cout}; "
                                    f"profile this space, or load the table with interpolate=True")
        return v

    def slots(self) -> list[Slot]:
        return [Slot(name, self._specs[key], tuple(map(tuple, cin)), tuple(map(tuple, cout)))
                for name, key, cin, cout in self.meta["space"]["slots"]]

    def breakdown(self, enc: Sequence[int]) -> dict[str, float]:
        """Latency (ms) of every kernel of the network under ``enc``, by kernel name, as measured alone:
        ``predict(enc) == overhead_ms + scale * sum(breakdown(enc).values()) - block_ms * dropped_blocks``."""
        enc = self._check(enc)
        widths = np.array(self.meta["space"]["base_widths"], dtype=np.int64)
        widths[self._prunable] = [c[e] for c, e in zip(self._choices, enc)]
        out = {}
        for slot in self.slots():
            cin = sum(int(widths[g]) * m for g, m in slot.cin)
            cout = sum(int(widths[g]) * m for g, m in slot.cout)
            out[slot.name] = self.lookup(slot.spec, cin, cout)
        for edge in self._edges():  # the layout copies between kernels (see latency.layouts)
            ms = self._reorder_time(edge, widths, self.lookup)
            if ms:
                out[f"reorder of {edge['name']}"] = ms
        return out

    def predict(self, enc: Sequence[int]) -> float:
        """Predicted latency (ms) of the network under ``enc``: overhead + scale * sum of kernel lookups (less
        ``block_ms`` per dropped residual block)."""
        try:
            return self._predict(enc)
        except (TypeError, IndexError, ValueError):  # not a valid encoding: said in one line
            return self._predict(self._check(enc))

    def narrowest(self) -> tuple[int, ...]:
        """The narrowest network of the space the table indexes: every group at its first (least) choice."""
        return (0,) * len(self._choices)

    def _predict(self, enc) -> float:
        if len(enc) != len(self._n_list) or not all(0 <= v < n for v, n in zip(enc, self._n_list)):
            enc = self._check(enc)  # raises, naming the bad entry
        flat, total = self._flat_list, self._const
        for o, a, sa, b, sb in self._py_two:  # most kernels: one width group in, one out
            total += flat[o + enc[a] * sa + enc[b] * sb]
        for o, a, sa in self._py_one:
            total += flat[o + enc[a] * sa]
        for offset, dims in self._py_more:
            i = offset
            for d, s in dims:
                i += enc[d] * s
            total += flat[i]
        if total != total:  # NaN: some kernel width has no entry
            self._raise_missing(np.asarray([enc]))
        ms = float(self.overhead_ms + self.scale * total)
        return ms - self.block_ms * sum(enc[d] == 0 for d in self._drop_cols) if self.block_ms else ms

    def predict_batch(self, encs) -> np.ndarray:
        """Predicted latency (ms) of many encodings: ``encs`` is (N, groups) of choice indices."""
        ms = self.overhead_ms + self.scale * self.kernel_sum_batch(encs)
        return ms - self.block_ms * self.dropped_batch(encs) if self.block_ms else ms

    def dropped_batch(self, encs) -> np.ndarray:
        """How many residual blocks each encoding drops (width 0 of a group that may drop its branch), (N,)."""
        encs = np.asarray(encs, dtype=np.int64).reshape(-1, len(self._choices))
        return (encs[:, self._drop_cols] == 0).sum(1) if self._drop_cols else np.zeros(len(encs), dtype=np.int64)

    def kernel_sum_batch(self, encs) -> np.ndarray:
        """Sum of the kernel lookups (ms, uncalibrated) of many encodings, (N, groups) -> (N,)."""
        try:
            encs = np.asarray(encs, dtype=np.int64)
        except (TypeError, ValueError):
            raise EncodingError(f"expected encodings of shape (N, {len(self._choices)}) of choice indices, got "
                                f"{type(encs).__name__}") from None
        if encs.ndim != 2 or encs.shape[1] != len(self._choices):
            raise EncodingError(f"expected encodings of shape (N, {len(self._choices)}), got {encs.shape}")
        if ((encs < 0) | (encs >= self._n_choices)).any():
            bad = int(np.argwhere((encs < 0) | (encs >= self._n_choices))[0][1])
            raise EncodingError(f"choice out of range for group {bad} (0..{self._n_choices[bad] - 1})")
        padded = np.concatenate([encs, np.zeros((len(encs), 1), np.int64)], axis=1)  # last column: no group
        idx = np.broadcast_to(self._offsets, (len(encs), len(self._offsets))).copy()  # (N, kernels)
        for j in range(self._dims.shape[1]):  # a kernel depends on at most a few groups
            idx += padded[:, self._dims[:, j]] * self._strides[:, j]
        total = self._flat.take(idx).sum(1)
        if np.isnan(total).any():
            self._raise_missing(encs[np.isnan(total)][:1])
        return total

    # ---- checks -------------------------------------------------------------------------------
    def check(self, space: "SearchSpace | None" = None, expect: dict | None = None, check_device: bool = True) -> None:
        """Refuse (one line) a table for another space, backend setting or machine."""
        b = self.backend
        if space is not None and space_key(space, b["batch"]) != self.space_key:
            raise TableMismatchError(
                f"this latency table was profiled for another space: {space_difference(self.meta['space'], space)}; "
                f"profile this space, or reuse the table deliberately with {_OVERRIDE}")
        for k, want in (expect or {}).items():
            have = b.get(k, UNRECORDED.get(k))
            if want is not None and str(have) != str(want):
                raise TableMismatchError(f"this latency table was measured with {k}={have!r}, not {want!r}; "
                                         f"use a table for {k}={want!r} or pass {_OVERRIDE}")
        if check_device:
            here = current_device_name(b["device"])
            if here is not None and here != b["device_name"]:
                raise TableMismatchError(f"this latency table was measured on {b['device_name']!r}, this machine "
                                         f"is {here!r}; a table belongs to the machine it was measured on: profile "
                                         f"here, or reuse it with {_OVERRIDE}")
            runtime, version = next(iter(b.get("versions", {}).items()), (None, None))
            now = version_of(runtime) if runtime else None
            if version and now and _minor(now) != _minor(version):
                raise TableMismatchError(f"this latency table was measured with {runtime} {version}, this machine "
                                         f"has {now}; profile again, or reuse it with {_OVERRIDE}")

    # ---- files --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the CSV + metadata atomically."""
        write_csv(path, self.meta, self.entries[COLUMNS], "hwprune latency table")

    @classmethod
    def load(cls, path: str | os.PathLike, space: "SearchSpace | None" = None, expect: dict | None = None,
             check_device: bool = True, allow_mismatch: bool = False, interpolate: bool = False) -> "LatencyTable":
        """Read a table; refused for another ``space``/``expect``ed setting/machine unless ``allow_mismatch``.

        With ``allow_mismatch`` and a ``space`` of other structure, the table's
        entries are rebound to that space (see :meth:`bind`).
        """
        meta, frame = read_csv(path, "latency table")
        if meta.get("format") != FORMAT:
            raise HwpruneError(f"{str(path)!r} is not a hwprune latency table (expected format {FORMAT!r})")
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise HwpruneError(f"latency table {str(path)!r} lacks columns {missing}")
        needed = frame[[c for c in COLUMNS if c != "backend_kernels"]]
        blank = (needed.isna() | (needed.astype(str).apply(lambda col: col.str.strip()) == "")).any(axis=1)
        if blank.any():  # a row cut short (an interrupted copy) or edited: refused even if no network reads it
            raise HwpruneError(f"latency table {str(path)!r} has a row with empty fields (data row "
                               f"{int(blank.to_numpy().argmax()) + 1}); the file is damaged: profile again")
        try:
            entries = _normalize(frame)
        except (ValueError, TypeError) as e:
            raise HwpruneError(f"latency table {str(path)!r} has a value that is not a number "
                               f"({str(e).splitlines()[0]}); the file is damaged: profile again") from None
        times = entries[["median_ms", "p10_ms", "p90_ms"]].to_numpy()
        if not np.isfinite(times).all() or (times < 0).any():
            raise HwpruneError(f"latency table {str(path)!r} holds negative or non-finite times; the file is "
                               f"damaged or edited: profile again")
        try:
            table = cls(entries, meta, interpolate=interpolate)
        except (ValueError, TypeError, KeyError, AttributeError) as e:  # a row or the metadata cut short or edited
            raise HwpruneError(f"latency table {str(path)!r} is damaged ({type(e).__name__}: "
                               f"{(str(e).splitlines() or [''])[0][:120]}); profile again") from None
        if not allow_mismatch:
            table.check(space, expect, check_device)
        elif space is not None and space_key(space, table.backend["batch"]) != table.space_key:
            return table.bind(space)
        return table.for_space(space) if space is not None else table

    def for_space(self, space: "SearchSpace") -> "LatencyTable":
        """This table indexed by ``space``'s choices: itself, or bound to ``space`` where it is the same space with
        or without width 0 (a residual block dropped: no kernel), so that one table serves both."""
        if [list(g.choices) for g in space.groups] == [list(c) for c in self.meta["space"]["choices"]]:
            return self
        return self.bind(space)

    def bind(self, space: "SearchSpace") -> "LatencyTable":
        """The same measurements used for another space of this backend (its kernels may lack entries)."""
        slots, unmodelled = kernel_slots(space, self.backend["batch"], self.backend["dtype"])
        meta = dict(self.meta, space=space_meta(space, self.backend["batch"], slots, unmodelled))
        return LatencyTable(self.entries, meta, self.interpolate)

    # ---- compilation --------------------------------------------------------------------------
    def _compile(self) -> None:
        stat = f"{self.statistic}_ms"
        keys = [KernelSpec.from_row(r) for r in self.entries[SPEC_COLUMNS].to_dict("records")]
        self._specs = {s.key(): s for s in keys}
        self._values = {(s.key(), int(a), int(b)): float(v)
                        for s, a, b, v in zip(keys, self.entries["cin"], self.entries["cout"], self.entries[stat])}
        sm = self.meta["space"]
        for _, key, _, _ in sm["slots"]:
            self._specs.setdefault(key, KernelSpec.from_row(dict(zip(SPEC_COLUMNS, key.split("|")))))
        self._prunable = np.array(sm["prunable"], dtype=np.int64)
        self._choices = [tuple(c) for c in sm["choices"]]
        self._n_choices = np.array([len(c) for c in self._choices], dtype=np.int64)
        self._drop_cols = [i for i, c in enumerate(self._choices) if c[0] == 0]  # groups that may drop their block
        position = {g: i for i, g in enumerate(sm["prunable"])}
        base = sm["base_widths"]
        flat, offsets, dims, strides, py_slots = [], [], [], [], []
        # every kernel, then every tensor's layout reorders: each a time per combination of the widths it depends on
        units = [(slot.groups(), lambda w, slot=slot: self._entry(slot.spec, sum(w[g] * m for g, m in slot.cin),
                                                                 sum(w[g] * m for g, m in slot.cout)))
                 for slot in self.slots()]
        units += [(edge_groups(edge), lambda w, edge=edge: self._reorder_time(edge, w)) for edge in self._edges()]
        for groups, value in units:
            ds = [position[g] for g in groups if g in position]
            shape = [len(self._choices[d]) for d in ds]
            st = [int(np.prod(shape[i + 1:])) for i in range(len(ds))]
            offsets.append(len(flat))
            for combo in itertools.product(*(range(n) for n in shape)):
                w = {g: base[g] for g in groups}
                for d, c in zip(ds, combo):
                    w[sm["prunable"][d]] = self._choices[d][c]
                flat.append(value(w))
            dims.append(ds)
            strides.append(st)
            py_slots.append((offsets[-1], tuple(zip(ds, st))))
        width = max([1] + [len(d) for d in dims])
        none = len(self._choices)  # the zero column predict_batch appends
        self._dims = np.array([d + [none] * (width - len(d)) for d in dims], dtype=np.int64).reshape(-1, width)
        self._strides = np.array([s + [0] * (width - len(s)) for s in strides], dtype=np.int64).reshape(-1, width)
        self._offsets = np.array(offsets, dtype=np.int64)
        self._flat = np.array(flat, dtype=np.float64)
        self._flat_list = flat
        self._n_list = [len(c) for c in self._choices]
        self._const = sum(flat[o] for o, dims in py_slots if not dims)  # kernels no prunable width reaches
        self._py_two = [(o, d[0][0], d[0][1], d[1][0], d[1][1]) for o, d in py_slots if len(d) == 2]
        self._py_one = [(o, d[0][0], d[0][1]) for o, d in py_slots if len(d) == 1]
        self._py_more = [(o, d) for o, d in py_slots if len(d) > 2]

    def _entry(self, spec: KernelSpec, cin: int, cout: int) -> float:
        """A kernel's time, NaN where the table has no entry (and interpolation is off); 0 for a kernel with no
        channels in or out (it is in a dropped branch: :mod:`hwprune.core.branches`)."""
        if not cin or not cout:
            return 0.0
        v = self._values.get((spec.key(), cin, cout))
        if v is None and self.interpolate:
            v = self._interpolator(spec).estimate(cin, cout)
        return float("nan") if v is None else v

    def _edges(self) -> list:
        """The layout edges whose reorders this table adds (none without a blocked layout, or in older tables)."""
        return self.meta["space"].get("layout_edges", []) if self.backend.get("nchwc") else []

    def _reorder_time(self, edge: dict, widths, lookup=None) -> float:
        """The edge's reorders at ``widths``, their times from ``lookup`` (default: NaN where an entry is missing)."""
        b = self.backend
        return edge_time(edge, widths, b["nchwc"], b["batch"], b["dtype"], lookup or self._entry)

    def _interpolator(self, spec: KernelSpec) -> Interpolator:
        cache = self.__dict__.setdefault("_interpolators", {})
        if spec.key() not in cache:
            pts = {(a, b): v for (k, a, b), v in self._values.items() if k == spec.key()}
            cache[spec.key()] = Interpolator(spec, pts)
        return cache[spec.key()]

    def _check(self, enc: Sequence[int]) -> tuple[int, ...]:
        return check_encoding(enc, self._n_choices, owner="the table's space")

    def _raise_missing(self, encs: np.ndarray) -> None:
        self.breakdown(encs[0])  # raises MissingEntryError naming the kernel and widths
        raise MissingEntryError("a kernel width has no latency entry")  # not reached


def _normalize(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for c in ("cin", "cout", "height", "width", "batch", "runs"):
        frame[c] = frame[c].astype(np.int64)
    for c in ("median_ms", "p10_ms", "p90_ms"):  # to the ns: the CSV then round-trips exactly
        frame[c] = frame[c].astype(np.float64).round(6)
    for c in ("bias", "batchnorm", "residual"):
        frame[c] = frame[c].map(lambda v: v if isinstance(v, bool) else str(v).lower() in ("true", "1"))
    for c in ("op", "kernel", "stride", "groups", "padding", "dilation", "activation", "residual_activation",
              "dtype", "backend_kernels"):
        frame[c] = frame[c].astype(str)
    return frame


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def current_device_name(device: str) -> str | None:
    """The name this machine gives ``device`` (None when it cannot tell)."""
    if device == "cpu":
        return cpu_name()
    if device.startswith("cuda"):
        try:
            import torch

            if torch.cuda.is_available():
                index = int(device.split(":")[1]) if ":" in device else 0
                return torch.cuda.get_device_name(index)
        except Exception:  # no CUDA torch: nothing to compare with
            return None
    return None
