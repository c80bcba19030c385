"""Does an evaluator rank networks of the *same* latency as fine-tuning does? (what a search under one budget needs)

    python benchmarks/within_budget.py [--model resnet20] [--fractions 0.3 0.5] [--n 10] [--quick]

fashion_mnist.py's tau table spreads its networks over 25-75% of the dense latency, where
latency alone orders most of them; a search compares networks under one budget. Here, in
fashion_mnist.py's set-up (its latency table and trained dense network, kept under its
``--work``, made when missing): per budget, ``n`` random networks whose predicted latency
lies within 92-100% of it (drawn as the search draws, spread from the fewest to the most
MACs) and the widest uniform network under it are each fine-tuned as that benchmark
fine-tunes (one seed); then every evaluator scores them and Kendall tau / Spearman with the
fine-tuned accuracy are written per budget: the inherit evaluator at 0, 20 and 40 tuning
steps (0: adaptive BN alone; the library's default is
:data:`~hwprune.supernet.evaluate.TUNE_STEPS`), the default averaged over :data:`DRAWS` draws of
the batches it recalibrates and tunes on, and MACs as a score (the cheapest proxy).

``--saliency`` adds, per budget, the latency-saliency network (``hwprune.search.baselines``, in the
search's first generation since 2026-12-05): where does the network that spends the budget by Taylor
saliency per ms land after fine-tuning?

``--search-top K`` adds, per budget, the ``K`` fittest networks of fashion_mnist.py's default search
in the same work folder (what it chose among, and the one it chose): is any network of that
latency better than the uniform one after fine-tuning, does the search's top hold it, and would
a longer score (``--steps 0 20 200``: about an epoch of distillation) have picked it?

Writes ``benchmarks/results/within_budget.csv`` (one row per network: encoding, costs,
accuracy and every score) and ``within_budget_tau.csv``. ``--quick`` runs in seconds on the
bundled data (the test suite runs it). Every fine-tune is kept and a rerun resumes.
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
from hwprune.search import SearchConfig  # noqa: E402
from hwprune.search.baselines import saliency_encoding  # noqa: E402
from hwprune.search.budgets import Budget  # noqa: E402
from hwprune.search.evaluator import CandidateEvaluator, _Rotated  # noqa: E402
from hwprune.search.evolution import draw_encodings  # noqa: E402
from hwprune.search.measured import fittest_candidates  # noqa: E402
from hwprune.supernet.evaluate import InheritEvaluator  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["model", "budget_fraction", "budget_ms", "network", "encoding", "predicted_ms", "flops", "params",
           "test_acc", "uniform", "source", "picked"]
SOURCES = ("random", "uniform", "search", "saliency")  # how a network came in: drawn, the uniform one, a search's
# fittest, the budget's latency-saliency network
TAU_COLUMNS = ["model", "budget_fraction", "score", "candidates", "kendall_tau", "spearman"]
STEPS = (0, 20, 40)  # tuning steps of the inherit evaluator scored (the default's among them)
DRAWS = 4  # and the default's score averaged over this many draws of its calibration and tuning batches


POOL, SPREAD = 200_000, 600  # random networks drawn; of those in the window, how many the MACs spread is taken from


def candidates(space, table, budget_ms: float, n: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """``n`` random networks within 92-100% of the budget (predicted), from the fewest MACs to the most, then the
    widest uniform network under it."""
    pool = draw_encodings(space, rng, POOL)
    lat = table.predict_batch(pool)
    inside = pool[(lat <= budget_ms) & (lat >= 0.92 * budget_ms)][:SPREAD]
    if not len(inside):
        raise SystemExit(f"no network within 92-100% of {budget_ms:.4f} ms in {POOL} draws")
    order = np.argsort(space.flops_batch(inside))
    picks = [tuple(map(int, inside[order[int(q)]])) for q in np.linspace(0, len(order) - 1, n)]
    uniform = next((space.uniform(r) for r in np.linspace(1, 0.05, 96) if table.predict(space.uniform(r)) <= budget_ms),
                   space.narrowest())
    return picks + [tuple(uniform)]


def search_picks(work: Path, budgets, k: int) -> list[dict]:
    """Per budget, the ``k`` fittest networks fashion_mnist.py's default search evaluated (each once, fittest first)
    and the one it chose (the fittest measured within the budget), from its state and ``chosen.json`` in ``work``."""
    path = work / "chosen.json"
    chosen = json.loads(path.read_text()) if path.exists() else {}
    if "hwprune" not in chosen:
        raise SystemExit(f"no hwprune search chosen in {work}: run fashion_mnist.py with this --work first "
                         f"(--methods hwprune)")
    states = [json.loads(p.read_text()) for p in sorted(work.glob("hwprune_search_*/search_state.json"),
                                                         key=lambda p: -p.stat().st_mtime)]
    out = []
    for f, _ in budgets:
        asked, pick = chosen["asked"][str(f)], chosen["hwprune"][str(f)]["encoding"]
        found = [(st, i) for st in states for i, b in enumerate(st["budgets"])
                 if abs(b["latency_ms"] - asked) < 1e-9]
        if not found:
            raise SystemExit(f"no search state in {work} holds the {f:.0%} budget ({asked} ms asked)")
        st, i = found[0]
        ranked = fittest_candidates(st["history"], i, pick)
        top = ranked[:k] + [h for h in ranked[k:] if h["encoding"] == pick]  # the chosen one, wherever it ranks
        out += [{"fraction": f, "encoding": list(h["encoding"]), "predicted": h["latency_ms"], "source": "search",
                 "picked": h["encoding"] == pick} for h in top]
    return out


def saliency_networks(space, table, ordered, budgets) -> list[dict]:
    """Per budget, the latency-saliency network the search's first generation holds (at the budget itself)."""
    ev = CandidateEvaluator(InheritEvaluator(space, ordered, tune_steps=0), table, None, None, SearchConfig())
    out = []
    for f, b in budgets:
        enc = saliency_encoding(ev, Budget(latency_ms=b), ordered.hwprune_importance.get("saliency"))
        if enc is None:
            raise SystemExit(f"no saliency network meets the {f:.0%} budget ({b:.4f} ms)")
        out.append({"fraction": f, "encoding": list(enc), "predicted": float(table.predict(enc)),
                    "source": "saliency"})
    return out


