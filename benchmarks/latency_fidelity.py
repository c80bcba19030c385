"""How well latency tables predict real networks, beside FLOPs and test-retest.

    python benchmarks/latency_fidelity.py [--models resnet20-32 mobilenet_v2_cifar-32] [--threads 1] [--n 100]
    python benchmarks/latency_fidelity.py --families [--seeds 0 1 2] [--n 30] [--rounds 5] [--repeats R] [--passes P]
        [--suite-runs K] [--quick]

Shipped tables: for each onnxruntime table of this CPU (``benchmarks/profile_tables.py``
makes them), N random networks measured end to end twice, now, and compared with
the table's prediction, a FLOPs-proportional prediction and the second measurement.
Also the predictor's speed (predictions per second, one at a time and batched).
Writes ``benchmarks/results/latency_fidelity.csv``, ``predict_speed.csv`` and a
scatter plot per table, ``latency_fidelity_<table>.png``.

``--families``: networks the predictor was never tuned on, generated from a seed
(``net_families.py``: plain stacks, residual, depthwise-separable with
squeeze-excitation and a concat; plus ``vgg6``, six 3x3 convs of 32-128 channels at
32x32 with 4 widths per layer). Per network, a table is profiled (onnxruntime, 1
thread) for each statistic (p10 and median), then N random candidates are timed the
way a user times a model: a plain ``InferenceSession.run`` loop, 20 warm-up and 200
timed runs, in 5 rounds of 40 that visit every network in turn, each warmed up again, so
that a few seconds of load from elsewhere on this shared machine land on a share of
several networks' runs, not on all of one's (``--rounds 1``: one network after another;
on a noisy machine, 2026-12-02, the retest agreed within +-10% for 84% / 76% of the
networks (p10 / median) in rounds against 71% / 63% without, Spearman 0.97 against 0.91-0.93);
then all of them again in the reverse order (test-retest); then both
tables are profiled again from nothing (another kernel store). Writes
``latency_fidelity_families.csv`` (per network and statistic: signed bias, MAPE,
within +-10%, Spearman of the prediction against the same statistic measured, the
same for the retest against the first measurement, the second profiling's bias and
Spearman, and how far the two tables' predictions lie apart), the points in
``latency_fidelity_families_points.csv`` and ``latency_fidelity_families.png``.
``--suite-runs K``: all of that K times over (a ``run`` column), every table profiled
from nothing each time, and per network and statistic the figures over the runs: every
table's bias (2K tables: each run's and its profiled-again one) as a mean and range, the
share of runs whose table met the 3% bar, mean and worst within-10% and Spearman, beside
the machine's own spread (``..._expectation.csv``; ``..._expectation.png``, each table's
bias run by run). One profiling and one timing are each a snapshot of a machine whose
speed moves from minute to minute; the mean over runs is the predictor's own bias.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import hwprune as hp
from hwprune.profilers.machine import cpu_name, version_of

import net_families
from bench_common import write_rows
from profile_tables import TABLES, table_path

RESULTS = Path(os.environ.get("HWPRUNE_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))


def speed(table, space, seconds: float = 2.0) -> tuple[float, float]:
    """(predictions/s one at a time, predictions/s in batches of 10,000)."""
    rng = np.random.default_rng(0)
    encs = [space.sample(rng) for _ in range(10_000)]
    batch = np.array(encs)
    best_single = best_batch = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  # best of several rounds: the machine is shared
        t = time.perf_counter()
        for e in encs[:2000]:
            table.predict(e)
        best_single = max(best_single, 2000 / (time.perf_counter() - t))
        t = time.perf_counter()
        table.predict_batch(batch)
        best_batch = max(best_batch, len(batch) / (time.perf_counter() - t))
    return best_single, best_batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", choices=list(TABLES), default=["resnet20-32", "mobilenet_v2_cifar-32"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1])
    ap.add_argument("--n", type=int, default=None, help="random networks per table (100; 30 with --families)")
    ap.add_argument("--allow-mismatch", action="store_true",
                    help="validate a shipped table made with another onnxruntime or CPU (skipped otherwise)")
    ap.add_argument("--families", action="store_true", help="generated networks, profiled here (see above)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="--families: networks per family")
    ap.add_argument("--only", nargs="+", choices=["vgg6", *net_families.FAMILIES], help="--families: these only")
    ap.add_argument("--tag", default="", help="--families: suffix of the output files (latency_fidelity_families_TAG.*)")
    ap.add_argument("--repeats", type=int, help="--families: kernel runs per chunk when profiling (default: profile's)")
    ap.add_argument("--passes", type=int, help="--families: calibration passes when profiling (default: profile's)")
    ap.add_argument("--rounds", type=int, default=5, help="--families: each network's timed runs in this many "
                    "rounds over all the networks (1: all at once)")
    ap.add_argument("--suite-runs", type=int, default=1, help="--families: the whole suite this many times, every "
                    "table profiled from nothing each time; with more than one, each net's figures over the runs "
                    "(latency_fidelity_families_TAG_expectation.csv/png)")
    ap.add_argument("--quick", action="store_true", help="--families: one small network per family, 4 "
                    "candidates, 30 timed runs (seconds; the test suite runs it)")
    args = ap.parse_args()
    for flag, value in (("--suite-runs", args.suite_runs), ("--rounds", args.rounds), ("--repeats", args.repeats),
                        ("--passes", args.passes), ("--n", args.n)):
        if value is not None and value < 1:
            ap.error(f"{flag} must be at least 1, got {value}")
    if args.suite_runs > 1 and not args.families:
        ap.error("--suite-runs runs the generated families' suite: add --families")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.families:
        import fidelity_families

        return fidelity_families.run(RESULTS, args.seeds, args.n or 30, args.quick, args.only, args.tag,
                                     args.repeats, args.passes, args.rounds, args.suite_runs)
    args.n = args.n or 100
    fidelity, speeds = [], []
    for name in args.models:
        model_name, shape, _ = TABLES[name]
        space = hp.SearchSpace.from_model(hp.create_model(model_name).eval(), shape)
        for threads in args.threads:
            path = table_path(name, threads)
            if not path.exists():
                raise SystemExit(f"{path} is missing: run benchmarks/profile_tables.py --only {name} first")
            try:
                table = hp.LatencyTable.load(path, space, allow_mismatch=args.allow_mismatch)
            except hp.TableMismatchError as e:  # its fidelity here would be another runtime's or CPU's
                print(f"{path.name}: skipped ({e}; or profile it here with benchmarks/profile_tables.py --force "
                      f"--only {name})")
                continue
            tag = f"{name}.t{threads}"
            report = hp.validate_table(table, space, n=args.n, seed=7, plot=RESULTS / f"latency_fidelity_{tag}.png",
                                       report=RESULTS / f"latency_fidelity_{tag}.json")
            print(report.summary())
            for predictor, r in (("LUT", report.lut), ("FLOPs", report.flops), ("test-retest", report.retest)):
                fidelity.append({"table": path.name, "model": model_name, "threads": threads, "n": report.n,
                                 "predictor": predictor, "within_10pct": round(r["within_10pct"], 3),
                                 "mape": round(r["mape"], 4), "spearman": round(r["spearman"], 4),
                                 "drift": ";".join(str(d["probe_vs_profile"]) for d in report.drift),
                                 "load_average": report.load_average[0] if report.load_average else ""})
            single, batched = speed(table, space)
            speeds.append({"table": path.name, "kernels": len(table.slots()), "predict_per_s": round(single),
                           "predict_batch_per_s": round(batched)})
            print(f"{tag}: predict() {single:,.0f}/s, predict_batch() {batched:,.0f}/s")
    if not fidelity:
        print("no table validated: nothing written")
        return
    head = (f"# {cpu_name()}, onnxruntime {version_of('onnxruntime')}, hwprune {hp.__version__}, "
            f"{time.strftime('%Y-%m-%d %H:%M')}\n")
    write_rows(RESULTS / "latency_fidelity.csv", fidelity, head)
    write_rows(RESULTS / "predict_speed.csv", speeds, head)


if __name__ == "__main__":
    main()
