"""How fast the default evaluator scores candidates: one process on 1 and on all threads, and one process per core.

    python benchmarks/scoring_workers.py [--models resnet20 mobilenet_v2_cifar] [--candidates 12] [--data fashion-mnist]

A search scores every candidate with the inherit evaluator (the dense weights sliced, BatchNorm
recalibrated, 20 distillation steps, top-1 on the validation batches), today in one process that uses
every core through torch's intra-op threads. The networks are small (28x28 inputs, batch 64), so threads
share little work; this times the same random candidates of the benchmark's spaces (Fashion-MNIST, widths in
steps of 4, the dense network untrained: the cost does not depend on the weights) scored one after another
with 1 thread and with ``os.cpu_count()`` threads, then as a search with ``workers`` scores them
(:func:`hwprune.search.evaluator.score_many`: one forked 1-thread process per core), and writes
``benchmarks/results/scoring_workers.csv``: seconds per candidate and candidates per second of each, and the
throughput of the processes over the threaded one. Time it on an otherwise quiet machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import setup, write_rows  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def seconds_per_candidate(name: str, data: str, threads: int, k: int, workers: int = 1) -> float:
    """Score ``k`` random candidates (after one not timed) on ``threads`` torch threads, or in ``workers`` forked
    1-thread processes; seconds a candidate."""
    import torch

    from hwprune import InheritEvaluator
    from hwprune.search.evaluator import score_many

    torch.set_num_threads(threads)
    space, loaders = setup(name, data, 5000, 64, 4)
    evaluator = InheritEvaluator(space, space.model)
    rng = np.random.default_rng(1)
    val = [b for _, b in zip(range(4), loaders.val)]  # the search's 4 validation batches, loaded once
    encs = [tuple(int(v) for v in space.sample(rng)) for _ in range(k + 1)]
    evaluator.score(encs[0], val, loaders.calib, 4)
    started = time.perf_counter()
    score_many(evaluator, encs[1:], val, loaders.calib, 4, workers)
    return (time.perf_counter() - started) / k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "mobilenet_v2_cifar"])
    ap.add_argument("--candidates", type=int, default=12, help="timed candidates per process")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--out", default=os.environ.get("HWPRUNE_BENCH_RESULTS", str(ROOT / "benchmarks" / "results")))
    a = ap.parse_args()
    cores, rows = os.cpu_count() or 1, []
    for name in a.models:
        one = seconds_per_candidate(name, a.data, 1, a.candidates)
        threaded = seconds_per_candidate(name, a.data, cores, a.candidates)
        forked = seconds_per_candidate(name, a.data, cores, a.candidates, workers=cores)  # all together
        rows.append({"model": name, "cores": cores, "candidates": a.candidates,
                     "s_per_candidate_1_thread": round(one, 3), f"s_per_candidate_{cores}_threads": round(threaded, 3),
                     "s_per_candidate_in_processes": round(forked * cores, 3),
                     "per_s_threads": round(1 / threaded, 4), "per_s_processes": round(1 / forked, 4),
                     "processes_over_threads": round(threaded / forked, 3)})
        print(f"{name}: {one:.2f} s a candidate on 1 thread, {threaded:.2f} s on {cores} threads; {cores} forked "
              f"processes of 1 thread: {forked * cores:.2f} s each, {threaded / forked:.2f}x the threaded throughput")
    from hwprune.profilers.machine import cpu_name, version_of

    head = (f"# {cpu_name()}, {cores} cores, torch {version_of('torch')}, {a.data}, "
            f"{time.strftime('%Y-%m-%d %H:%M')}\n")
    write_rows(Path(a.out) / "scoring_workers.csv", rows, head)


if __name__ == "__main__":
    main()