def run(model: str, s: fm.Settings, fractions: list[float], n: int, work: Path, out: Path, stem: str,
        workers: int, say, search_top: int = 0, steps: tuple[int, ...] = STEPS,
        saliency: bool = False) -> tuple[list[dict], list[dict]]:
    s = replace(s.for_model(model), fractions=fractions)
    sd = asdict(s)
    p = fm.prepare(model, s, work, workers, say)
    space, loaders, table, budgets, dense_dir = p.space, p.loaders, p.table, p.budgets, p.dense_path.parent
    dense, _ = hp.load_pruned(dense_dir / "model.pt")
    ordered = fm.ordered_dense(space, dense, loaders, s.taylor_batches)

    folder = work / "exp_budget"  # (the name the first, exploratory run of this measurement used)
    cands_path = folder / "cands.json"
    if cands_path.exists():
        cands = json.loads(cands_path.read_text())
    else:
        rng = np.random.default_rng(1)  # one stream, budget after budget
        cands = []
        for f, b in budgets:
            made = candidates(space, table, b, n, rng)
            cands += [{"fraction": f, "encoding": list(e), "predicted": float(table.predict(e)),
                       "source": "random" if j < len(made) - 1 else "uniform"} for j, e in enumerate(made)]
        folder.mkdir(parents=True, exist_ok=True)
        write_json(cands_path, cands)
    for f in {c["fraction"] for c in cands}:  # (a list kept before sources were recorded: the uniform one is last)
        of_f = [c for c in cands if c["fraction"] == f]
        for j, c in enumerate(of_f):
            c.setdefault("source", "random" if j < len(of_f) - 1 else "uniform")
    added = (search_picks(work, budgets, search_top) if search_top else []) + (
        saliency_networks(space, table, ordered, budgets) if saliency else [])
    if added:  # appended, so that the networks fine-tuned before keep their folders
        known = {(c["fraction"], tuple(c["encoding"])) for c in cands}
        for c in added:
            same = [d for d in cands if (d["fraction"], tuple(d["encoding"])) == (c["fraction"], tuple(c["encoding"]))]
            for d in same:
                d["picked"] = d.get("picked", False) or c.get("picked", False)
            if (c["fraction"], tuple(c["encoding"])) not in known:
                cands.append(c)
                known.add((c["fraction"], tuple(c["encoding"])))
        write_json(cands_path, cands)
    say(f"== {model}: fine-tune {len(cands)} networks ({s.finetune_epochs} epochs, seed 0)")
    fm.run_finetunes(model, s, dense_dir / "model.pt", [
        {"kind": "finetune", "model": model, "seed": 0, "settings": sd, "dense": str(dense_dir / "model.pt"),
         "encoding": c["encoding"], "ratio": None, "label": f"network {k}",
         "out": str(folder / f"c{k}" / "result.json")}
        for k, c in enumerate(cands)], workers, say)

    say(f"== {model}: score every network with every evaluator")
    val = fm.limited(loaders.val, s.val_batches)
    scores: dict[str, list[float]] = {"macs": [float(space.flops(tuple(c["encoding"]))) for c in cands]}
    for n_steps in steps:
        ev = InheritEvaluator(space, ordered, tune_steps=n_steps)
        t = time.time()
        scores[f"inherit-{n_steps}"] = [ev.score(tuple(c["encoding"]), val, loaders.calib, s.calib_batches)
                                      for c in cands]
        say(f"  inherit, {n_steps} tuning steps: {(time.time() - t) / len(cands):.2f} s per network")
    # the default's score over several draws of its batches (each ``calib_batches`` + tuning steps further on; the
    # first draw is the loader as it is, scored above), draw by draw: the evaluator keeps the dense network's
    # outputs for one draw's tuning batches at a time
    ev = fm.inherit_evaluator(fm.DEFAULT_EVALUATOR, space, ordered, s)
    if f"inherit-{ev.tune_steps}" not in scores:
        raise SystemExit(f"--steps must include the default's {ev.tune_steps} tuning steps")
    draws = [_Rotated(loaders.calib, d * (s.calib_batches + ev.tune_steps)) for d in range(1, DRAWS)]
    per_draw = [scores[f"inherit-{ev.tune_steps}"]] + [
        [ev.score(tuple(c["encoding"]), val, calib, s.calib_batches) for c in cands] for calib in draws]
    scores[f"inherit-{ev.tune_steps}x{DRAWS}"] = [float(v) for v in np.mean(per_draw, axis=0)]
    rows, tau = [], []
    for f, b in budgets:
        idx = [k for k, c in enumerate(cands) if c["fraction"] == f]
        acc = [json.loads((folder / f"c{k}" / "result.json").read_text())["test_acc"] for k in idx]
        for j, k in enumerate(idx):
            enc = tuple(cands[k]["encoding"])
            rows.append({"model": model, "budget_fraction": f, "budget_ms": round(b, 4), "network": k,
                         "encoding": " ".join(map(str, enc)), "predicted_ms": round(table.predict(enc), 4),
                         "flops": space.flops(enc), "params": space.params(enc), "test_acc": acc[j],
                         "uniform": cands[k]["source"] == "uniform", "source": cands[k]["source"],
                         "picked": bool(cands[k].get("picked", False)),
                         **{name: round(v[k], 4) for name, v in scores.items()}})
        for name, v in scores.items():
            got = [v[k] for k in idx]
            tau.append({"model": model, "budget_fraction": f, "score": name, "candidates": len(idx),
                        "kendall_tau": round(fm.kendall_tau(got, acc), 4), "spearman": round(fm.spearman(got, acc), 4)})
    env = avl.environment()
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"{stem}.csv", common.csv_text(rows, env, COLUMNS + list(scores)))
    write_atomic(out / f"{stem}_tau.csv", common.csv_text(tau, env, TAU_COLUMNS))
    return rows, tau


