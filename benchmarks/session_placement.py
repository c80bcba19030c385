"""How much a network's latency depends on its session's history in the process: the first session of a fresh
process against one created after other sessions came and went.

    python benchmarks/session_placement.py [--processes 5] [--tag T] [--quick]

A table's kernels are timed in sessions created one after another in the profiling
process, and each one freed before the next; a user often times a model in a fresh
process, as the first session it creates. onnxruntime places a session's buffers where
the process's allocator finds room, and some kernels run at different speeds depending
on where their buffers land (on the 2-core AMD EPYC of 2026-12-05, the layout copies of a
12-channel tensor at 64x64). For each network (of ``plain-2``, ``residual-1`` and ``vgg6`` of
``latency_fidelity.py --families``: the widest and two random ones of each, plain-2's first
random one replaced by ``2 2 0 2``, 12 channels in both its 64x64 layers), in each of
``--processes`` fresh processes: the network's first session is timed (onnxruntime, 1
thread, 30 warm-up then 300 timed runs, p10), then sessions of other networks (a chunk of
profiled kernels, as the profiler builds them) are created, run and freed three times,
and a new session of the network is timed; then once more after it too is freed.

Writes ``benchmarks/results/session_placement[_TAG].csv`` (per network and process: the
three p10s) and prints per network the later sessions' p10 over the first's (median
and range over processes).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS = Path(os.environ.get("HWPRUNE_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))
SESSIONS = ("first", "after_others", "after_itself")


def child(network: str, others: str, runs: int) -> dict:
    """In this (fresh) process: the p10 (ms) of ``network``'s first session, of one made after sessions of
    ``others`` came and went, and of one made after that one was freed too."""
    import onnxruntime as ort
    from bench_common import time_sessions

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3

    def session(path):
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feeds = {i.name: np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in i.shape],
                                                                  dtype=np.float32) for i in sess.get_inputs()}
        return sess, feeds

    def p10(path) -> float:  # 30 warm-up runs, then ``runs`` timed ones
        return float(np.percentile(time_sessions([session(path)], runs, 1, warmup=30)[0], 10))

    out = {"first": p10(network)}
    for _ in range(3):
        sess, feeds = session(others)
        for _ in range(10):
            sess.run(None, feeds)
        del sess, feeds
    out["after_others"] = p10(network)
    out["after_itself"] = p10(network)
    return out


def run_child(name: str, network: Path, others: Path, runs: int) -> dict:
    """:func:`child` in a fresh process; its failure as one line (the child's last line of stderr)."""
    done = subprocess.run([sys.executable, __file__, "--child", str(network), str(others), str(runs)],
                          capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}, no output"])[-1]
        raise SystemExit(f"session_placement: the fresh process timing {name} failed: {why}")
    return json.loads(lines[-1])


def networks(quick: bool):
    """(name, ONNX bytes) of every network measured."""
    import hwprune as hp
    import net_families
    from fidelity_families import vgg6
    from hwprune.profilers.onnx_graphs import export_network

    nets = [("plain-2", *net_families.make("plain", 2)[:2])]
    if not quick:
        nets += [("residual-1", *net_families.make("residual", 1)[:2]), ("vgg6", *vgg6()[:2])]
    for name, model, shape in nets:
        space = hp.SearchSpace.from_model(model, shape, ratios=(0.25, 0.5, 0.75, 1.0))
        rng = np.random.default_rng(7)
        encs = [space.full()] + ([] if quick else [space.sample(rng) for _ in range(2)])
        if name == "plain-2" and not quick:  # its 12-channel first layer, where the effect was found
            encs[1] = (2, 2, 0, 2)
        for enc in encs:
            yield f"{name} {' '.join(map(str, enc))}", export_network(space.materialize(enc), shape)


def others_model() -> bytes:
    """A chunk of kernels as the profiler builds one: several widths of a 3x3 conv at 32x32."""
    from hwprune.profilers.onnx_graphs import kernel_model
    from hwprune.profilers.protocol import REFERENCE
    from hwprune.profilers.spec import KernelSpec

    spec = KernelSpec("conv2d", (3, 3), (1, 1), (1, 1), (1, 1), "1", 32, 32, batchnorm=True, activation="relu")
    model, _, _ = kernel_model(spec, [(c, c) for c in (8, 12, 16, 24, 32, 48)], share_inputs=True,
                               residual_from_conv=True, reference=REFERENCE)
    return model.SerializeToString()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=5, help="fresh processes per network (5)")
    ap.add_argument("--tag", default="", help="suffix of the output file (session_placement_TAG.csv)")
    ap.add_argument("--quick", action="store_true", help="one network, 2 processes, 50 runs (the test suite's)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    ap.add_argument("--child", nargs=3, metavar=("NETWORK", "OTHERS", "RUNS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]))))
        return
    if args.processes < 1:
        ap.error(f"--processes must be at least 1, got {args.processes}")
    processes, runs = (2, 50) if args.quick else (args.processes, 300)
    from bench_common import write_rows
    import hwprune as hp
    from hwprune.profilers.machine import cpu_name, version_of

    rows = []
    with tempfile.TemporaryDirectory(prefix="hwprune-placement-") as tmp:
        others = Path(tmp) / "others.onnx"
        others.write_bytes(others_model())
        for k, (name, blob) in enumerate(networks(args.quick)):
            path = Path(tmp) / f"net{k}.onnx"
            path.write_bytes(blob)
            for proc in range(processes):
                ms = run_child(name, path, others, runs)
                rows.append({"network": name, "process": proc, **{f"{s}_ms": round(ms[s], 5) for s in SESSIONS}})
            got = [r for r in rows if r["network"] == name]
            ratios = {s: np.array([r[f"{s}_ms"] / r["first_ms"] for r in got]) for s in SESSIONS[1:]}
            print(f"{name:<22} first session {np.median([r['first_ms'] for r in got]):.4f} ms; "
                  + "; ".join(f"{s.replace('_', ' ')} {np.median(v):.3f}x ({v.min():.3f}-{v.max():.3f})"
                              for s, v in ratios.items()), flush=True)
    head = (f"# {cpu_name()}, onnxruntime {version_of('onnxruntime')}, hwprune {hp.__version__}, 1 thread, "
            f"{runs} timed runs per session, {processes} processes per network, {time.strftime('%Y-%m-%d %H:%M')}\n")
    write_rows(args.out / f"session_placement{'_quick' if args.quick else ''}{f'_{args.tag}' if args.tag else ''}.csv",
               rows, head)


if __name__ == "__main__":
    main()
