"""How much does the search's own randomness move the network it picks? (the default search, run with other seeds)

    python benchmarks/search_variance.py [--model resnet20] [--fractions 0.5] [--search-seeds 0 1 2 3] [--no-ramp]
        [--no-fill] [--quick]

fashion_mnist.py reports one search per budget. Within a budget its methods land within a few
tenths of a point of each other, so whether hwprune's default path beats L1 there can hang on
which network one search happened to find. Here, in fashion_mnist.py's set-up (its latency table,
trained dense network and budgets, kept under its ``--work``; made when missing), the default
search (:func:`fashion_mnist.search_config`, the inherit evaluator with 20 tuning steps) runs
once per search seed and budget, the budget alone; its fittest candidate measured within the
budget (as fashion_mnist.py's ``hwprune`` picks) is fine-tuned as that benchmark fine-tunes,
with its 3 seeds. With the fill (hwprune's default since 2026-12-05 16:00, :mod:`hwprune.search.fill`)
the same search's pick without it is fine-tuned too (``pick`` no-fill; a network both picks
chose is fine-tuned once), so the two differ by the fill alone. The summary gives each winner's
fitness, fill steps and mean test top-1, their spread over search seeds, what the fill moved the
same searches' picks by, and fashion_mnist.py's uniform and L1 networks of the same budget from
its results (same dense network and budgets) for reference.

Writes ``benchmarks/results/search_variance_ramp_fill.csv`` (one row per search seed, pick and
fine-tuning seed; the rows of the other models and budgets already there kept) and
``search_variance_ramp_fill.md``; the searches of other settings are kept
and written apart: ``--no-fill`` ``search_variance_ramp.*`` (before 2026-12-05 16:00), with
``--no-ramp`` too (the bred share the same in every generation, before 2026-12-05)
``search_variance.*``.
``--quick`` runs in seconds on the bundled data (the test suite runs it). Every search and
fine-tune is kept, and a rerun resumes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy_vs_latency as avl  # noqa: E402  (the environment record)
import bench_common as common  # noqa: E402
import fashion_mnist as fm  # noqa: E402

import hwprune as hp  # noqa: E402
from hwprune.files.atomic import write_atomic, write_json  # noqa: E402
from hwprune.search import search  # noqa: E402
from hwprune.search.measured import budget_candidates  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["model", "budget_fraction", "budget_ms", "search_seed", "pick", "filled", "encoding", "fitness",
           "predicted_ms", "measured_ms", "seed", "test_acc", "val_acc", "search_seconds"]


def run(model: str, s: fm.Settings, fractions: list[float], search_seeds: list[int], work: Path, workers: int,
        say, tag: str = "") -> list[dict]:
    s = replace(s.for_model(model), fractions=fractions)
    p = fm.prepare(model, s, work, workers, say)
    space, loaders, table = p.space, p.loaders, p.table
    folder = work / f"search_variance{tag}"
    dense, _ = hp.load_pruned(p.dense_path)
    inherit = fm.inherit_evaluator(fm.DEFAULT_EVALUATOR, space, fm.ordered_dense(space, dense, loaders,
                                                                            s.taylor_batches), s)
    picks = ("default", "no-fill") if s.fill else ("default",)
    winners = {}
    for f, b in p.budgets:
        for seed in search_seeds:
            path = folder / f"{f}_search{seed}" / "winner.json"
            if not path.exists():
                say(f"== {model} {f:.0%} ({b:.4f} ms): search seed {seed}")
                t = time.time()
                res = search(inherit, loaders.val, loaders.calib, table=table, latency_ms=[b],
                             config=fm.search_config(s, seed, workers), run_dir=path.parent, resume=True, log=say,
                             measure=fm.steer_meter(p.within, space))  # (steered as fashion_mnist.py's searches)
                took = round(time.time() - t, 1)
                # the default path's pick (its winner's fill first, where it fills) and, from the same search, the
                # pick without the fill: the two differ by the fill alone
                got = {pick: _pick(res, fill, b, p, space, s, say) for pick, fill in zip(picks, (True, False))}
                write_json(path, {pick: {**w, "search_seconds": took} for pick, w in got.items()})
            kept = json.loads(path.read_text())
            kept = {"default": {**kept, "filled": 0}} if "encoding" in kept else kept  # (one pick, before the fill)
            winners.update({(f, seed, pick): w for pick, w in kept.items()})
    say(f"== {model}: fine-tune every winner ({s.finetune_epochs} epochs, seeds {s.seeds})")
    # a network is fine-tuned once per seed, under the first pick that chose it (the fill may keep the fittest)
    nets = {(f, seed, tuple(w["encoding"])): pick for (f, seed, pick), w in reversed(winners.items())}

    def out(f, seed, pick, t):  # (the default pick's where every pick was the default's, before the fill)
        return folder / f"{f}_search{seed}" / (f"s{t}" if pick == "default" else f"{pick}_s{t}")

    fm.run_finetunes(model, s, p.dense_path, [
        {"kind": "finetune", "model": model, "seed": t, "settings": asdict(s), "dense": str(p.dense_path),
         "encoding": list(enc), "ratio": None, "label": f"{f:.0%} search {seed} {pick} seed {t}",
         "out": str(out(f, seed, pick, t) / "result.json")}
        for (f, seed, enc), pick in nets.items() for t in s.seeds], workers, say)
    rows = []
    for (f, seed, pick), w in winners.items():
        b = dict(p.budgets)[f]
        for t in s.seeds:
            ran = nets[(f, seed, tuple(w["encoding"]))]
            r = json.loads((out(f, seed, ran, t) / "result.json").read_text())
            rows.append({"model": model, "budget_fraction": f, "budget_ms": round(b, 4), "search_seed": seed,
                         "pick": pick, "filled": w["filled"], "encoding": " ".join(map(str, w["encoding"])),
                         "fitness": round(w["fitness"], 4), "predicted_ms": round(table.predict(w["encoding"]), 4),
                         "measured_ms": w["measured_ms"], "seed": t, "test_acc": round(r["test_acc"], 4),
                         "val_acc": round(r["val_acc"], 4), "search_seconds": w["search_seconds"]})
    return rows


def _pick(res, fill: bool, budget_ms: float, p, space, s, say) -> dict:
    """The search's candidate for its budget that fashion_mnist.py's ``hwprune`` would keep: the fittest within the
    budget as measured, its winner's fill first (widest first) where ``fill``; with its fitness and ``filled`` (the
    fill's steps it has, 0 for a searched candidate)."""
    ranked = budget_candidates(res, 0, fill=fill)
    picked = fm.fittest_within([(h["encoding"], h["fitness"]) for h in ranked], budget_ms, p.within, space,
                               s.measure_top, say)
    h = next(h for h in ranked if list(h["encoding"]) == picked["encoding"])
    return {**picked, "fitness": h["fitness"], "filled": h.get("filled", 0)}


