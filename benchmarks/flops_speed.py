"""Encodings per second of SearchSpace.flops / params, one at a time and batched.

    python benchmarks/flops_speed.py [--model resnet50] [--seconds 2]

Writes benchmarks/results/flops_speed.csv and prints a summary. The issue's bar:
at least 10,000 encodings/s for resnet50 one at a time.
"""
from __future__ import annotations

import argparse
import os
import csv
import platform
import time
from pathlib import Path

import numpy as np
import torch

import hwprune as hp
from hwprune.models import model_input_shape


def rate(fn, items, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for it in items:
            fn(it)
        n += len(items)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", default=["resnet50", "mobilenet_v2", "resnet20"])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--out", default=str(Path(os.environ.get("HWPRUNE_BENCH_RESULTS", Path(__file__).parent / "results")) / "flops_speed.csv"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.model:
        space = hp.SearchSpace.from_model(hp.create_model(name), (1,) + model_input_shape(name))
        rng = np.random.default_rng(0)
        encs = [space.sample(rng) for _ in range(1000)]
        batch = np.array(encs)
        single = rate(space.flops, encs, args.seconds)
        params = rate(space.params, encs, args.seconds)
        batched = rate(space.flops_batch, [batch], args.seconds) * len(batch)
        rows.append({"model": name, "groups": len(space), "layers": len(space.layers),
                     "flops_per_s": round(single), "params_per_s": round(params),
                     "flops_batch1000_per_s": round(batched)})
        print(f"{name:<14} {len(space):>3} groups  flops(): {single:>10,.0f}/s  params(): {params:>10,.0f}/s  "
              f"flops_batch(1000): {batched:>12,.0f}/s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        f.write(f"# machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, "
                f"numpy {np.__version__}, hwprune {hp.__version__}, {time.strftime('%Y-%m-%d')}\n")
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
