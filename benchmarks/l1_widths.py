"""Where L1 pruning beats the search at a budget: is it the widths L1 keeps, or the channels?

    python benchmarks/l1_widths.py [--work runs/fashion_mnist] [--fraction 0.3] [--seeds 0 1 2] [--quick]

In a finished ``fashion_mnist.py`` work folder holding L1's and hwprune's networks at the budget:
L1's network (Torch-Pruning at its bisected ratio) is read as an encoding of the search space
(each group's width, as the choice it equals, else the nearest above), and fine-tuned as
``fashion_mnist.py`` fine-tunes every searched network (same epochs, schedule, distillation and
seeds) from the dense weights in two channel orders: the default, Taylor (what hwprune's networks
inherit), and L1 magnitude (what Torch-Pruning keeps); hwprune's network is fine-tuned in the L1
order too. Beside them, the benchmark's own L1 and hwprune rows, what the table predicts for each
encoding, and the search's fitness (the inherit evaluator, 20 tuning steps) of each encoding in each
order, and (``--tune-steps``) of each encoding in the Taylor order tuned longer. If L1's widths in the
Taylor order fine-tune as L1 does, the search loses on the widths it prefers (its fitness); if only in
the L1 order, on the channels it inherits.

Writes ``benchmarks/results/l1_widths.csv`` (one row per arm and seed) and prints a summary. The
fine-tunes are kept under ``WORK/l1_widths`` and a rerun resumes.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy_vs_latency as avl  # noqa: E402  (Torch-Pruning's L1 pruning)
import fashion_mnist as fm  # noqa: E402

import hwprune as hp  # noqa: E402
from hwprune.core.importance import order_channels  # noqa: E402
from hwprune.search.evaluator import _Limited  # noqa: E402

COLUMNS = ["model", "budget_fraction", "arm", "encoding", "order", "predicted_ms", "fitness", "seed", "test_acc"]


def encoding_of(space, pruned: torch.nn.Module) -> tuple[tuple[int, ...], list[int]]:
    """``pruned``'s widths as an encoding of ``space`` (per group the choice it equals, else the nearest above, else
    the widest) and the widths themselves: each group's width is the output channels of a conv it holds."""
    modules = dict(pruned.named_modules())
    enc, widths = [], []
    for g in space.groups:
        conv = next(m.split(":")[0] for m in g.members if m.endswith(":out"))
        w = int(modules[conv].out_channels)
        widths.append(w)
        enc.append(min(int(np.searchsorted(np.asarray(g.choices), w, side="left")), len(g.choices) - 1))
    return tuple(enc), widths