def summary(rows: list[dict], reference: list[dict]) -> str:
    """Per budget and pick, each search seed's winner (fitness, the fill's steps, mean test top-1 over the fine-tuning
    seeds), the spread of those means, and fashion_mnist.py's uniform and L1 means at the same budget
    (``reference``: its CSV rows); where both picks ran, what the fill moved the same searches' picks by."""
    lines = ["| model | budget | pick | search seed | fitness | filled | test top-1 (mean ± std over seeds) "
             "| encoding |", "|---|---|---|---|---|---|---|---|"]
    spread = []
    for key in dict.fromkeys((r["model"], float(r["budget_fraction"])) for r in rows):
        of = [r for r in rows if (r["model"], float(r["budget_fraction"])) == key]
        means = {}
        for pick in dict.fromkeys(r.get("pick", "default") for r in of):
            means[pick] = {}
            for seed in dict.fromkeys(r["search_seed"] for r in of):
                got = [r for r in of if r.get("pick", "default") == pick and r["search_seed"] == seed]
                acc = [float(r["test_acc"]) for r in got]
                means[pick][seed] = np.mean(acc)
                lines.append(f"| {key[0]} | {key[1]:.0%} | {pick} | {seed} | {float(got[0]['fitness']):.4f} | "
                             f"{got[0].get('filled', 0)} | {np.mean(acc):.4f} ± {np.std(acc):.4f} | "
                             f"`{got[0]['encoding']}` |")
        ref = {m: np.mean([float(r["test_acc"]) for r in reference if r["model"] == key[0] and r["method"] == m
                           and r["budget_fraction"] and float(r["budget_fraction"]) == key[1]] or [np.nan])
               for m in ("uniform", "l1", "hwprune")}
        known = ", ".join(f"{m} {v:.4f}" for m, v in ref.items() if not np.isnan(v))
        for pick, m in means.items():
            v = list(m.values())
            spread.append(f"{key[0]} {key[1]:.0%}{'' if len(means) == 1 else f' ({pick})'}: winners' means "
                          f"{min(v):.4f}-{max(v):.4f} (mean {np.mean(v):.4f}, std {np.std(v):.4f}) over {len(v)} "
                          f"searches" + (f"; fashion_mnist.py's results at this budget: {known}" if known else ""))
        if {"default", "no-fill"} <= set(means):
            d = np.array([means["default"][k] - means["no-fill"][k] for k in means["default"]])
            same = sum(len({r["encoding"] for r in of if r["search_seed"] == k}) == 1 for k in means["default"])
            spread.append(f"{key[0]} {key[1]:.0%}: the fill moved the same searches' picks by {100 * d.mean():+.2f} "
                          f"points on average ({100 * d.min():+.2f} to {100 * d.max():+.2f}; higher in "
                          f"{int((d > 0).sum())} of {len(d)}, the same network in {same})")
    return "\n".join(lines + [""] + spread)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.5])
    ap.add_argument("--search-seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    ap.add_argument("--ramp", action=argparse.BooleanOptionalAction,
                    help="the searches' bred share grown to the whole generation by the last one, or not (default: "
                         "hwprune's, on); ramped searches are kept and written apart (search_variance_ramp.*)")
    ap.add_argument("--fill", action=argparse.BooleanOptionalAction,
                    help="widen each search's winner toward the budget, or not (default: hwprune's, on); with it, "
                         "each search's pick without the fill is fine-tuned too (pick no-fill), and filled searches "
                         "are kept and written apart (search_variance_ramp_fill.*)")
    ap.add_argument("--fill-rule", choices=("proportion", "saliency"),
                    help="which group the fill widens first (default: hwprune's, proportion); another rule's "
                         "searches are kept and written apart (search_variance_ramp_fill_saliency.*)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="seconds, on the bundled data (for tests)")
    ap.add_argument("--work", default=str(ROOT / "runs" / "fashion_mnist"), help="fashion_mnist.py's kept work")
    ap.add_argument("--out", default=os.environ.get("HWPRUNE_BENCH_RESULTS", str(ROOT / "benchmarks" / "results")))
    args = ap.parse_args(argv)
    s = fm.Settings(**fm.QUICK) if args.quick else fm.Settings()
    s = fm.overridden(s, ramp=args.ramp, fill=args.fill, fill_rule=args.fill_rule)
    # (searches with and without each kept apart, whichever the default)
    tag = "_ramp" * s.ramp + "_fill" * s.fill + f"_{s.fill_rule}" * (s.fill and s.fill_rule != "proportion")
    seeds = args.search_seeds[:2] if args.quick else args.search_seeds
    work = Path(args.work) / ("quick" if args.quick else "full")
    # the work folder of fashion_mnist.py with these settings
    common.claim_work(work, fm.claimed(s), unclaimed=fm.METHOD_LISTS)
    torch.set_num_threads(args.workers)
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    stem = ("search_variance_quick" if args.quick else "search_variance") + tag
    rows = run(args.model, s, args.fractions, seeds, work / args.model, args.workers, say, tag)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # the rows of other models and budgets already written there are kept (each run is of one model)
    ran = {(r["model"], float(r["budget_fraction"])) for r in rows}
    if (out / f"{stem}.csv").exists():
        rows = [r for r in common.read_csv(out / f"{stem}.csv")
                if (r["model"], float(r["budget_fraction"])) not in ran] + rows
    reference = out / ("fashion_mnist_quick.csv" if args.quick else "fashion_mnist.csv")
    text = summary(rows, common.read_csv(reference) if reference.exists() else [])
    write_atomic(out / f"{stem}.csv", common.csv_text(rows, avl.environment(), COLUMNS))
    write_atomic(out / f"{stem}.md", text + "\n")
    print(text)


if __name__ == "__main__":
    main()
