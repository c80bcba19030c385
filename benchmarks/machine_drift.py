"""How far this machine's speed moves from one moment to the next: the floor under any latency prediction.

    python benchmarks/machine_drift.py [--seconds 180] [--net residual-2] [--networks 8] [--tag T] [--quick]

A latency table is profiled in a few seconds and a user times a model in a few seconds, at
another moment. However right the model of latency, the two agree no better than the
machine's speed at those two moments does. This measures that: ``--networks`` random
networks of one space (a generated net of ``latency_fidelity.py --families``, or vgg6)
timed the way a user times them (a plain onnxruntime session each, made once, 1 thread, 10
warm-up runs, then 40 timed ``InferenceSession.run`` calls), one network after another, sweep after sweep
for ``--seconds``, with the profilers' reference kernel (p10 of 60 runs) after each sweep.
A sweep's *level* is the geometric mean over the networks of its median over that
network's median over all sweeps: time over its median (1.0: the machine at its median speed,
1.1: 10% slower).

Writes ``benchmarks/results/machine_drift[_TAG].csv`` (per sweep: seconds since the start,
level, reference kernel ms), ``..._summary.csv`` (per window length: how far the mean
levels of two windows taken back to back differ, mean and p90, what a table profiled in
one window and a timing in the next would differ by from the machine alone; and the
level's autocorrelation at a few lags) and ``.png`` (level and reference over time).
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
from bench_common import time_sessions, user_sessions, write_rows  # noqa: E402
from fidelity_families import machine_ms, vgg6  # noqa: E402

import hwprune as hp  # noqa: E402
from hwprune.profilers.machine import cpu_name, version_of  # noqa: E402
from hwprune.profilers.onnx_graphs import export_network  # noqa: E402

RESULTS = Path(os.environ.get("HWPRUNE_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))
WINDOWS_S = (5, 10, 20, 40)
LAGS_S = (1, 3, 10, 30, 60)


def space_of(net: str):
    """(space, input shape) of ``vgg6`` or a generated net named FAMILY-SEED."""
    if net == "vgg6":
        model, shape, _ = vgg6()
    else:
        family, _, seed = net.rpartition("-")
        if family not in net_families.FAMILIES or not seed.isdigit():
            raise SystemExit(f"--net {net!r}: give vgg6 or FAMILY-SEED with FAMILY one of "
                             f"{', '.join(net_families.FAMILIES)} (e.g. residual-2)")
        model, shape, _ = net_families.make(family, int(seed))
    return hp.SearchSpace.from_model(model, shape, ratios=(0.25, 0.5, 0.75, 1.0)), shape


def sweep_levels(medians: np.ndarray) -> np.ndarray:
    """Per sweep (rows), the geometric mean over networks (columns) of each median over that network's median."""
    return np.exp(np.log(medians / np.median(medians, axis=0)).mean(axis=1))


def window_gaps(t: np.ndarray, level: np.ndarray, window_s: float) -> tuple[int, float, float]:
    """Split the run into back-to-back windows of ``window_s`` seconds (by sweep start time; a last window the run
    did not fill is left out): (windows, mean and p90 of |mean level of one window / mean level of the next - 1|
    over neighbouring windows that both hold a sweep); nan where no such pair is."""
    span = t[-1] - t[0] + (np.diff(t).mean() if len(t) > 1 else 0.0)  # the last sweep ends a sweep after it starts
    count = int(np.floor(span / window_s + 1e-9))
    idx = np.floor((t - t[0]) / window_s).astype(int)
    means = [level[idx == k].mean() if (idx == k).any() else np.nan for k in range(count)]
    gaps = np.array([abs(b / a - 1) for a, b in zip(means, means[1:]) if not (np.isnan(a) or np.isnan(b))])
    if not len(gaps):
        return count, float("nan"), float("nan")
    return count, float(gaps.mean()), float(np.percentile(gaps, 90))


