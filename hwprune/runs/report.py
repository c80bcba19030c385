"""The quickstart's report: figures gathered from a run folder's manifest and files, as JSON and markdown."""
from __future__ import annotations

import json
import platform
import time

from ..files.atomic import write_atomic, write_json
from .folder import RunFolder

__all__ = ["report_stage", "markdown"]


def report_stage(run: RunFolder, space, table, *, config: dict, budget_ms: float, budget_rule: str,
                 networks=("searched", "uniform", "magnitude"), key: str = "report") -> dict:
    """Write ``report.json`` and ``report.md`` from what the earlier stages recorded; returns the figures."""
    import torch

    from ..deploy.verify import VerifyReport

    run.begin(key, "report", {"budget_ms": budget_ms, "networks": list(networks)})
    manifest = run.manifest()["stages"]
    result = json.loads(run.file("search", "result").read_text())
    best = result["best"][0]
    chosen = {"searched": best, **{name: best.get(name) for name in networks if name != "searched"}}
    reports = [VerifyReport.from_dict(r) for r in json.loads(run.file("verify", "report").read_text())["reports"]]
    by_file = {r.model.rsplit("/", 1)[-1]: r for r in reports}
    rows = {}
    for name in networks:
        rep = by_file.get(f"{name}.onnx")
        if chosen.get(name) is None or rep is None:
            continue
        enc = chosen[name]["encoding"]
        acc = manifest[f"finetune_{name}"].get("summary") or {}
        rows[name] = {
            "encoding": list(enc), "channels": space.channels(enc), "flops": space.flops(enc),
            "params": space.params(enc), "fitness": chosen[name]["fitness"],
            "test_acc": round(acc["test_acc"], 4), "val_acc": round(acc["val_acc"], 4),
            "predicted_ms": round(rep.predicted_ms, 4), "measured_ms": round(rep.measured_ms, 4),
            "overshoot": round(rep.overshoot, 4), "dense_measured_ms": round(rep.dense_measured_ms, 4),
            "speedup": round(rep.speedup, 3), "within_budget": rep.within_budget,
            "onnx_max_abs_diff": manifest[f"export_{name}"]["summary"]["max_abs_diff"]}
    seconds = {k: r.get("seconds") for k, r in manifest.items() if k != key}
    figures = {
        "machine": {"cpu": table.backend.get("device_name"), "python": platform.python_version(),
                    "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M")},
        "config": config, "smoke": bool(config.get("smoke")), "budget_ms": budget_ms, "budget_rule": budget_rule,
        "tolerance": reports[0].tolerance, "dense_predicted_ms": round(table.predict(space.full()), 4),
        # (the narrowest network every compared method can be: the baselines never drop a block)
        "narrowest_predicted_ms": round(table.predict(space.narrowest(keep_blocks=True)), 4),
        "dense_measured_ms": round(reports[0].dense_measured_ms, 4),
        "search": {k: manifest["search"]["summary"][k] for k in ("evaluated", "candidates_per_s")},
        "evaluator": manifest["search"]["settings"]["evaluator"],
        "tune_steps": manifest["search"]["settings"].get("tune_steps"),
        # the search's fittest timed here (measure_top): how many, and which of them (0: its fittest) was kept
        "measured": {"top": manifest["search"]["settings"].get("measure_top") or 0,
                     "rank": best.get("measured_rank"), "within": best.get("measured_within"),
                     "filled": (best.get("filled") or {}).get("steps"),  # (widths the fill widened it by)
                     "asked_ms": (best.get("steered") or {}).get("asked_ms"),
                     # the baselines held to the budget as measured too (None: to the table alone)
                     "baselines": {name: (best.get(name) or {}).get("measured_within") for name in networks
                                   if name != "searched"}},
        "dense": {k: round(v, 4) for k, v in (manifest["pretrain"].get("summary") or {}).items() if v is not None},
        "networks": rows, "stage_seconds": seconds, "total_seconds": round(sum(v or 0 for v in seconds.values()), 1),
    }
    write_json(run.path / "report.json", figures)
    write_atomic(run.path / "report.md", markdown(figures))
    run.finish(key, {"report": run.path / "report.md", "figures": run.path / "report.json"})
    return figures


def _versus(r: dict) -> str:
    word = "over" if r["overshoot"] > 0 else "under"
    return f"{abs(r['overshoot']):.1%} {word}{'' if r['within_budget'] else ' (OVER BUDGET)'}"


def _tuned(steps) -> str:
    """How the candidates were tuned before scoring, as the report says it (nothing for adaptive BN alone)."""
    return f", tuned {_plural(steps, 'distillation step')} and recalibrated again" if steps else ""


