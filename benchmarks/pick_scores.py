"""How well the default fitness ranks the networks finished fashion_mnist.py runs picked, on the search's own
validation batches and on others.

Every method of a finished ``fashion_mnist.py`` run picked one network per budget and fine-tuned it with 3 seeds.
This scores each of those networks (of one or more runs of one model, from the same dense network) the way the
default search scored its candidates (``tune_steps`` distillation steps, then accuracy on the first
``val_batches`` validation batches: what every search and random pick was chosen on) and again on batches the
search never saw (the next ``val_batches``, and the ``rerank.VAL_FACTOR`` x as many after them that
``hwprune search --rerank-top`` now scores on), and with 100 tuning steps on those; then Kendall tau per budget
between each score and the networks' mean fine-tuned test accuracy. A pick whose score drops on other images was
chosen in part for its luck on the search's. ~70 s per network for mobilenet_v2_cifar on 2 cores.

    python benchmarks/pick_scores.py --model mobilenet_v2_cifar \\
        --run 16x5 runs/fashion_mnist/full benchmarks/results/fashion_mnist.csv \\
        --run 16x7 runs/fashion_mnist/gens7/full benchmarks/results/fashion_mnist_mobilenet_gens7.csv

writes ``pick_scores.csv`` (one row per network) and ``pick_scores_tau.csv``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy_vs_latency as avl  # noqa: E402  (environment())
import bench_common as common  # noqa: E402
import fashion_mnist as fm  # noqa: E402

import hwprune as hp  # noqa: E402
from hwprune.files.atomic import write_atomic  # noqa: E402
from hwprune.search.evaluator import _Limited  # noqa: E402
from hwprune.search.rerank import fresh_batches  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("uniform", "random", "hwprune", "hwprune-rerank", "hwprune-pruningnet")


def scores_of(s: fm.Settings) -> dict:
    """Each score's (tuning steps, first validation batch, batches)."""
    n, fresh = s.val_batches, fresh_batches(s.val_batches)
    window = (fresh["skip_batches"], fresh["val_batches"])
    return {"search": (s.tune_steps, 0, n), "next": (s.tune_steps, n, n), "rerank": (s.tune_steps, *window),
            "rerank_100": (100, *window)}


def picks(model: str, runs: list[tuple[str, str, str]]) -> dict:
    """``{fraction: {encoding: row}}``: each run's picked networks and their mean fine-tuned accuracy (a network
    two runs picked alike is scored once, under the first)."""
    out: dict = {}
    for label, work, csv_path in runs:
        chosen = json.loads((Path(work) / model / "chosen.json").read_text())
        rows = [r for r in common.read_csv(Path(csv_path)) if r["model"] == model and r["budget_fraction"]]
        for method in METHODS:
            for f, pick in chosen.get(method, {}).items():
                mine = [r for r in rows if r["method"] == method and float(r["budget_fraction"]) == float(f)]
                if not mine:
                    continue
                out.setdefault(f, {}).setdefault(tuple(pick["encoding"]), {
                    "model": model, "budget_fraction": f, "run": label, "method": method,
                    "encoding": " ".join(map(str, pick["encoding"])), "seeds": len(mine),
                    "test_acc": round(float(np.mean([float(r["test_acc"]) for r in mine])), 4),
                    "val_acc": round(float(np.mean([float(r["val_acc"]) for r in mine])), 4)})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet_v2_cifar")
    ap.add_argument("--run", nargs=3, action="append", required=True, metavar=("LABEL", "WORK", "CSV"),
                    help="a finished run: a label, its work folder (holding MODEL/chosen.json) and its results CSV")
    ap.add_argument("--out", default=os.environ.get("HWPRUNE_BENCH_RESULTS", str(ROOT / "benchmarks" / "results")))
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    s = fm.Settings().for_model(args.model)
    space, loaders = fm.setup(args.model, s)
    work = Path(args.run[0][1]) / args.model
    dense, _ = hp.load_pruned(work / "dense" / "model.pt")
    ordered = fm.ordered_dense(space, dense, loaders, s.taylor_batches)
    blocks = fm.blocks_space(space, s)
    nets = picks(args.model, args.run)
    rows, scores, started = [], scores_of(s), time.time()
    # one evaluator per tuning-step count: it computes the dense network's outputs on its tuning batches once
    evaluators = {steps: hp.InheritEvaluator(blocks, ordered, tune_steps=steps) for steps, _, _ in scores.values()}
    for f, found in nets.items():
        for enc, row in found.items():
            for name, (steps, start, n) in scores.items():
                ev = evaluators[steps]
                t = time.perf_counter()
                row[name] = round(float(ev.score(enc, _Limited(loaders.val, n, start=start), loaders.calib,
                                                 s.calib_batches)), 4)
                row[f"{name}_s"] = round(time.perf_counter() - t, 1)
            rows.append(row)
            print({k: row[k] for k in ("budget_fraction", "run", "method", "test_acc", *scores)}, flush=True)
    tau = []
    for f in nets:
        mine = [r for r in rows if r["budget_fraction"] == f]
        for name in scores:
            tau.append({"model": args.model, "budget_fraction": f, "score": name, "networks": len(mine),
                        "kendall_tau": round(fm.kendall_tau([r[name] for r in mine], [r["test_acc"] for r in mine]), 3),
                        "spearman": round(fm.spearman([r[name] for r in mine], [r["test_acc"] for r in mine]), 3)})
    out = Path(args.out)
    env = {**avl.environment(), "runs": args.run, "scores": scores, "seconds": round(time.time() - started)}
    write_atomic(out / "pick_scores.csv", common.csv_text(rows, env))
    write_atomic(out / "pick_scores_tau.csv", common.csv_text(tau, env))
    for t in tau:
        print(f"{t['budget_fraction']}: {t['score']:>10} tau {t['kendall_tau']:+.3f} spearman {t['spearman']:+.3f} "
              f"({t['networks']} networks)")


if __name__ == "__main__":
    main()
