"""Does the search explore enough? Fitness of each method's pick, and of a search with more random networks.

In a ``fashion_mnist.py`` work folder (one model's), for one budget:

1. every pick of ``chosen.json`` (uniform, random search, the default search, the PruningNet search) scored again
   with the default evaluator exactly as the search scores (the same validation and calibration batches), so
   that a pick which fine-tunes better than the search's can be told apart: one the evaluator ranks higher (the
   search did not find it) or lower (the evaluator misranks it);
2. the default search again, on the table alone (asked for what the default search asked after steering, no
   steering), with ``--mutations`` mutations and as many crossovers per generation: the rest of each generation is
   random networks from the budget's window (the default: the benchmark's, ``Settings.bred`` of the population
   bred; until 2026-12-05 all of it, ``--mutations 8`` for mobilenet_v2_cifar's 16, so that after the first
   generation no random network was drawn unless breeding ran dry), once per ``--search-seeds`` seed and
   ``--local-share`` share (of the mutated genes moved one or two choices instead of drawn again; default the
   benchmark's, ``Settings.local_share``; 0 is MetaPruning's redraw).

Writes ``benchmarks/results/search_exploration.csv`` (one row per scored network) and prints them. No
fine-tuning: the fitness the search chooses by, not accuracy. About 7 minutes for mobilenet_v2_cifar on 2 cores.

    python benchmarks/search_exploration.py --work runs/refs1204/full/mobilenet_v2_cifar --fraction 0.3 --mutations 4
    python benchmarks/search_exploration.py --work runs/loc1205/full/resnet20 --fraction 0.5 --local-share 0 0.5 \
        --search-seeds 0 1 2     # (resnet20: ~7 min per search)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as common  # noqa: E402
import fashion_mnist as fm  # noqa: E402

import hwprune as hp  # noqa: E402
from hwprune.search import search  # noqa: E402
from hwprune.search.evaluator import score_many  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PICKS = ("uniform", "random", "hwprune", "hwprune-pruningnet")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="a model's work folder of fashion_mnist.py (holds chosen.json)")
    ap.add_argument("--fraction", type=float, default=0.3, help="the budget, as in chosen.json (default 0.3)")
    ap.add_argument("--mutations", type=int, help="mutations, and as many crossovers, per generation (default: the "
                    "benchmark's, a quarter of the population each)")
    ap.add_argument("--local-share", type=float, nargs="+", help="the searches' shares of mutated genes moved one or "
                    "two choices (several: a search with each; default: the benchmark's)")
    ap.add_argument("--search-seeds", type=int, nargs="+", default=[0], help="a search per seed (and share)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a folder of fashion_mnist.py --quick (its settings)")
    ap.add_argument("--out", default=os.environ.get("HWPRUNE_BENCH_RESULTS", str(ROOT / "benchmarks" / "results")))
    args = ap.parse_args(argv)
    work = Path(args.work)
    name = work.name
    s = (fm.Settings(**fm.QUICK) if args.quick else fm.Settings()).for_model(name)
    chosen = json.loads((work / "chosen.json").read_text())
    f = str(args.fraction)
    if f not in chosen.get("hwprune", {}):
        sys.exit(f"{work / 'chosen.json'} has no default search pick at {f}; pass a --fraction it has")
    torch.set_num_threads(args.workers)
    space, loaders = fm.setup(name, s)
    space = fm.blocks_space(space, s)
    table = hp.LatencyTable.load(work / "latency_table.csv", space)
    dense, _ = hp.load_pruned(work / "dense" / "model.pt")
    ev = fm.inherit_evaluator(fm.DEFAULT_EVALUATOR, space, fm.ordered_dense(space, dense, loaders, s.taylor_batches), s)
    val = fm.limited(loaders.val, s.val_batches)
    picks = [(m, tuple(chosen[m][f]["encoding"])) for m in PICKS if f in chosen.get(m, {})]
    scores = score_many(ev, [e for _, e in picks], val, loaders.calib, s.calib_batches, args.workers)
    rows = [{"model": name, "fraction": args.fraction, "network": m, "search_seed": "", "fitness": round(v, 4),
             "predicted_ms": round(table.predict(e), 4), "flops": space.flops(e), "seconds": "",
             "encoding": " ".join(map(str, e))}
            for (m, e), v in zip(picks, scores)]
    asked = chosen["hwprune"][f].get("steered", {}).get("asked_ms") or chosen["asked"][f]
    cfg = fm.search_config(s, workers=args.workers)
    m = cfg.mutations if args.mutations is None else args.mutations
    for share in args.local_share or [s.local_share]:
        for seed in args.search_seeds:
            t = time.time()
            c = replace(cfg, mutations=m, crossovers=m, steer_after=0, local_share=share, seed=seed)
            res = search(ev, loaders.val, loaders.calib, table=table, latency_ms=[asked], config=c, log=print)
            best = tuple(res.best[0]["encoding"])
            rows.append({"model": name, "fraction": args.fraction, "network": f"search, {m} mutations ({share:g} of "
                         f"their genes moved locally) and {m} crossovers of {s.population}", "search_seed": seed,
                         "fitness": round(res.best[0]["fitness"], 4), "predicted_ms": round(table.predict(best), 4),
                         "flops": space.flops(best), "seconds": round(time.time() - t),
                         "encoding": " ".join(map(str, best))})
    common.write_rows(Path(args.out) / f"search_exploration{'_quick' * args.quick}.csv", rows,
                      f"# {json.dumps({'work': str(work), 'asked_ms': asked, 'settings': fm.asdict(s)})}\n")
    for r in rows:
        seed = f" (seed {r['search_seed']})" if r["search_seed"] != "" else ""
        print(f"{r['network'] + seed:>40}: fitness {r['fitness']:.4f}, predicted {r['predicted_ms']:.4f} ms, "
              f"{r['flops'] / 1e6:.1f} MFLOPs")


if __name__ == "__main__":
    main()