def _measured(m: dict) -> str:
    """What the search timed here before keeping its pick, as the report says it (nothing where it trusted the
    table)."""
    if not m.get("top"):
        return ""
    timed = f"; its {m['top']} fittest timed here" if m["top"] > 1 else "; its fittest timed here"
    if m.get("within") is False:
        return timed + ", none within the budget as measured: the fittest kept"
    rank = m.get("rank") or 0
    widened = f", widened {_plural(m['filled'], 'width')} toward the budget" if m.get("filled") else ""
    return timed + ", the fittest measured within the budget kept (" + (
        f"the search's own fittest{widened})" if rank == 0 else f"number {rank + 1} by fitness)")


def _held(m: dict) -> str:
    """How the three networks were held to the budget, as the report says it."""
    if not m.get("top") or m.get("within") is False:
        return " on the same table"
    if (m.get("baselines") or {}) and all(m["baselines"].values()):
        return (" as measured here when each was picked (the searched one's table asked for what it predicts at the "
                "budget as measured, so its prediction may read over it)")
    return (" (the uniform and L1 networks on the table; the searched one as measured here when it was picked, the "
            "table asked for what it predicts at the budget as measured, so its prediction may read over it)")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


LABELS = {"searched": "searched (hwprune)", "uniform": "uniform width", "magnitude": "L1 magnitude (global)"}


def markdown(f: dict) -> str:
    dense = f["dense"]
    rows = [f"| dense (unpruned) | {dense.get('test_acc', float('nan')):.4f} | | {f['dense_predicted_ms']:.4f} | "
            f"{f['dense_measured_ms']:.4f} | | 1.00x | | |"]
    rows += [f"| {LABELS.get(name, name)} | {r['test_acc']:.4f} | {r['fitness']:.4f} | {r['predicted_ms']:.4f} | "
             f"{r['measured_ms']:.4f} | {_versus(r)} | {r['speedup']:.2f}x | {r['flops'] / 1e6:.2f}M | "
             f"{r['params'] / 1e3:.1f}K |" for name, r in f["networks"].items()]
    c = f["config"]
    smoke = ["**Smoke run** (`--fast`: 1 epoch on a few hundred images, a tiny search). It checks that every "
             "stage runs; its accuracies and its choice of network mean nothing.", ""] if f["smoke"] else []
    lines = [
        "# hwprune quickstart report", "", *smoke,
        f"{c['model']} on the bundled MNIST subset; latency: onnxruntime on {f['machine']['cpu']}, "
        f"1 thread, batch 1 ({f['machine']['date']}, torch {f['machine']['torch']}).", "",
        f"- dense network: trained {_plural(c['pretrain_epochs'], 'epoch')}, test top-1 "
        f"{dense.get('test_acc', float('nan')):.4f}; {f['dense_predicted_ms']:.4f} ms predicted, "
        f"{f['dense_measured_ms']:.4f} ms measured (once, interleaved with the pruned networks: every speed-up "
        f"below is against this measurement)",
        f"- budget: {f['budget_ms']:.4f} ms ({f['budget_rule']}); tolerance {f['tolerance']:.0%}: a network "
        f"measured over the budget by any more than that is marked OVER BUDGET",
        f"- search: {f['search']['evaluated']} candidates scored with the `{f['evaluator']}` evaluator "
        f"({c['importance']}-ordered dense weights, sliced, BatchNorm recalibrated"
        f"{_tuned(f.get('tune_steps'))}), "
        f"{f['search']['candidates_per_s']:.2f}/s{_measured(f.get('measured') or {})}", "",
        "| network | test top-1 (fine-tuned) | fitness (val, before fine-tuning) | predicted ms | "
        "measured ms | measured vs budget | speed-up vs dense (measured) | FLOPs | params |",
        "|---|---|---|---|---|---|---|---|---|", *rows, "",
        f"The three pruned networks meet the same budget{_held(f.get('measured') or {})} and were fine-tuned the "
        f"same way: {_plural(c['finetune_epochs'], 'epoch')} from their inherited weights, distilled from the dense "
        "model. "
        "Uniform width slims every group by one ratio; L1 magnitude ranks every channel of the network by its "
        "group-normalised L1 norm (Torch-Pruning's criterion) and keeps the best under the budget. Measured "
        "latencies are the table's statistic over interleaved passes.", "",
        "![Pareto front: every candidate the search scored, with inherited weights (not fine-tuned)]"
        "(search/pareto.png)",
        "", "Stage times (s): " + ", ".join(f"{k} {v}" for k, v in f["stage_seconds"].items()), "",
    ]
    return "\n".join(lines)