def autocorrelation(t: np.ndarray, level: np.ndarray, lag_s: float) -> float:
    """Correlation of the level with itself ``lag_s`` seconds (in whole sweeps) later; nan where too short."""
    step = max(1, int(round(lag_s / (np.diff(t).mean() if len(t) > 1 else lag_s))))
    if step >= len(level) - 2:
        return float("nan")
    return float(np.corrcoef(level[:-step], level[step:])[0, 1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180.0, help="how long to sweep (180)")
    ap.add_argument("--net", default="residual-2", help="vgg6 or a generated FAMILY-SEED (residual-2)")
    ap.add_argument("--networks", type=int, default=8, help="random networks of its space timed each sweep (8)")
    ap.add_argument("--tag", default="", help="suffix of the output files (machine_drift_TAG.*)")
    ap.add_argument("--quick", action="store_true", help="3 seconds, 2 networks, 1 s windows (the test suite runs it)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.networks = 3.0, 2
    if not args.seconds > 0 or args.networks < 1:
        ap.error("--seconds must be above 0 and --networks at least 1")
    space, shape = space_of(args.net)
    rng = np.random.default_rng(7)
    blobs = [export_network(space.materialize(space.sample(rng)), shape) for _ in range(args.networks)]
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    sessions = user_sessions(blobs, x)  # made once: a new session may land its buffers elsewhere and run at
    # another speed (session_placement.py), which is not the machine's
    start, times, medians, probes = time.perf_counter(), [], [], []
    while time.perf_counter() - start < args.seconds:
        times.append(time.perf_counter() - start)
        medians.append([float(np.median(r)) for r in time_sessions(sessions, 40, 1, warmup=10)])
        probes.append(machine_ms(60))
    t, level = np.array(times), sweep_levels(np.array(medians))
    suffix = ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else "")
    head = (f"# {cpu_name()}, onnxruntime {version_of('onnxruntime')}, hwprune {hp.__version__}, 1 thread, "
            f"{args.net}: {args.networks} networks x 40 timed runs per sweep, {len(t)} sweeps in {args.seconds:g} s, "
            f"{time.strftime('%Y-%m-%d %H:%M')}\n")
    write_rows(args.out / f"machine_drift{suffix}.csv",
               [{"seconds": round(float(s), 3), "level": round(float(v), 5), "reference_ms": round(p, 5)}
                for s, v, p in zip(t, level, probes)], head)
    windows, lags = ((1,), (1,)) if args.quick else (WINDOWS_S, LAGS_S)
    summary = []
    for w in windows:
        n, mean_gap, p90_gap = window_gaps(t, level, w)
        summary.append({"measure": f"back-to-back {w} s windows", "windows": n, "mean_abs_gap": round(mean_gap, 4),
                        "p90_abs_gap": round(p90_gap, 4), "autocorrelation": ""})
    for lag in lags:
        summary.append({"measure": f"autocorrelation at {lag} s", "windows": "", "mean_abs_gap": "", "p90_abs_gap": "",
                        "autocorrelation": round(autocorrelation(t, level, lag), 3)})
    write_rows(args.out / f"machine_drift{suffix}_summary.csv", summary, head)
    plot(t, level, np.array(probes), args.out / f"machine_drift{suffix}.png")
    print(f"{len(t)} sweeps of {args.networks} networks in {t[-1] if len(t) else 0:.0f} s: level {level.min():.3f} to "
          f"{level.max():.3f} (std {level.std():.2%} per sweep); correlation with the reference kernel "
          f"{np.corrcoef(level, probes)[0, 1] if len(t) > 2 else float('nan'):.2f}")
    for r in summary:
        if r["autocorrelation"] == "":
            print(f"  {r['measure']:<26} two windows apart by {r['mean_abs_gap']:.2%} on average, "
                  f"{r['p90_abs_gap']:.2%} at p90 ({r['windows']} windows)")
        else:
            print(f"  {r['measure']:<26} {r['autocorrelation']:+.2f}")


def plot(t: np.ndarray, level: np.ndarray, probes: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.plot(t, level, lw=0.8, label="networks' level (user timing, per sweep)")
    ax.plot(t, probes / np.median(probes), lw=0.8, alpha=0.7, label="reference kernel p10 / its median")
    ax.axhspan(0.97, 1.03, color="grey", alpha=0.15)
    ax.set_xlabel("seconds", fontsize=8)
    ax.set_ylabel("time / its median", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
