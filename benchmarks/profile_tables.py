"""Profile the shipped latency tables from scratch and record what profiling costs.

    python benchmarks/profile_tables.py [--only resnet20-32] [--threads 1 2] [--validate 100] [--force]
    python benchmarks/profile_tables.py --recalibrate

For each (model, input size, threads): a fresh kernel store (so the cost is the
cost of a first profile), ``hwprune.profile`` with onnxruntime on this CPU, then
``validate_table`` on N random networks. Writes ``latency_tables/<model>-<size>.
onnxruntime-<cpu>.t<threads>.csv`` with its ``.fidelity.json`` / ``.fidelity.png``,
and one row per table to ``benchmarks/results/profile_cost.csv`` (entries,
entries measured per second, kernel / calibration / total seconds). Tables that
exist are kept (their recorded cost is reported again) unless ``--force``.

``--recalibrate`` measures nothing: it refits each existing table's calibration on
the networks stored in it (``hwprune.latency.calibration``), rescores its fidelity
report's LUT column on the report's stored measurements, and writes one row per
table (both models' leave-one-out error, the choice, LUT fidelity before and
after) to ``benchmarks/results/calibration.csv``.
"""
from __future__ import annotations

import argparse
import os
import csv
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import hwprune as hp
from hwprune.profilers.machine import cpu_name, version_of

ROOT = Path(__file__).resolve().parent.parent
TABLES = {  # name: (zoo model, input shape, networks validated)
    "resnet20-32": ("resnet20", (1, 3, 32, 32), 100),
    "mobilenet_v2_cifar-32": ("mobilenet_v2_cifar", (1, 3, 32, 32), 100),
    "resnet18-224": ("resnet18", (1, 3, 224, 224), 40),
}


def table_path(name: str, threads: int, folder: Path = ROOT / "latency_tables") -> Path:
    cpu = re.sub(r"[^a-z0-9]+", "-", cpu_name().lower()).strip("-")
    return folder / f"{name}.onnxruntime-{cpu}.t{threads}.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=list(TABLES), default=list(TABLES))
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--validate", type=int, help="networks to validate (default: 100, 40 for resnet18-224)")
    ap.add_argument("--force", action="store_true", help="profile again even if the table exists")
    ap.add_argument("--recalibrate", action="store_true",
                    help="refit existing tables' calibration and rescore their reports; measure nothing")
    ap.add_argument("--out", default=str(Path(os.environ.get("HWPRUNE_BENCH_RESULTS", ROOT / "benchmarks" / "results")) / "profile_cost.csv"))
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the finally blocks: no stray kernel stores
    if args.recalibrate:
        return recalibrate_all(args.only, args.threads, Path(args.out).with_name("calibration.csv"))
    rows = []
    for name in args.only:
        model_name, shape, n_validate = TABLES[name]
        for threads in args.threads:
            path = table_path(name, threads)
            space = hp.SearchSpace.from_model(hp.create_model(model_name).eval(), shape)
            stem = str(path)[:-4]
            if path.exists() and not args.force:
                try:
                    table, here = hp.LatencyTable.load(path, space), True
                except hp.TableMismatchError as e:  # made with another runtime or CPU: its recorded cost still holds
                    table, here = hp.LatencyTable.load(path, space, allow_mismatch=True), False
                    print(f"{path.name}: exists, kept (not validated on this machine: {e})")
                else:
                    print(f"{path.name}: exists, kept")
                if here and not Path(f"{stem}.fidelity.json").exists():  # an interrupted run: validate what it made
                    report = hp.validate_table(table, space, n=args.validate or n_validate,
                                               report=f"{stem}.fidelity.json", plot=f"{stem}.fidelity.png")
                    print(report.summary())
            else:
                store = Path(tempfile.mkdtemp(prefix="hwprune-kernels-"))  # a first profile: nothing reused
                try:
                    started = time.time()
                    table = hp.profile(space, threads=threads, out=path, cache_dir=store)
                    print(f"{path.name}: {len(table.entries)} entries in {time.time() - started:.0f} s")
                finally:
                    shutil.rmtree(store, ignore_errors=True)
                report = hp.validate_table(table, space, n=args.validate or n_validate,
                                           report=f"{stem}.fidelity.json", plot=f"{stem}.fidelity.png")
                print(report.summary())
            p = table.meta["profiling"]
            rows.append({"table": path.name, "model": model_name, "input": "x".join(map(str, shape[1:])),
                         "threads": threads, "entries": p["entries"], "measured": p["measured"],
                         "kernel_seconds": p["kernel_seconds"], "calibration_seconds": p["calibration_seconds"],
                         "total_seconds": p["total_seconds"], "entries_per_second": p["entries_per_second"],
                         "overhead_ms": round(table.overhead_ms, 4), "date": table.meta["date"]})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = {}
    if out.exists():  # keep rows of tables not profiled in this run
        with out.open() as f:
            old = {r["table"]: r for r in csv.DictReader(line for line in f if not line.startswith("#"))}
    old.update({r["table"]: r for r in rows})
    with out.open("w", newline="") as f:
        f.write(f"# profiling cost of the shipped tables: onnxruntime {version_of('onnxruntime')}"
                f" on {cpu_name()}, first profile (empty kernel store)\n")
        w = csv.DictWriter(f, fieldnames=list(next(iter(old.values()))))
        w.writeheader()
        w.writerows(old.values())
    print(f"wrote {out}")


