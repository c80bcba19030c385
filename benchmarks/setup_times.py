"""How long the README's commands take: the test command, the smoke quickstart and the full quickstart.

    python benchmarks/setup_times.py [--skip-full] [--repeats 1]

Each command runs in a fresh folder (its own kernel store, so profiling starts from
nothing, as on a fresh machine) exactly as the README gives it, without the install
step. Run it on a quiet machine: the times are wall-clock, and the load average
before and after each run is recorded beside them so a disturbed run shows. Writes
``setup_times.csv`` into the results folder and prints a summary with the machine.
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {  # the README's words for each, and the command line it runs
    "tests (python -m pytest)": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
    "hwprune quickstart --fast": [sys.executable, "-m", "hwprune.cli", "quickstart", "--fast", "--quiet", "--out",
                                  "{tmp}/qs"],
    "hwprune quickstart": [sys.executable, "-m", "hwprune.cli", "quickstart", "--quiet", "--out", "{tmp}/qs"],
}


def main() -> None:
    from hwprune.profilers.machine import cpu_count, cpu_name

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-full", action="store_true", help="leave out the full quickstart (about 10 minutes)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default=os.environ.get("HWPRUNE_BENCH_RESULTS", str(ROOT / "benchmarks" / "results")))
    args = ap.parse_args()
    rows = []
    for name, argv in COMMANDS.items():
        if args.skip_full and name == "hwprune quickstart":
            continue
        for rep in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="hwprune-setup-") as tmp:
                env = {**os.environ, "HWPRUNE_CACHE": f"{tmp}/kernels"}
                cmd = [a.format(tmp=tmp) for a in argv]
                load0 = os.getloadavg()[0]
                t = time.perf_counter()
                r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
                seconds = time.perf_counter() - t
            rows.append({"command": name, "repeat": rep, "seconds": round(seconds, 1), "exit": r.returncode,
                         "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2),
                         "cpu": cpu_name(), "cores": cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M")})
            print(f"{name}: {seconds:.0f} s (exit {r.returncode}; load {load0:.2f} -> {rows[-1]['load_after']:.2f})",
                  flush=True)
            if r.returncode != 0:
                print((r.stdout + r.stderr)[-2000:], file=sys.stderr)
    out = Path(args.out) / "setup_times.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"on {cpu_name()} ({cpu_count()} cores); wrote {out}")


if __name__ == "__main__":
    main()
