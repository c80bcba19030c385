"""``profile(space, ...)``: measure every kernel a space's networks can run, then calibrate.

1. The space's kernels (:mod:`.kernels`) and every (cin, cout) each can take; kernels
   with the same spec share rows, so a width measured for one layer serves all.
2. What the kernel store (:mod:`.store`) lacks is measured, chunk by chunk, with a
   progress bar; the store is saved as it goes, so a rerun after an interruption
   (or for another model with the same kernels) skips what is measured.
3. A few whole networks (full width, uniform 0.5, random ones; 16 by default) are measured
   end to end and the table's overhead (and scale, where it clearly helps) is fitted
   on them (:mod:`.calibration`); the FLOPs predictor's ms-per-GFLOP comes from the
   same networks, so the two predictors are calibrated on the same data.
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import HwpruneError, check_number
from ..progress import Progress
from ..profilers.base import Profiler
from ..profilers.registry import get_profiler
from ..profilers.protocol import QUIET_TOLERANCE, chunked
from ..profilers.spec import SPEC_COLUMNS, STATISTICS
from .calibration import fit_calibration, recalibrate
from .kernels import kernel_slots, slot_pairs
from .layouts import layout_edges, reorder_specs, tensor_widths
from .store import KernelStore, default_cache_dir
from .table import COLUMNS, FORMAT, LatencyTable
from .table_space import space_meta

if TYPE_CHECKING:
    from ..core.space import SearchSpace

__all__ = ["profile", "calibration_encodings", "progress_bar"]


def progress_bar(total: float, desc: str, quiet: bool, unit: str = "entry") -> Progress:
    """A bar on a terminal, a line every few seconds elsewhere, nothing when ``quiet``."""
    return Progress(total, desc, unit=unit, quiet=quiet)


def calibration_encodings(space: "SearchSpace", n: int, seed: int) -> list[tuple[int, ...]]:
    """Full width and uniform 0.5, then random encodings: ``n`` distinct ones.

    Mostly random: the search ranks random-like candidates, and on mobilenet_v2 the
    residual (measured - sum of lookups) of extreme networks (full width, uniform
    0.25) sits 0.2-0.3 ms from that of random ones. In a space that may drop residual
    blocks, uniform 0.5 with every block dropped too, and every other random network
    drops a number of blocks drawn from 1 to all of them, so that what a dropped block
    costs beyond its kernels' lookups (``block_ms``, :mod:`.calibration`) is fitted over
    every number of blocks a search may drop, not extrapolated from the one or two that
    uniform draws drop (mobilenet_v2_cifar on a 2-core Xeon: each dropped block moved
    measured - lookups by about +13 us, and a table fitted on networks dropping 0-2 blocks
    predicted the network dropping all ten below zero).
    """
    rng = np.random.default_rng(seed)
    fixed = [space.full(), space.uniform(0.5)]
    drops = sorted(space.branches)
    if drops:
        fixed.append(tuple(0 if i in space.branches else v for i, v in enumerate(space.uniform(0.5))))
    out = list(dict.fromkeys(fixed))[:n]
    tries = 0
    while len(out) < n and tries < 100 * n:
        enc = space.sample(rng)
        if drops and len(out) % 2:
            gone = set(rng.choice(drops, int(rng.integers(1, len(drops) + 1)), replace=False).tolist())
            enc = tuple(0 if i in gone else v for i, v in enumerate(enc))
        tries += 1
        if enc not in out:
            out.append(enc)
    return out


def profile(space: "SearchSpace", backend: str = "onnxruntime", device: str = "cpu", threads: int = 1,
            batch_size: int = 1, dtype: str = "float32", out: str | os.PathLike | None = None,
            cache_dir: str | os.PathLike | None = None, statistic: str = "p10", repeats: int = 25,
            warmup: int = 3, calibrate: int = 16, passes: int = 5, runs_per_pass: int = 10, seed: int = 0,
            options: dict | None = None, interpolate: bool = False, quiet: bool = False,
            profiler: Profiler | None = None, calibration: str = "auto") -> LatencyTable:
    """Measure the latency table of ``space`` on a backend (see the module docstring).

    ``statistic``: which of p10 / median / p90 the table predicts with (all three
    are recorded). p10 is the default because on a machine shared with other jobs it
    is the one two measurements of the same network agree on; every end-to-end
    measurement (calibration, validation) uses the same statistic.
    ``cache_dir``: the kernel store folder (default: :func:`~.store.default_cache_dir`).
    ``calibration``: "auto", "constant", "affine" or "proportional" (:func:`~.calibration.fit_calibration`).
    Where the calibration predicts 0 ms or less for the narrowest network the kernels are timed once more; where
    it still does, "auto" falls back to the proportional model (its reason under ``meta["calibration"]
    ["fallback"]``) and the others refuse.
    """
    if statistic not in STATISTICS:
        raise HwpruneError(f"statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
    if calibrate < 1:
        raise HwpruneError("calibrate must be at least 1 network (the overhead is fitted on them)")
    for name, value in (("threads", threads), ("batch_size", batch_size), ("repeats", repeats), ("passes", passes),
                        ("runs_per_pass", runs_per_pass)):
        check_number(name, value, integer=True, minimum=1, inclusive=True)
    check_number("warmup", warmup, integer=True, inclusive=True)
    profiler = profiler or get_profiler(backend, device, threads=threads, batch_size=batch_size, dtype=dtype,
                                        repeats=repeats, warmup=warmup, options=dict(options or {}))
    started = time.time()
    # kernels are timed with as many weights competing for the cache as the widest network has (a backend that
    # sizes its chunks to them: the fingerprint below then names the size)
    profiler.size_chunks(int(space.params(space.full())))
    slots, unmodelled = kernel_slots(space, profiler.batch_size, profiler.dtype)
    needed: dict[str, tuple] = {}
    for slot in slots:
        spec, pairs = needed.get(slot.spec.key(), (slot.spec, set()))
        needed[spec.key()] = (spec, pairs | slot_pairs(space, slot))
    edges = layout_edges(space, profiler.batch_size, profiler.dtype)
    if profiler.layout():  # the runtime copies tensors between layouts: those reorders are kernels too
        for edge in edges:
            widths = tensor_widths(space, edge["terms"])
            for spec in reorder_specs(edge, profiler.batch_size, profiler.dtype).values():
                _, pairs = needed.get(spec.key(), (spec, set()))
                needed[spec.key()] = (spec, pairs | {(c, c) for c in widths})
    store = KernelStore(cache_dir or default_cache_dir(), profiler.fingerprint())
    profiler.anchors = store.anchors  # one quiet reference for every session with this backend setting
    todo = [(spec, store.missing(spec, sorted(pairs))) for spec, pairs in needed.values()]
    total = sum(len(p) for _, p in todo)
    kernel_s = _measure(todo, store, profiler, f"profile {type(space.model).__name__}", quiet)
    # entries judged against a quiet reference that later turned out >10% slower: measure them once more
    stale = set(store.stale(QUIET_TOLERANCE))
    redo = [(spec, [p for p in sorted(pairs) if (spec.key(),) + p in stale]) for spec, pairs in needed.values()]
    redo = [(spec, pairs) for spec, pairs in redo if pairs]
    if redo:
        kernel_s += _remeasure(redo, store, profiler, "re-measure", quiet)
    from ..version import __version__

    meta = {
        "format": FORMAT, "hwprune": __version__, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "backend": profiler.fingerprint(), "statistic": statistic,
        "protocol": {"kernel_repeats": profiler.repeats, "kernel_warmup": profiler.warmup,
                     "network_passes": passes, "network_runs_per_pass": runs_per_pass},
        "calibration": {"overhead_ms": 0.0},
        "space": space_meta(space, profiler.batch_size, slots, unmodelled, edges),
    }
    calibration_s = 0.0
    for attempt in (1, 2):
        entries = _entries(needed, store)
        t = time.perf_counter()
        uncalibrated = LatencyTable(entries, dict(meta, calibration={"overhead_ms": 0.0}), interpolate=interpolate)
        meta["calibration"] = calibrate_table(uncalibrated, space, profiler, calibrate, passes, runs_per_pass, seed,
                                              quiet, calibration)
        calibration_s += time.perf_counter() - t
        floor = LatencyTable(entries, meta, interpolate=interpolate).predict(space.narrowest())
        if floor > 0:
            break
        if attempt == 2 and calibration == "auto":
            # timed twice, the kernels still sum to more than whole networks take by more than the narrowest one's
            # kernels: kernels cost a share more alone than inside a network here (tiny kernels), which a constant
            # cannot carry to every width and a share can (.calibration's module docstring)
            table = recalibrate(LatencyTable(entries, meta, interpolate=interpolate), "auto")
            meta["calibration"] = table.meta["calibration"]
            break
        if attempt == 2:
            store.save(force=True)
            raise HwpruneError(
                f"the latency table predicts {floor:.4f} ms for the narrowest network even with its kernels timed "
                f"twice (calibrated overhead {meta['calibration']['overhead_ms']:+.4f} ms): the machine's speed "
                f"changed between timing the kernels and the whole networks, or its kernels are too small to time "
                f"alone: profile again when it is quiet, let each measurement wait longer for it "
                f"(HWPRUNE_MAX_WAIT_S), or calibrate with auto or proportional (a share of the kernels' sum)")
        # the kernels' sum exceeds what whole networks take by more than the narrowest network's own kernels: they
        # were timed while the machine ran slower than when the networks were. Time them again, once, and calibrate
        redo = [(spec, sorted(pairs)) for spec, pairs in needed.values()]
        kernel_s += _remeasure(redo, store, profiler, "re-measure (the kernels disagree with whole networks)", quiet)
    meta["anchors"] = {k: v for k, v in store.anchors.items() if not k.startswith("_")}
    store.save(force=True)  # the calibration may have found a quieter probe
    table = LatencyTable(entries, meta, interpolate=interpolate)
    meta["profiling"] = {"entries": len(entries), "measured": total, "reused": len(entries) - total,
                         "re_measured": sum(len(p) for _, p in redo),
                         "kernel_seconds": round(kernel_s, 1),
                         "calibration_seconds": round(calibration_s, 1),
                         "total_seconds": round(time.time() - started, 1),
                         "entries_per_second": round(total / kernel_s, 1) if kernel_s > 0 else None}
    if out is not None:
        table.save(out)
    return table


def _entries(needed: dict, store: KernelStore) -> pd.DataFrame:
    """The table's rows: every (spec, cin, cout) ``needed`` asks for, as the store holds it."""
    rows = []
    for spec, pairs in needed.values():
        base = spec.to_row()
        for cin, cout in sorted(pairs):
            m = store.get(spec, cin, cout)
            rows.append({**base, "cin": cin, "cout": cout, "p10_ms": m.p10_ms, "median_ms": m.median_ms,
                         "p90_ms": m.p90_ms, "runs": m.runs, "backend_kernels": m.note})
    return pd.DataFrame(rows, columns=SPEC_COLUMNS + ["cin", "cout", "p10_ms", "median_ms", "p90_ms", "runs",
                                                      "backend_kernels"])[COLUMNS]