def summary(tau: list[dict], rows: list[dict] = ()) -> str:
    lines = ["| model | budget | score | networks | Kendall tau | Spearman |", "|---|---|---|---|---|---|"]
    lines += [f"| {t['model']} | {float(t['budget_fraction']):.0%} | {t['score']} | {t['candidates']} | "
              f"{float(t['kendall_tau']):+.3f} | {float(t['spearman']):+.3f} |" for t in tau]
    scores = [k for k in (rows[0] if rows else {}) if k == "macs" or k.startswith("inherit-")]
    for f in dict.fromkeys(r["budget_fraction"] for r in rows):  # each source's networks against the uniform one
        of_f = [r for r in rows if r["budget_fraction"] == f]
        uniform = next((r["test_acc"] for r in of_f if r["source"] == "uniform"), None)
        lines.append(f"\n{of_f[0]['model']} at {float(f):.0%}: fine-tuned top-1 (one seed) by source, beside the "
                     f"uniform network's {uniform:.4f}")
        for src in ("random", "search", "saliency"):
            acc = [r["test_acc"] for r in of_f if r["source"] == src]
            if acc:
                lines.append(f"  {src:7s} {len(acc):2d} networks: best {max(acc):.4f}, median {np.median(acc):.4f}, "
                             f"{sum(a > uniform for a in acc)} above uniform")
        picked = [r["test_acc"] for r in of_f if r["picked"]]
        if picked:
            lines.append(f"  the search's pick: {picked[0]:.4f}")
        for name in scores:  # what each score would have picked of all of them
            best = max(of_f, key=lambda r: r[name])
            lines.append(f"  the highest {name}: network {best['network']} ({best['source']}), {best['test_acc']:.4f}")
    return "\n".join(lines)