def run(model: str, s: fm.Settings, work: Path, fraction: float, workers: int, say,
        tune_steps=()) -> list[dict]:
    s = s.for_model(model)
    chosen_path = work / "chosen.json"
    chosen = json.loads(chosen_path.read_text()) if chosen_path.exists() else {}
    if not all(str(fraction) in chosen.get(m, {}) for m in ("l1", "hwprune")):
        raise SystemExit(f"{chosen_path} has no L1 and hwprune networks at {fraction}: run benchmarks/fashion_mnist.py "
                         f"--models {model} --fractions {fraction} --methods l1 hwprune with this --work first")
    p = fm.prepare(model, s, work, workers, say)
    dense, _ = hp.load_pruned(p.dense_path)
    example = torch.zeros(1, *p.loaders.input_shape)
    l1_enc, l1_widths = encoding_of(p.space, avl.l1_prune(dense, chosen["l1"][str(fraction)]["ratio"], example, s))
    hw_enc = tuple(chosen["hwprune"][str(fraction)]["encoding"])
    exact = [g.choices[c] for g, c in zip(p.space.groups, l1_enc)] == l1_widths
    say(f"== {model} {fraction:.0%}: L1's widths {l1_widths} as the encoding {list(l1_enc)}"
        f"{'' if exact else ' (some widths rounded up to a choice)'}; hwprune's {list(hw_enc)}")

    orders = {"taylor": fm.ordered_dense(p.space, dense, p.loaders, s.taylor_batches),
              "l1": order_channels(p.space, dense, metric="l1")}
    val = _Limited(p.loaders.val, s.val_batches)
    fitness, longer = {}, {}
    for order, source in orders.items():
        ev = fm.inherit_evaluator(fm.DEFAULT_EVALUATOR, p.space, source, s)
        for enc in (l1_enc, hw_enc):
            fitness[(enc, order)] = round(float(ev.score(enc, val, p.loaders.calib, s.calib_batches)), 4)
            say(f"  fitness of {list(enc)} in the {order} order: {fitness[(enc, order)]:.4f}")
    for steps in tune_steps:  # would a costlier fitness (hwprune search --tune-steps, --rerank-steps) rank them right?
        ev = fm.inherit_evaluator(fm.DEFAULT_EVALUATOR, p.space, orders["taylor"], replace(s, tune_steps=steps))
        for enc in (l1_enc, hw_enc):
            longer[(enc, steps)] = round(float(ev.score(enc, val, p.loaders.calib, s.calib_batches)), 4)
        say(f"  {steps} tuning steps (Taylor order): L1's widths {longer[(l1_enc, steps)]:.4f}, hwprune's "
            f"{longer[(hw_enc, steps)]:.4f}")

    arms = [("l1 widths", l1_enc, "taylor"), ("l1 widths", l1_enc, "l1"), ("hwprune", hw_enc, "l1")]
    sd, jobs = asdict(s), []
    for arm, enc, order in arms:
        for seed in s.seeds:
            folder = work / "l1_widths" / f"{arm.replace(' ', '_')}_{order}_{fraction}_s{seed}"
            jobs.append({"kind": "finetune", "model": model, "seed": seed, "settings": sd, "dense": str(p.dense_path),
                         "encoding": list(enc), "ratio": None, "order": order, "out": str(folder / "result.json"),
                         "label": f"{arm} ({order} order) {fraction:.0%} seed {seed}", "arm": arm})
    say(f"== {model}: fine-tune each arm (seeds {s.seeds})")
    fm.run_finetunes(model, s, p.dense_path, jobs, workers, say)
    rows = []
    for j in jobs:
        rows.append({"arm": j["arm"], "enc": tuple(j["encoding"]), "order": j["order"], "seed": j["seed"],
                     "test_acc": json.loads(Path(j["out"]).read_text())["test_acc"]})
    for method, enc, order in (("l1", l1_enc, "l1 (Torch-Pruning's own)"), ("hwprune", hw_enc, "taylor")):
        for seed in s.seeds:
            done = work / f"{method}_{fraction}_s{seed}" / "result.json"
            if done.exists():
                rows.append({"arm": f"{method} (fashion_mnist.py)", "enc": enc, "order": order, "seed": seed,
                             "test_acc": json.loads(done.read_text())["test_acc"]})
    return [{"model": model, "budget_fraction": fraction, "arm": r["arm"],
             "encoding": " ".join(map(str, r["enc"])), "order": r["order"],
             "predicted_ms": round(float(p.table.predict(r["enc"])), 4),
             "fitness": fitness.get((r["enc"], r["order"]), ""), "seed": r["seed"], "test_acc": r["test_acc"],
             **{f"fitness_{k}": longer[(r["enc"], k)] if r["order"] == "taylor" else "" for k in tune_steps}}
            for r in rows]


def summary(rows: list[dict]) -> str:
    lines = ["| arm | order | encoding | predicted ms | fitness (20 steps) | tuned longer (steps: fitness) | "
             "test top-1 (mean ± std) |", "|---|---|---|---|---|---|---|"]
    for key in dict.fromkeys((r["arm"], r["order"]) for r in rows):
        g = [r for r in rows if (r["arm"], r["order"]) == key]
        acc = np.array([float(r["test_acc"]) for r in g])
        sd = acc.std(ddof=1) if len(acc) > 1 else 0.0
        longer = ", ".join(f"{k[8:]}: {v}" for k, v in g[0].items() if k.startswith("fitness_") and v != "")
        lines.append(f"| {key[0]} | {key[1]} | {g[0]['encoding']} | {g[0]['predicted_ms']} | {g[0]['fitness']} | "
                     f"{longer} | {acc.mean():.4f} ± {sd:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    def own(ap):
        ap.add_argument("--fraction", type=float, default=0.3, help="the budget (a fraction fashion_mnist.py ran)")
        ap.add_argument("--tune-steps", nargs="*", type=int, default=[0, 100, 300],
                        help="also score both encodings (Taylor order) tuned this many steps (fitness_N columns)")

    args, s, work, say = fm.follow_up(argv, __doc__, own)
    rows = run(args.model, s, work, args.fraction, args.workers, say, args.tune_steps)
    fm.write_follow_up(rows, args, "l1_widths", COLUMNS + [f"fitness_{k}" for k in args.tune_steps])
    print(summary(rows))


if __name__ == "__main__":
    main()
