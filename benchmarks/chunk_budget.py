"""How much of the kernels' weights a profiling chunk holds, against the latency a user measures.

    python benchmarks/chunk_budget.py [--arms 8192:256 8192:32 1024:256 1024:32] [--repeats 2] [--side 32]

Kernels are timed many variants to a chunk, so each variant's weights come from the
cache level a chunk of that size fits (the onnxruntime profiler's default: 256 variants,
8 MB, the last-level cache); a small network's weights stay in L2 between its runs. This
profiles the quickstart's space (resnet20 on 1x32x32 inputs, widths in steps of 4; ``--side 28``: Fashion-MNIST's) from
nothing under each arm (a weight budget in KB and a most variants per chunk: the two limits are
crossed, so that what a smaller chunk changes is told apart), ``--repeats`` times, alternating,
and times 45 networks of it as a user times them (a plain onnxruntime session,
1 thread, 100 runs in 5 interleaved rounds: the widest, the narrowest, 28 random ones and 15
random ones of the narrowest sixth of every width). Writes ``benchmarks/results/chunk_budget.csv``
(per profiling: its calibration, seconds, and its predictions' bias, MAPE, share within
±10% and Spearman against the users' p10, overall and for the narrow and the wide networks, and
the reference kernel's p10 right after it and after the users' timing: the machine's speed at each)
and prints it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import p10_median, user_runs, write_rows  # noqa: E402
from fidelity_families import machine_ms  # noqa: E402

import hwprune as hp  # noqa: E402
from hwprune.latency.fidelity import agreement  # noqa: E402
from hwprune.models.loading import load_model  # noqa: E402
from hwprune.profilers.machine import cpu_name, version_of  # noqa: E402
from hwprune.profilers.onnx_graphs import export_network  # noqa: E402
from hwprune.profilers.registry import get_profiler  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _arm(text: str) -> tuple[int | str, int]:
    """``KB:VARIANTS`` as two ints, or ``auto:VARIANTS`` (the profiler's default budget) (``--arms``)."""
    kb, sep, variants = text.partition(":")
    if not (sep and (kb.isdigit() and int(kb) > 0 or kb == "auto") and variants.isdigit() and int(variants) > 0):
        raise argparse.ArgumentTypeError(f"an arm is KB:VARIANTS, two positive integers (8192:256) or auto:VARIANTS, "
                                         f"not {text!r}")
    return (kb if kb == "auto" else int(kb)), int(variants)


def networks(space, rng, random: int, narrow: int) -> tuple[list[tuple[int, ...]], list[str]]:
    """The widest, the narrowest, ``random`` random encodings and ``narrow`` from the narrowest sixth of each width."""
    top = np.maximum(np.asarray(space.num_choices) // 6, 1)
    encs = [tuple(space.full()), tuple(space.narrowest())]
    encs += [tuple(int(v) for v in space.sample(rng)) for _ in range(random)]
    encs += [tuple(int(v) for v in rng.integers(0, top)) for _ in range(narrow)]
    kinds = ["widest", "narrowest"] + ["random"] * random + ["narrow"] * narrow
    return encs, kinds


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", nargs="+", type=_arm, default=[(8192, 256), (8192, 32), (1024, 256), (1024, 32)],
                    metavar="KB:VARIANTS", help="chunk limits profiled: weight budget (KB, or auto: the profiler's "
                                                "default, the widest network's weights) and most variants")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--side", type=int, default=32, help="input height and width (28: Fashion-MNIST's images)")
    ap.add_argument("--quick", action="store_true", help="a 1x8x8 input, the first two arms once, 6 networks (seconds)")
    ap.add_argument("--out", default=os.environ.get("HWPRUNE_BENCH_RESULTS", str(ROOT / "benchmarks" / "results")))
    a = ap.parse_args(argv)
    side, arms, repeats, (random, narrow, runs) = ((8, a.arms[:2], 1, (2, 2, 10)) if a.quick
                                                   else (a.side, a.arms, a.repeats, (28, 15, 100)))
    shape = (1, 1, side, side)
    space = hp.SearchSpace.from_model(load_model("resnet20", in_channels=1).eval(), shape, round_to=4)
    encs, kinds = networks(space, np.random.default_rng(1), random, narrow)
    blobs = [export_network(space.materialize(e), shape) for e in encs]
    tables = []
    for r in range(repeats):
        for kb, variants in arms:
            profiler = get_profiler("onnxruntime", "cpu", threads=1, options={"chunk_kb": kb},
                                    **({"max_wait_s": 0.2} if a.quick else {}))
            own = profiler.chunk_limits  # its weight budget ("auto": sized by profile() to this space)
            profiler.chunk_limits = lambda own=own, variants=variants: (variants, own()[1])
            t = time.time()
            with tempfile.TemporaryDirectory(prefix="hwprune-chunks-") as store:
                table = hp.profile(space, profiler=profiler, cache_dir=store, quiet=True,
                                   **({"calibrate": 4, "passes": 2} if a.quick else {}))
            kb = own()[1] >> 10
            seconds, probe = time.time() - t, machine_ms()
            tables.append((kb, variants, r, table, seconds, probe))  # (auto: the KB it came to)
            print(f"{kb} KB, {variants} variants, profiling {r + 1}: {seconds:.0f} s (reference kernel then: "
                  f"{probe:.4f} ms)", flush=True)
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    measured = np.array([p10_median(t)[0] for t in user_runs(blobs, x, runs, 5)])
    user_probe = machine_ms()  # the reference kernel's p10 right after the users' timing, as after each profiling
    rows = []
    narrow_i = np.array([k in ("narrow", "narrowest") for k in kinds])
    for kb, variants, r, table, seconds, probe in tables:
        pred = table.predict_batch(np.asarray(encs))
        ratio = pred / measured
        g = agreement(pred, measured)
        cal = table.meta["calibration"]
        rows.append({"budget_kb": kb, "variants": variants, "profiling": r + 1, "networks": len(encs),
                     "calibration": cal["model"], "overhead_ms": round(cal["overhead_ms"], 5),
                     "scale": round(cal.get("scale", 1.0), 4), "profile_seconds": round(seconds, 1),
                     "bias": round(float(ratio.mean() - 1), 4), "mape": round(g["mape"], 4),
                     "within_10pct": round(g["within_10pct"], 3), "spearman": round(g["spearman"], 4),
                     "narrow_ratio": round(float(ratio[narrow_i].mean()), 4),
                     "wide_ratio": round(float(ratio[~narrow_i].mean()), 4),
                     "probe_profile_ms": round(probe, 4), "probe_user_ms": round(user_probe, 4)})
        print(f"{kb:>5} KB, {variants:>3} variants, profiling {r + 1}: bias {ratio.mean() - 1:+.1%}  "
              f"MAPE {g['mape']:.1%}  within ±10% {g['within_10pct']:.0%}  Spearman {g['spearman']:.3f}  "
              f"predicted / measured: narrow {ratio[narrow_i].mean():.3f}, others {ratio[~narrow_i].mean():.3f}")
    apart = max(abs(probe / user_probe - 1) for *_, probe in tables)
    if apart > 0.05:
        print(f"the reference kernel ran up to {apart:.0%} apart between a profiling and the users' timing: the "
              f"machine changed speed, and the biases above say that more than they say anything of the chunks")
    head = (f"# {cpu_name()}, onnxruntime {version_of('onnxruntime')}, hwprune {hp.__version__}, 1 thread, resnet20 "
            f"{side}x{side}, users' p10 of {runs} runs, {time.strftime('%Y-%m-%d %H:%M')}\n")
    tag = "_quick" if a.quick else "" if side == 32 else f"_{side}"
    write_rows(Path(a.out) / f"chunk_budget{tag}.csv", rows, head)


if __name__ == "__main__":
    main()