QUICK = dict(per_model={}, data="bundled", limit=256, dense_epochs=1, finetune_epochs=1, calib_batches=1,
             val_batches=1, budget_of="range", profile_repeats=3, calibrate=2, passes=1, runs_per_pass=2,
             max_wait_s=0.2, round_to=8)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.3, 0.5])
    ap.add_argument("--n", type=int, default=10, help="random networks per budget (the uniform one is added)")
    ap.add_argument("--search-top", type=int, default=0, metavar="K",
                    help="add each budget's K fittest networks of fashion_mnist.py's default search in --work")
    ap.add_argument("--saliency", action="store_true", help="add each budget's latency-saliency network")
    ap.add_argument("--steps", nargs="+", type=int, default=list(STEPS),
                    help=f"tuning steps of the inherit scores (default {' '.join(map(str, STEPS))})")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="seconds, on the bundled data (for tests)")
    ap.add_argument("--work", default=str(ROOT / "runs" / "fashion_mnist"), help="fashion_mnist.py's kept work")
    ap.add_argument("--out", default=os.environ.get("HWPRUNE_BENCH_RESULTS", str(ROOT / "benchmarks" / "results")))
    args = ap.parse_args(argv)
    s = replace(fm.Settings(), **QUICK) if args.quick else fm.Settings()
    n, fractions = (3, [0.5]) if args.quick else (args.n, args.fractions)
    work = Path(args.work) / ("quick" if args.quick else "full") / args.model
    torch.set_num_threads(args.workers)
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    stem = "within_budget_quick" if args.quick else "within_budget"
    rows, tau = run(args.model, s, fractions, n, work, Path(args.out), stem, args.workers, say,
                    search_top=args.search_top, steps=tuple(args.steps), saliency=args.saliency)
    print(summary(tau, rows))


if __name__ == "__main__":
    main()
