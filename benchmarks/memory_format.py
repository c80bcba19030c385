"""Training and scoring speed on the CPU, NCHW against channels last (hwprune/training/memory_format.py).

    python benchmarks/memory_format.py [--threads 1 2] [--rounds 3] [--steps 6]

For each zoo model the fashion_mnist benchmark prunes (resnet20, mobilenet_v2_cifar, Fashion-MNIST's 1x28x28 input,
10 classes) at its dense widths and at half of them (uniform), times a training step (batch 64: forward, backward
and an SGD step) and a forward pass in eval mode (batch 64 and batch 256, per image), with the weights in either
memory format. Both formats are timed in every round, one after the other, and each figure is the median over
rounds of the median step in a round, so that load on a shared machine falls on both alike. Writes
benchmarks/results/memory_format.csv and prints the speed-ups (NCHW time / channels-last time).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).parent))
import hwprune as hp  # noqa: E402
from accuracy_vs_latency import environment  # noqa: E402
from bench_common import csv_text  # noqa: E402
from hwprune.files.atomic import write_atomic  # noqa: E402
from hwprune.training.memory_format import channels_last  # noqa: E402

RESULTS = Path(os.environ.get("HWPRUNE_BENCH_RESULTS", Path(__file__).parent / "results"))
SHAPE = (1, 28, 28)  # Fashion-MNIST


def step_ms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Median ms of ``steps`` training steps (after one untimed)."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


@torch.no_grad()
def forward_us_per_image(model: nn.Module, x: torch.Tensor, batch: int, steps: int) -> float:
    """Median µs per image of forward passes over ``x`` in batches of ``batch`` (after one untimed pass)."""
    model.eval()
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        for k in range(0, len(x), batch):
            model(x[k:k + batch])
        if i:
            times.append((time.perf_counter() - t) * 1e6 / len(x))
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "mobilenet_v2_cifar"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per format and round")
    ap.add_argument("--out", type=Path, default=RESULTS / "memory_format.csv")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    x, y = torch.randn(256, *SHAPE), torch.randint(0, 10, (256,))
    rows = []
    for name in args.models:
        dense = hp.create_model(name, num_classes=10, in_channels=SHAPE[0]).eval()
        space = hp.SearchSpace.from_model(dense, (1, *SHAPE), round_to=4)
        for width in (1.0, 0.5):
            model = space.materialize(space.uniform(width), source=dense)
            for threads in args.threads:
                torch.set_num_threads(threads)
                got = {fmt: {"step": [], "fwd64": [], "fwd256": []} for fmt in ("nchw", "channels_last")}
                for _ in range(args.rounds):
                    for fmt, on in (("nchw", False), ("channels_last", True)):
                        with channels_last(model, enabled=on):
                            got[fmt]["step"].append(step_ms(model, x[:64], y[:64], args.steps))
                            got[fmt]["fwd64"].append(forward_us_per_image(model, x, 64, max(1, args.steps // 4)))
                            got[fmt]["fwd256"].append(forward_us_per_image(model, x, 256, max(1, args.steps // 4)))
                med = {f: {k: statistics.median(v) for k, v in d.items()} for f, d in got.items()}
                row = {"model": name, "width": width, "threads": threads,
                       "step_ms_nchw": round(med["nchw"]["step"], 2),
                       "step_ms_channels_last": round(med["channels_last"]["step"], 2),
                       "step_speedup": round(med["nchw"]["step"] / med["channels_last"]["step"], 3)}
                for b in (64, 256):
                    row[f"fwd{b}_us_per_image_nchw"] = round(med["nchw"][f"fwd{b}"], 1)
                    row[f"fwd{b}_us_per_image_channels_last"] = round(med["channels_last"][f"fwd{b}"], 1)
                    row[f"fwd{b}_speedup"] = round(med["nchw"][f"fwd{b}"] / med["channels_last"][f"fwd{b}"], 3)
                rows.append(row)
                print(f"{name} at {width:.0%} width, {threads} thread(s): training step {row['step_ms_nchw']} ms "
                      f"NCHW / {row['step_ms_channels_last']} ms channels last = {row['step_speedup']}x; forward "
                      f"{row['fwd64_speedup']}x (batch 64), {row['fwd256_speedup']}x (batch 256)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, csv_text(rows, {**environment(), "rounds": args.rounds, "steps": args.steps}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