def _remeasure(todo, store: KernelStore, profiler: Profiler, desc: str, quiet: bool) -> float:
    """Drop ``todo``'s (spec, pairs) from the store and measure them again; seconds spent measuring."""
    store.drop([(spec.key(),) + p for spec, pairs in todo for p in pairs])
    return _measure(todo, store, profiler, desc, quiet)


def _measure(todo, store: KernelStore, profiler: Profiler, desc: str, quiet: bool) -> float:
    """Measure (spec, pairs) chunk by chunk into the store; seconds spent measuring."""
    seconds = 0.0
    bar = progress_bar(sum(len(p) for _, p in todo), desc, quiet)
    try:
        for spec, pairs in todo:
            for chunk in chunked(pairs, spec, *profiler.chunk_limits()):
                t = time.perf_counter()
                store.add(spec, chunk, profiler.measure_kernels(spec, chunk))
                seconds += time.perf_counter() - t
                bar.update(len(chunk))
    finally:
        bar.close()
        store.save()  # what was measured survives an interruption
    return seconds


def calibrate_table(table: LatencyTable, space: "SearchSpace", profiler: Profiler, n: int, passes: int,
                    runs_per_pass: int, seed: int, quiet: bool = False, model: str = "auto") -> dict:
    """Measure ``n`` networks end to end; the calibration and the FLOPs rate that fit them best."""
    encs = calibration_encodings(space, n, seed)
    bar = progress_bar(len(encs), "calibrate", quiet, unit="net")
    try:
        models = [space.materialize(e) for e in encs]
        measured = profiler.measure_networks(models, space.input_shapes[0], passes=passes,
                                             runs_per_pass=runs_per_pass, seed=seed, progress=bar.update)
    finally:
        bar.close()
    ms = np.array([m.value(table.statistic) for m in measured])
    lookups = table.kernel_sum_batch(np.array(encs))
    flops = space.flops_batch(np.array(encs)).astype(np.float64) * profiler.batch_size
    return {
        **fit_calibration(ms, lookups, model, table.dropped_batch(np.array(encs))),
        "flops_ms_per_gflop": float(np.median(ms / (flops / 1e9))),
        "networks": [{"encoding": list(map(int, e)), "measured_ms": round(float(m), 5),
                      "lookup_sum_ms": round(float(l), 5), "flops": int(f)}
                     for e, m, l, f in zip(encs, ms, lookups, flops)],
    }
