"""PruningNet cost: training step time vs the plain model, generator size, and a lighter generator.

    python benchmarks/pruningnet_overhead.py [--steps 30] [--epochs 10] [--skip-accuracy]

1. Step time of PruningNet training vs training the plain model, on the same
   bundled-data batches, interleaved step by step so that drift on a shared machine
   hits all alike; the ratios are of medians. Two PruningNet steps: MetaPruning's one
   random encoding (``pnet_ms``, ``ratio``) and the default sandwich (the widest, the
   narrowest and two random networks, in-place distilled: ``sandwich_ms``,
   ``sandwich_ratio``).
2. Generator parameters vs model parameters (resnet50 counted analytically: its full
   generators would need ~3.4 GB of fp32 weights).
3. Whether a low-rank generator output (``rank=4``) keeps accuracy: both trained the
   same way on the bundled data, scored at uniform widths and random encodings after
   BN recalibration.
Writes benchmarks/results/pruningnet_overhead*.csv and prints a summary.
"""
from __future__ import annotations

import argparse
import os
import csv
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import hwprune as hp
from hwprune.data import load_dataset, make_loaders
from hwprune.supernet.evaluate import evaluate_candidate
from hwprune.supernet.pruningnet import PruningNet, generator_params
from hwprune.supernet.sampling import step_encodings
from hwprune.supernet.train import TrainConfig, sampled_step, train_pruningnet

RESULTS = Path(os.environ.get("HWPRUNE_BENCH_RESULTS", Path(__file__).parent / "results"))  # run_all.sh --fast: elsewhere


def step_times(name: str, loaders, steps: int) -> dict:
    torch.manual_seed(0)
    plain = hp.create_model(name, num_classes=10, in_channels=1)
    space = hp.SearchSpace.from_model(hp.create_model(name, num_classes=10, in_channels=1), (1, 1, 32, 32))
    nets = {"plain": plain, "single": PruningNet(space, rank=None), "sandwich": PruningNet(space, rank=None),
            "sandwich_rank4": PruningNet(space, rank=4)}  # the default generator from trained weights
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in nets.items()}
    cfg = TrainConfig()
    times = {k: [] for k in nets}
    batches = iter(loaders.train)
    for i in range(steps + 3):
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loaders.train)
            x, y = next(batches)
        kinds = list(nets)
        for kind in kinds[i % len(kinds):] + kinds[: i % len(kinds)]:  # rotate who goes first
            t = time.perf_counter()
            opts[kind].zero_grad()
            if kind == "plain":
                crit(plain(x), y).backward()
            else:  # one training step as train_pruningnet takes it, with that step's encodings
                sampling = kind.split("_")[0]  # sandwich_rank4 samples as the sandwich does
                sampled_step(nets[kind], x, y, step_encodings(space, 0, i, sampling, cfg.random_samples), cfg)
            opts[kind].step()
            if i >= 3:  # warm-up
                times[kind].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    n_model = sum(v.numel() for v in plain.parameters())
    gen = nets["single"].generator_params()
    return {"model": name, "plain_ms": round(med["plain"] * 1e3, 1), "pnet_ms": round(med["single"] * 1e3, 1),
            "ratio": round(med["single"] / med["plain"], 2), "sandwich_ms": round(med["sandwich"] * 1e3, 1),
            "sandwich_ratio": round(med["sandwich"] / med["plain"], 2),
            "sandwich_rank4_ms": round(med["sandwich_rank4"] * 1e3, 1),
            "sandwich_rank4_ratio": round(med["sandwich_rank4"] / med["plain"], 2), "model_params": n_model,
            "generator_params": gen, "generator_x_model": round(gen / n_model, 1)}


def accuracy_of(rank, loaders, epochs: int, encs) -> tuple[list[float], float]:
    torch.manual_seed(0)
    space = hp.SearchSpace.from_model(hp.create_model("resnet20", num_classes=10, in_channels=1), (1, 1, 32, 32))
    pnet = PruningNet(space, rank=rank)
    t = time.perf_counter()
    train_pruningnet(pnet, loaders.train, config=TrainConfig(epochs=epochs, eval_ratios=()), progress=False,
                     log=lambda s: None)
    spent = time.perf_counter() - t
    return [evaluate_candidate(pnet, e, loaders.val, loaders.calib) for e in encs(space)], spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--skip-accuracy", action="store_true")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = (f"# {platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}, "
             f"hwprune {hp.__version__}, {time.strftime('%Y-%m-%d')}\n")
    loaders = make_loaders(load_dataset("bundled"), 64)
    rows = [step_times(n, loaders, args.steps) for n in ("resnet20", "mobilenet_v2_cifar")]
    r50 = hp.SearchSpace.from_model(hp.create_model("resnet50"), (1, 3, 224, 224))
    n50 = 25_557_032
    for rank in (None, 4, 1):
        rows.append({"model": f"resnet50{'' if rank is None else f' rank={rank}'}", "model_params": n50,
                     "generator_params": generator_params(r50, rank=rank),
                     "generator_x_model": round(generator_params(r50, rank=rank) / n50, 1)})
    _write(RESULTS / "pruningnet_overhead.csv", rows, stamp)
    for r in rows:
        line = f"{r['model']:<22} generator {r['generator_params'] / 1e6:8.1f}M = {r['generator_x_model']:>5}x model"
        if "ratio" in r:
            line += (f"   step: single {r['pnet_ms']:.0f} ms = {r['ratio']}x, sandwich {r['sandwich_ms']:.0f} ms = "
                     f"{r['sandwich_ratio']}x, sandwich rank 4 {r['sandwich_rank4_ms']:.0f} ms = "
                     f"{r['sandwich_rank4_ratio']}x plain ({r['plain_ms']:.0f} ms)")
        print(line)
    if args.skip_accuracy:
        return

    def encs(space):
        rng = np.random.default_rng(1)
        return [space.uniform(r) for r in (1.0, 0.75, 0.5, 0.3)] + [space.sample(rng) for _ in range(4)]

    labels = ["uniform 1.0", "uniform 0.75", "uniform 0.5", "uniform 0.3"] + [f"random {i}" for i in range(4)]
    full, t_full = accuracy_of(None, loaders, args.epochs, encs)
    low, t_low = accuracy_of(args.rank, loaders, args.epochs, encs)
    acc_rows = [{"candidate": l, "full_generator": round(a, 4), f"rank{args.rank}_generator": round(b, 4)}
                for l, a, b in zip(labels, full, low)]
    acc_rows.append({"candidate": "mean", "full_generator": round(float(np.mean(full)), 4),
                     f"rank{args.rank}_generator": round(float(np.mean(low)), 4)})
    _write(RESULTS / "pruningnet_lowrank_accuracy.csv", acc_rows,
           stamp + f"# resnet20, bundled MNIST subset, {args.epochs} epochs each; training {t_full:.0f}s vs {t_low:.0f}s\n")
    print(f"\nresnet20, {args.epochs} epochs, val top-1 after BN recalibration (full vs rank {args.rank} generator):")
    for r in acc_rows:
        print(f"  {r['candidate']:<14} {r['full_generator']:.3f}  {r[f'rank{args.rank}_generator']:.3f}")
    print(f"  training time  {t_full:.0f}s  {t_low:.0f}s")


def _write(path: Path, rows: list[dict], stamp: str) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        f.write(stamp)
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
