"""Predicted latency against what a user measures, before and after the network-timing fix.

    python benchmarks/median_bias.py [--work runs/fashion_mnist/full/resnet20] [--runs 200]

Reads a finished ``fashion_mnist.py`` work folder of one model (its latency table, kernel
store and the exported winners of seed 0, with the dense network). Profiles the table
again from the same kernel store, so only the calibration networks are measured, with
this version's network timing (``InferenceSession.run`` on a numpy input, as users time
a model; the folder's table was calibrated on ``run_with_iobinding``), once predicting
p10 and once the median. Then times every network the way a user does: a plain
onnxruntime session, 1 thread, 20 warm-up runs, then ``--runs`` timed runs in five
rounds interleaved over the networks; p10 and median. Writes
``benchmarks/results/median_bias.csv`` and prints the mean signed error of each table
against the statistic it predicts and against the user's median.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as common  # noqa: E402
import fashion_mnist as fm  # noqa: E402

import hwprune as hp  # noqa: E402
from hwprune.files.atomic import write_atomic  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(ROOT / "runs" / "fashion_mnist" / "full" / "resnet20"))
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--out", default=os.environ.get("HWPRUNE_BENCH_RESULTS", str(ROOT / "benchmarks" / "results")))
    args = ap.parse_args(argv)
    work = Path(args.work)
    settings = json.loads((work.parent / "settings.json").read_text())
    s = fm.Settings(**settings).for_model(work.name)
    space, _ = fm.setup(work.name, s)
    old = hp.LatencyTable.load(work / "latency_table.csv", space)
    tables = {"before_iobinding_p10": old}  # predicted ms per table: calibrated on what, predicting which statistic
    for stat in ("p10", "median"):
        tables[f"after_run_{stat}"] = hp.profile(
            space, backend="onnxruntime", threads=1, repeats=s.profile_repeats, passes=s.passes,
            calibrate=s.calibrate, runs_per_pass=s.runs_per_pass, statistic=stat, cache_dir=work.parent / "kernel_store",
            out=work / f"latency_table_run_{stat}.csv", quiet=True)
    nets = [("dense", work / "dense")] + [(f"{m} {f:.0%}", work / f"{m}_{f}_s{s.seeds[0]}")
                                          for m in fm.METHODS if m != "l1" for f in s.fractions]
    measured = common.user_runs([d / "model.onnx" for _, d in nets], None, args.runs, rounds=5)
    rows = []
    for (label, folder), t in zip(nets, measured):
        enc = json.loads((folder / "result.json").read_text())["encoding"]
        row = {"model": work.name, "network": label, "user_p10_ms": round(float(np.percentile(t, 10)), 4),
               "user_median_ms": round(float(np.median(t)), 4)}
        for name, table in tables.items():
            row[name] = round(float(table.predict(enc)), 4)
        rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "median_bias.csv", common.csv_text(rows, {"work": str(work), "runs": args.runs}))
    print(f"{work.name}: {len(rows)} networks (the dense one and seed 0's winners), timed as a user times them")
    for name in tables:
        stat = name.rsplit("_", 1)[1]
        for against in sorted({stat, "median"}):
            err = np.array([r[name] / r[f"user_{against}_ms"] - 1 for r in rows])
            print(f"  table {name:<20} vs user {against:<6}: mean signed error {err.mean():+.1%}, "
                  f"|error| max {np.abs(err).max():.1%}")
    print(f"wrote {out / 'median_bias.csv'}")


if __name__ == "__main__":
    main()
