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

    python benchmarks/scoring_workers.py --sides 48 64 96 128 [--candidates 6]

times the same two ways on larger networks: torchvision-style resnet18 (10 classes) at each input side, on random
images (the cost does not depend on them), and writes ``scoring_workers_sides.csv`` with each network's MACs per
image and the peak memory of the process: what the processes gain on larger networks, and what each of them holds,
which set where a search's default (one scoring process per core) stops forking
(:data:`hwprune.search.evaluator.FORK_MAX_MACS`).
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


def seconds_by_side(side: int, k: int, cores: int) -> dict:
    """resnet18 at ``side`` x ``side``: ``k`` random candidates scored on ``cores`` threads, then in ``cores`` forked
    1-thread processes; seconds a candidate each way (the default evaluator: 4 calibration batches of 64, 20 tuning
    steps, 2 validation batches of 256)."""
    import resource

    import torch

    import hwprune as hp
    from hwprune.search.evaluator import score_many

    torch.manual_seed(0)
    torch.set_num_threads(cores)
    model = hp.create_model("resnet18", num_classes=10)
    space = hp.SearchSpace.from_model(model, (1, 3, side, side), round_to=8)
    calib = [(torch.randn(64, 3, side, side), torch.randint(0, 10, (64,))) for _ in range(30)]
    val = [(torch.randn(256, 3, side, side), torch.randint(0, 10, (256,))) for _ in range(2)]
    evaluator = hp.InheritEvaluator(space, model)
    rng = np.random.default_rng(1)
    encs = [tuple(int(v) for v in space.sample(rng)) for _ in range(k + 1)]
    evaluator.score(encs[0], val, calib, 4)
    started = time.perf_counter()
    score_many(evaluator, encs[1:], val, calib, 4, 1)
    threaded = (time.perf_counter() - started) / k
    started = time.perf_counter()
    score_many(evaluator, encs[1:], val, calib, 4, cores)
    forked = (time.perf_counter() - started) / k
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # (Linux: KB)
    print(f"resnet18 at {side}: {space.flops(space.full()) / 1e6:.0f}M MACs, {threaded:.2f} s a candidate on "
          f"{cores} threads, {forked:.2f} s in {cores} processes: {threaded / forked:.2f}x; peak {peak_mb:.0f} MB")
    return {"model": "resnet18", "side": side, "macs": space.flops(space.full()), "cores": cores, "candidates": k,
            "s_per_candidate_threads": round(threaded, 3), "s_per_candidate_processes": round(forked, 3),
            "processes_over_threads": round(threaded / forked, 3), "peak_mb_one_process": round(peak_mb)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "mobilenet_v2_cifar"])
    ap.add_argument("--candidates", type=int, default=12, help="timed candidates per process")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--out", default=os.environ.get("HWPRUNE_BENCH_RESULTS", str(ROOT / "benchmarks" / "results")))
    ap.add_argument("--sides", type=int, nargs="+", help="time resnet18 at these input sides instead (random images; "
                    "in increasing order: the peak memory is the process's so far)")
    a = ap.parse_args()
    cores, rows = os.cpu_count() or 1, []
    from hwprune.profilers.machine import cpu_name, version_of

    if a.sides:
        rows = [seconds_by_side(side, a.candidates, cores) for side in a.sides]
        write_rows(Path(a.out) / "scoring_workers_sides.csv", rows, f"# {cpu_name()}, {cores} cores, torch "
                   f"{version_of('torch')}, random images, {time.strftime('%Y-%m-%d %H:%M')}\n")
        return
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
    head = (f"# {cpu_name()}, {cores} cores, torch {version_of('torch')}, {a.data}, "
            f"{time.strftime('%Y-%m-%d %H:%M')}\n")
    write_rows(Path(a.out) / "scoring_workers.csv", rows, head)


if __name__ == "__main__":
    main()
