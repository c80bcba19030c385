"""The measurement protocol on a machine shared with other jobs.

Another job on a 2-core machine slows everything by up to 1.5x for seconds at a
time. A fixed reference kernel (:data:`REFERENCE`) is measured inside every kernel
chunk and around every network visit's timed runs; a run counts when the reference was
within :data:`QUIET_TOLERANCE` of its quietest time seen (the *anchors*, kept
across sessions by the kernel store), so tables, calibrations and validations all
measure the machine in the same, quiet state. Networks are interleaved: passes
over all of them in a fresh random order, so drift hits every network alike.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Iterable, Sequence

import numpy as np

from ..errors import HwpruneError
from .spec import KernelSpec, Measurement, summarize

__all__ = ["PROBE_RUNS", "QUIET_TOLERANCE", "REFERENCE", "quiet_runs", "interleaved", "chunked", "wait_for_quiet",
           "max_wait"]

QUIET_TOLERANCE = 0.10  # a probe within 10% of the quietest one seen means the machine is not disturbed
MAX_WAIT_S = 10.0  # how long to wait for a quiet machine before measuring anyway (flagged)
MAX_WAIT_ENV = "HWPRUNE_MAX_WAIT_S"  # overrides it where no wait is asked for: a CI box whose figures nobody judges

# probe runs before and after each network visit's timed runs (see interleaved)
PROBE_RUNS = 4
# measured inside every kernel chunk and around every network visit: its time says how fast the machine is
REFERENCE = KernelSpec("conv2d", (3, 3), (1, 1), (1, 1), (1, 1), "1", 32, 32, batchnorm=True, activation="relu")


def quiet_runs(kernel_ms: np.ndarray, ref_ms: np.ndarray, anchors: dict, min_runs: int
               ) -> tuple[np.ndarray, str, float]:
    """Kernel run times (runs x variants) from the runs the machine was quiet in, how, and the state (ms).

    A run is quiet when the reference kernel in it took at most QUIET_TOLERANCE more
    than its quietest time (``anchors["kernel_ref_ms"]``, updated here). With fewer
    than ``min_runs`` quiet runs every run is kept ("unverified"): scaling by the
    reference would be worse, since another job slows a kernel that streams from L3
    more than the reference, which fits in L2. The state returned, the reference's
    median over the kept runs, lets a later, quieter anchor flag the entry as stale.
    """
    best = float(np.percentile(ref_ms, 10))
    anchors["kernel_ref_ms"] = min(anchors.get("kernel_ref_ms", best), best)
    quiet = ref_ms <= (1 + QUIET_TOLERANCE) * anchors["kernel_ref_ms"]
    if quiet.sum() >= min_runs:
        return kernel_ms[quiet], f"{int(quiet.sum())}/{len(quiet)} quiet", float(np.median(ref_ms[quiet]))
    return kernel_ms, f"unverified, {int(quiet.sum())}/{len(quiet)} quiet", float(np.median(ref_ms))


def chunked(items: Sequence, spec: KernelSpec, max_items: int, max_bytes: int) -> Iterable[list]:
    """Split (cin, cout) pairs into chunks under a variant count and a weight-bytes budget."""
    chunk, size = [], 0
    for cin, cout in items:
        k = spec.kernel[0] * spec.kernel[1] if spec.op == "conv2d" else 1
        nbytes = 4 * (cout * (cin // max(1, spec.groups_for(cin))) * k if spec.op in ("conv2d", "linear") else cin)
        if chunk and (len(chunk) >= max_items or size + nbytes > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append((cin, cout))
        size += nbytes
    if chunk:
        yield chunk


def max_wait() -> float:
    """The longest wait for a quiet machine where none is given: :data:`MAX_WAIT_S`, or the environment's
    ``HWPRUNE_MAX_WAIT_S`` (seconds; 0 measures at once, every run still judged by the quiet-run filter)."""
    text = os.environ.get(MAX_WAIT_ENV, "").strip()
    if not text:
        return MAX_WAIT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise HwpruneError(f"{MAX_WAIT_ENV}={text!r} is not a number of seconds >= 0: set it to e.g. 0.5, or unset "
                           f"it for the default {MAX_WAIT_S:g}")
    return value


def wait_for_quiet(probe, anchors: dict, max_wait_s: float | None = None) -> bool:
    """Wait (sleeping) until a probe run is within QUIET_TOLERANCE of ``anchors["probe_ms"]``.

    Another job here alternates the machine between a quiet and a ~1.25x slower
    state for seconds at a time; measuring only in the quiet state is what makes a
    table and a later measurement agree. The first call sets the anchor from a
    second of probing (its p10); only whole visits of :func:`interleaved` lower it
    later, by their median probe: a single fast probe pair (measured: 0.086 ms
    against 0.095-0.097 ms in every quiet second after it) would leave a machine
    that never returns to it waiting on every measurement. False when the wait ran
    out without a quiet probe; each such miss halves the next wait, down to none
    once it is under 0.25 s (the machine is in a slower state that lasts: measure,
    and let the quiet-run filter judge), and each quiet probe restores it, so a
    machine that stays busy costs seconds, not hours (``anchors["_patience_s"]``).
    """
    if probe is None:
        return True
    max_wait_s = max_wait() if max_wait_s is None else max_wait_s
    max_wait_s = min(max_wait_s, anchors.get("_patience_s", max_wait_s))
    if "probe_ms" not in anchors:
        runs = [probe() for _ in range(5)]
        end = time.perf_counter() + 1.0
        while time.perf_counter() < end:
            runs.append(probe())
        anchors["probe_ms"] = float(np.percentile(runs, 10))
    deadline = time.perf_counter() + max_wait_s
    while True:
        p = min(probe(), probe())
        if p <= (1 + QUIET_TOLERANCE) * anchors["probe_ms"]:
            anchors["_patience_s"] = min(MAX_WAIT_S, max(0.5, 2 * max_wait_s))
            return True
        if time.perf_counter() >= deadline:
            anchors["_patience_s"] = max_wait_s / 2 if max_wait_s / 2 >= 0.25 else 0.0
            return False
        time.sleep(0.05)


def _level(probes: list[float]) -> float:
    """The machine's state from one bracket of probe runs: the second fastest, since the first run after a network
    finds cold caches and one fast outlier must not make a disturbed visit look quiet."""
    return sorted(probes)[min(1, len(probes) - 1)]


def interleaved(run, n: int, passes: int, runs_per_pass: int, seed: int, progress=None, rewarm: int = 2,
                clock=time.perf_counter_ns, sync=None, probe=None, anchors: dict | None = None,
                min_quiet_runs: int | None = None, max_wait_s: float | None = None) -> list[Measurement]:
    """Time ``run(i)`` for i < n: ``passes`` passes, each visiting every i once in a fresh random order.

    A visit waits for a quiet machine (:func:`wait_for_quiet`), re-warms (``rewarm``
    untimed runs: the previous network evicted this one's weights from cache) and
    times ``runs_per_pass`` runs back to back, as a user's timing loop runs them, so
    slow drift hits all networks alike. With a ``probe`` (one run of a fixed
    reference kernel, in ms), the visit's timed runs are bracketed by
    :data:`PROBE_RUNS` probe runs before and after them (not between them: a probe
    between two runs evicts part of the network from cache, which made networks 2%
    slower on average, up to 7%, than back to back on a Xeon, and calibrated every
    table that much over what a user measures: ``benchmarks/network_timing.py``):
    they are *quiet* when both brackets are within QUIET_TOLERANCE of the quiet level
    (``anchors["probe_ms"]``, see :func:`wait_for_quiet`; kept across sessions by the
    kernel store), i.e. no other job slowed the machine around them. Networks with
    fewer than ``min_quiet_runs`` quiet runs (default: one pass worth) are visited
    again, up to ``passes`` more passes. A network's statistics use its quiet runs
    only, or, if it never got enough, all its runs
    (noted "unverified"; scaling by the probe would be worse, see :func:`quiet_runs`).
    """
    rng = np.random.default_rng(seed)
    anchors = anchors if anchors is not None else {}
    need = runs_per_pass if min_quiet_runs is None else min_quiet_runs
    runs: list[list[tuple[float, float]]] = [[] for _ in range(n)]  # (bracketing probe ms, run ms)
    seen: list[float] = []  # probe times of this call

    def visit(i: int) -> None:
        wait_for_quiet(probe, anchors, max_wait_s)
        for _ in range(rewarm):
            run(i)
        before = bracket()
        times = []
        for _ in range(runs_per_pass):
            if sync:
                sync()
            t = clock()
            run(i)
            if sync:
                sync()
            times.append((clock() - t) / 1e6)  # ns -> ms
        after = bracket()
        runs[i] += [(max(_level(before), _level(after)), ms) for ms in times]
        if probe:  # a whole visit's median probe, not its fastest: one outlier must not become the anchor
            seen.extend(before + after)
            anchors["probe_ms"] = min(anchors.get("probe_ms", seen[-1]), float(np.median(before + after)))

    def bracket() -> list[float]:
        return [probe() for _ in range(PROBE_RUNS)] if probe else [1.0]

    def quiet(i: int) -> list[float]:
        limit = (1 + QUIET_TOLERANCE) * anchors.get("probe_ms", 1.0)
        return [ms for state, ms in runs[i] if not probe or state <= limit]

    for _ in range(passes):
        for i in rng.permutation(n):
            visit(int(i))
            if progress:
                progress(0.5 / passes)
    for _ in range(passes if probe else 0):  # re-measure what drift or another job disturbed
        again = [i for i in range(n) if len(quiet(i)) < need]
        if not again:
            break
        for i in rng.permutation(again):
            visit(int(i))
    if seen:  # how fast the machine got during this call: compared with the anchor, the drift since profiling
        anchors["session_probe_ms"] = float(np.percentile(seen, 10))
    out = []
    for i in range(n):
        good = quiet(i)
        if len(good) >= max(1, need // 2):
            out.append(replace(summarize(good), note=f"{len(good)}/{len(runs[i])} quiet runs"))
        else:  # hardly ever quiet: the best this session could do
            m = summarize([ms for _, ms in runs[i]])
            out.append(replace(m, note=f"unverified ({len(good)}/{len(runs[i])} quiet runs)"))
    return out