def recalibrate_all(names: list[str], threads: list[int], out: Path) -> None:
    """Refit every existing table of ``names`` x ``threads``; rescore its report (module docstring)."""
    from hwprune.latency.calibration import recalibrate
    from hwprune.latency.fidelity import FidelityReport

    kept = {}  # a rerun leaves the row of a table it does not change: its "before" is the earlier fit
    if out.exists():
        with out.open() as f:
            kept = {r["table"]: r for r in csv.DictReader(line for line in f if not line.startswith("#"))}
    rows = []
    for name in names:
        for t in threads:
            path = table_path(name, t)
            if not path.exists():
                print(f"{path.name}: not profiled, skipped")
                continue
            old = hp.LatencyTable.load(path, check_device=False)
            table = recalibrate(old)
            cal = table.meta["calibration"]
            changed = cal["model"] != old.meta["calibration"].get("model", "constant") or table.scale != old.scale
            if changed:  # a constant refitted on the stored (rounded) figures is the same fit: keep the file
                table.save(path)
            loo = cal["loo_mape"]
            row = {"table": path.name, "threads": t, "networks": len(cal["networks"]),
                   "loo_mape_constant": loo.get("constant"), "loo_mape_affine": loo.get("affine"),
                   "model": cal["model"], "overhead_ms": round(table.overhead_ms, 4), "scale": round(table.scale, 4)}
            stem = str(path)[:-4]
            if Path(f"{stem}.fidelity.json").exists():
                before = FidelityReport.load(f"{stem}.fidelity.json")
                after = before.rescore(table) if changed else before
                if changed:
                    after.save(f"{stem}.fidelity.json")
                    after.plot(f"{stem}.fidelity.png")
                for tag, r in (("before", before.lut), ("after", after.lut)):
                    row.update({f"lut_within_10pct_{tag}": round(r["within_10pct"], 3),
                                f"lut_mape_{tag}": round(r["mape"], 4), f"lut_spearman_{tag}": round(r["spearman"], 4)})
                row["validated_networks"] = after.n
            rows.append(row if changed or path.name not in kept else kept[path.name])
            print(f"{path.name}: {cal['model']}, {table.overhead_ms:+.3f} ms + {table.scale:.3f} x kernel sum"
                  + (f"; LUT within 10% {row['lut_within_10pct_before']:.0%} -> {row['lut_within_10pct_after']:.0%},"
                     f" MAPE {row['lut_mape_before']:.1%} -> {row['lut_mape_after']:.1%}" if "lut_mape_after" in row
                     else ""))
    if rows:
        out.parent.mkdir(parents=True, exist_ok=True)
        fieldnames = list(dict.fromkeys(k for r in rows for k in r))
        with out.open("w", newline="") as f:
            f.write("# calibration refitted on each table's stored networks; LUT fidelity rescored on its report's "
                    "stored measurements (python benchmarks/profile_tables.py --recalibrate)\n")
            w = csv.DictWriter(f, fieldnames=fieldnames)
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
