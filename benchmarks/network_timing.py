"""The profiler's timing of whole networks against a user's timing loop, in the same minutes.

    python benchmarks/network_timing.py [--rounds 5] [--runs 20]

A table's calibration fits the kernels' sum to whole networks timed by the profiler
(:func:`hwprune.profilers.protocol.interleaved`), so whatever that timing adds over a
user's loop, every prediction adds too. For each network (vgg6 and one of each generated
family of ``latency_fidelity.py --families``, resnet20 and mobilenet_v2_cifar at 32x32;
the widest and the narrowest of each space), in ``--rounds`` rounds over all of them so
that the machine's state of the moment hits every protocol alike, one session (onnxruntime,
1 thread) is timed three ways, ``--runs`` runs each after 5 warm-up runs:

* ``user``: back to back, ``InferenceSession.run`` in a plain loop, as users time a model;
* ``profiler``: one visit of the profiler's protocol as it is (probe runs of the reference
  kernel before and after the timed runs, which run back to back);
* ``bracketed``: every timed run followed by two probe runs, the protocol before it changed.

Writes ``benchmarks/results/network_timing.csv`` (per network: each protocol's p10 and median,
the median over rounds) and prints each protocol's p10 over the user's.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import net_families  # noqa: E402
from bench_common import write_rows  # noqa: E402
from fidelity_families import vgg6  # noqa: E402

import hwprune as hp  # noqa: E402
from hwprune.models.loading import load_model  # noqa: E402
from hwprune.profilers.machine import cpu_name, version_of  # noqa: E402
from hwprune.profilers.onnx_graphs import export_network  # noqa: E402
from hwprune.profilers.onnxruntime import OnnxruntimeProfiler  # noqa: E402
from hwprune.profilers.protocol import interleaved  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROTOCOLS = ("user", "profiler", "bracketed")


def networks(quick: bool):
    """(name, ONNX bytes, input shape): the widest and narrowest network of each space."""
    models = [("vgg6",) + vgg6()[:2]]
    models += [(f"{f}-1",) + net_families.make(f, 1)[:2] for f in net_families.FAMILIES]
    models += [(name, load_model(name).eval(), (1, 3, 32, 32)) for name in ("resnet20", "mobilenet_v2_cifar")]
    for name, model, shape in models[:2] if quick else models:
        space = hp.SearchSpace.from_model(model, shape, ratios=(0.25, 0.5, 0.75, 1.0))
        for which, enc in (("widest", space.full()), ("narrowest", space.narrowest())):
            yield f"{name} {which}", export_network(space.materialize(enc), shape), shape


def time_three_ways(sess, feed, probe, anchors: dict, runs: int) -> dict[str, list[float]]:
    """One round of one network: ``runs`` timings (ms) under each protocol."""
    def timed():
        t = time.perf_counter_ns()
        sess.run(None, feed)
        return (time.perf_counter_ns() - t) / 1e6

    out = {}
    for _ in range(5):
        sess.run(None, feed)
    out["user"] = [timed() for _ in range(runs)]
    # the profiler's own visit, with no wait for a quiet machine (every protocol takes the machine as it comes); one
    # visit's runs share one state, so all of them count, quiet or not
    m = interleaved(lambda i: sess.run(None, feed), 1, passes=1, runs_per_pass=runs, seed=0, rewarm=5,
                    probe=probe, anchors=anchors, min_quiet_runs=0, max_wait_s=0)[0]
    out["profiler"] = [m.p10_ms, m.median_ms]
    for _ in range(5):
        sess.run(None, feed)
    bracketed = []
    for _ in range(runs):
        bracketed.append(timed())
        min(probe(), probe())
    out["bracketed"] = bracketed
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="two spaces, 2 rounds of 5 runs (seconds)")
    ap.add_argument("--out", default=os.environ.get("HWPRUNE_BENCH_RESULTS", str(ROOT / "benchmarks" / "results")))
    a = ap.parse_args(argv)
    rounds, runs = (2, 5) if a.quick else (a.rounds, a.runs)
    profiler = OnnxruntimeProfiler(threads=1)
    probe, anchors = profiler.probe(), {}
    nets = []
    for name, blob, shape in networks(a.quick):
        sess = profiler._session(blob)
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        nets.append((name, sess, {sess.get_inputs()[0].name: x}))
    stats: dict[str, dict[str, list[tuple[float, float]]]] = {n: {p: [] for p in PROTOCOLS} for n, _, _ in nets}
    for r in range(rounds):
        for name, sess, feed in nets:
            for p, times in time_three_ways(sess, feed, probe, anchors, runs).items():
                stats[name][p].append((times[0], times[1]) if p == "profiler"
                                      else (float(np.percentile(times, 10)), float(np.median(times))))
        print(f"round {r + 1}/{rounds} done", flush=True)
    rows = []
    for name, _, _ in nets:
        row = {"network": name}
        for p in PROTOCOLS:
            row[f"{p}_p10_ms"] = round(float(np.median([s[0] for s in stats[name][p]])), 5)
            row[f"{p}_median_ms"] = round(float(np.median([s[1] for s in stats[name][p]])), 5)
        for p in PROTOCOLS[1:]:
            row[f"{p}_over_user_p10"] = round(row[f"{p}_p10_ms"] / row["user_p10_ms"], 4)
        rows.append(row)
    head = (f"# {cpu_name()}, onnxruntime {version_of('onnxruntime')}, hwprune {hp.__version__}, 1 thread, {rounds} "
            f"rounds of {runs} runs per protocol, {time.strftime('%Y-%m-%d %H:%M')}\n")
    path = Path(a.out) / f"network_timing{'_quick' if a.quick else ''}.csv"
    write_rows(path, rows, head)
    for p in PROTOCOLS[1:]:
        ratios = [r[f"{p}_over_user_p10"] for r in rows]
        print(f"{p:<10} p10 / user p10: mean {np.mean(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f} "
              f"over {len(rows)} networks")


if __name__ == "__main__":
    main()
