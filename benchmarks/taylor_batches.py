"""How many batches the Taylor channel order needs: which channels stay, and what they fine-tune to.

    python benchmarks/taylor_batches.py [--work runs/fashion_mnist] [--batches 8 40] [--methods uniform hwprune]
                                        [--seeds 0 1 2] [--quick]

In a finished ``fashion_mnist.py`` work folder (its trained dense network and the networks
``chosen.json`` holds per method and budget), for each number of batches B the Taylor
estimate sums over (:data:`~hwprune.core.importance.TAYLOR_BATCHES` is the library's):

- *stability*: the order estimated on the training batches of three seeds (three draws of
  the data a user could have given), and per chosen network and prunable group, how far the
  kept channels of two draws overlap (intersection over union, mean over groups and pairs);
- *accuracy*: every chosen network of ``--methods`` fine-tuned as ``fashion_mnist.py``
  fine-tunes it (same epochs, schedule, distillation, seeds), from the dense weights ordered
  on B calibration batches (the benchmark's own fine-tunes are reused for its B, the library's unless --quick).

Writes ``benchmarks/results/taylor_batches.csv`` (one row per network, B and seed: overlap,
test accuracy, the seconds the order took) and prints mean test accuracy per method, budget
and B. Every fine-tune is kept under ``WORK/taylor_B`` and a rerun resumes.
"""
from __future__ import annotations

import itertools
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fashion_mnist as fm  # noqa: E402

import hwprune as hp  # noqa: E402
from hwprune.core.importance import TAYLOR_BATCHES, channel_importance  # noqa: E402

COLUMNS = ["model", "method", "budget_fraction", "encoding", "batches", "overlap", "seed", "test_acc", "order_seconds"]


def kept(space, scores: dict, enc) -> list[set]:
    """Per prunable group, the channels ``enc`` keeps under ``scores`` (the highest, as order_channels keeps)."""
    return [set(np.argsort(-scores[gi], kind="stable")[: g.choices[c]].tolist())
            for gi, g, c in zip(space.prunable_index, space.groups, enc)]


def overlap(a: list[set], b: list[set]) -> float:
    """Mean over groups of intersection over union (groups kept whole count as 1)."""
    return float(np.mean([len(x & y) / len(x | y) for x, y in zip(a, b)]))


def run(model: str, s: fm.Settings, work: Path, batches: list[int], methods: list[str], workers: int, say) -> list[dict]:
    s = s.for_model(model)
    chosen_path = work / "chosen.json"
    if not chosen_path.exists():
        raise SystemExit(f"{chosen_path} is missing: run benchmarks/fashion_mnist.py --models {model} with this --work "
                         f"first (it chooses the networks this script fine-tunes)")
    p = fm.prepare(model, s, work, workers, say)
    chosen = json.loads(chosen_path.read_text())
    nets = [(m, f, chosen[m][str(f)]["encoding"]) for m in methods for f, _ in p.budgets
            if str(f) in chosen.get(m, {})]
    if not nets:
        raise SystemExit(f"chosen.json has no network of {methods}: choose them with fashion_mnist.py --methods first")
    dense, _ = hp.load_pruned(p.dense_path)

    say(f"== {model}: the kept channels of three data draws, per number of batches")
    streams = [fm.setup(model, s, seed)[1].train for seed in range(3)]
    overlaps, seconds = {}, {}
    for b in batches:
        t = time.time()
        scores = [channel_importance(p.space, dense, "taylor", stream, b) for stream in streams]
        seconds[b] = round((time.time() - t) / len(streams), 1)
        for m, f, enc in nets:
            sets = [kept(p.space, sc, enc) for sc in scores]
            overlaps[(m, f, b)] = round(float(np.mean([overlap(x, y) for x, y in itertools.combinations(sets, 2)])), 4)
            say(f"  {b} batches: {m} {f:.0%}: kept channels overlap {overlaps[(m, f, b)]:.2f} ({seconds[b]} s per order)")

    say(f"== {model}: fine-tune each network from the order of each number of batches (seeds {s.seeds})")
    sd, jobs = asdict(s), []
    for (m, f, enc), b, seed in itertools.product(nets, batches, s.seeds):
        folder = work / (f"{m}_{f}_s{seed}" if b == s.taylor_batches else f"taylor_{b}/{m}_{f}_s{seed}")
        jobs.append({"kind": "finetune", "model": model, "seed": seed, "settings": sd, "dense": str(p.dense_path),
                     "encoding": enc, "ratio": None, "taylor_batches": b, "label": f"{m} {f:.0%} {b} batches seed {seed}",
                     "out": str(folder / "result.json"), "row": (m, f, b, seed)})
    fm.run_finetunes(model, s, p.dense_path, jobs, workers, say)
    rows = []
    for j in jobs:
        m, f, b, seed = j["row"]
        rows.append({"model": model, "method": m, "budget_fraction": f, "encoding": " ".join(map(str, j["encoding"])),
                     "batches": b, "overlap": overlaps[(m, f, b)], "seed": seed,
                     "test_acc": json.loads(Path(j["out"]).read_text())["test_acc"], "order_seconds": seconds[b]})
    return rows


def summary(rows: list[dict]) -> str:
    lines = ["| method | budget | batches | kept-channel overlap | test top-1 (mean ± std) |", "|---|---|---|---|---|"]
    keys = dict.fromkeys((r["method"], r["budget_fraction"], r["batches"]) for r in rows)
    for m, f, b in keys:
        acc = [r["test_acc"] for r in rows if (r["method"], r["budget_fraction"], r["batches"]) == (m, f, b)]
        ov = next(r["overlap"] for r in rows if (r["method"], r["budget_fraction"], r["batches"]) == (m, f, b))
        sd = np.std(acc, ddof=1) if len(acc) > 1 else 0.0
        lines.append(f"| {m} | {float(f):.0%} | {b} | {ov:.2f} | {np.mean(acc):.4f} ± {sd:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    def own(ap):
        ap.add_argument("--batches", nargs="+", type=int, help=f"numbers of batches (default: fashion_mnist.py's, "
                        f"{TAYLOR_BATCHES}, and 40)")
        ap.add_argument("--methods", nargs="+", default=["uniform", "hwprune"])

    args, s, work, say = fm.follow_up(argv, __doc__, own)
    rows = run(args.model, s, work, args.batches or [s.taylor_batches, 40], args.methods, args.workers, say)
    fm.write_follow_up(rows, args, "taylor_batches", COLUMNS)
    print(summary(rows))


if __name__ == "__main__":
    main()
