"""The quickstart's report: figures gathered from a run folder's manifest and files, as JSON and markdown."""
from __future__ import annotations

import json
import platform
import time

from ..files.atomic import write_atomic, write_json
from .folder import RunFolder

__all__ = ["report_stage", "markdown"]


def report_stage(run: RunFolder, space, table, *, config: dict, budget_ms: float, networks=("searched", "uniform"),
                 key: str = "report") -> dict:
    """Write ``report.json`` and ``report.md`` from what the earlier stages recorded; returns the figures."""
    import torch

    from ..deploy.verify import VerifyReport

    run.begin(key, "report", {"budget_ms": budget_ms, "networks": list(networks)})
    manifest = run.manifest()["stages"]
    result = json.loads(run.file("search", "result").read_text())
    best = result["best"][0]
    chosen = {"searched": best, "uniform": best.get("uniform")}
    rows = {}
    for name in networks:
        if chosen.get(name) is None or f"verify_{name}" not in manifest:
            continue
        enc = chosen[name]["encoding"]
        rep = VerifyReport.from_dict(json.loads(run.file(f"verify_{name}", "report").read_text()))
        acc = manifest[f"retrain_{name}"].get("summary") or {}
        rows[name] = {
            "encoding": list(enc), "channels": space.channels(enc), "flops": space.flops(enc),
            "params": space.params(enc), "pruningnet_fitness": chosen[name]["fitness"],
            "test_acc": round(acc["test_acc"], 4), "val_acc": round(acc["val_acc"], 4),
            "predicted_ms": round(rep.predicted_ms, 4), "measured_ms": round(rep.measured_ms, 4),
            "dense_measured_ms": round(rep.dense_measured_ms, 4), "speedup": round(rep.speedup, 3),
            "within_budget": rep.within_budget,
            "onnx_max_abs_diff": manifest[f"export_{name}"]["summary"]["max_abs_diff"]}
    seconds = {k: r.get("seconds") for k, r in manifest.items() if k != key}
    figures = {
        "machine": {"cpu": table.backend.get("device_name"), "python": platform.python_version(),
                    "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M")},
        "config": config, "budget_ms": budget_ms, "dense_predicted_ms": round(table.predict(space.full()), 4),
        "search": {k: manifest["search"]["summary"][k] for k in ("evaluated", "candidates_per_s")},
        "networks": rows, "stage_seconds": seconds, "total_seconds": round(sum(v or 0 for v in seconds.values()), 1),
    }
    write_json(run.path / "report.json", figures)
    write_atomic(run.path / "report.md", markdown(figures))
    run.finish(key, {"report": run.path / "report.md", "figures": run.path / "report.json"})
    return figures


def markdown(f: dict) -> str:
    n = f["networks"]
    rows = []
    for name, r in n.items():
        rows.append(f"| {name} | {r['test_acc']:.4f} | {r['pruningnet_fitness']:.4f} | {r['predicted_ms']:.4f} | "
                    f"{r['measured_ms']:.4f} | {r['speedup']:.2f}x | {'yes' if r['within_budget'] else 'no'} | "
                    f"{r['flops'] / 1e6:.2f}M | {r['params'] / 1e3:.1f}K |")
    dense = next(iter(n.values()))["dense_measured_ms"]
    lines = [
        "# hwprune quickstart report", "",
        f"{f['config']['model']} on the bundled MNIST subset; latency: onnxruntime on {f['machine']['cpu']}, "
        f"1 thread, batch 1 ({f['machine']['date']}, torch {f['machine']['torch']}).", "",
        f"- dense network: {f['dense_predicted_ms']:.4f} ms predicted, {dense:.4f} ms measured",
        f"- budget: {f['budget_ms']:.4f} ms ({f['config']['budget_fraction']:.0%} of the dense prediction)",
        f"- search: {f['search']['evaluated']} candidates evaluated, {f['search']['candidates_per_s']:.2f}/s", "",
        "| network | test top-1 (retrained) | PruningNet fitness | predicted ms | measured ms | speed-up vs dense "
        "| within budget | FLOPs | params |",
        "|---|---|---|---|---|---|---|---|---|", *rows, "",
        f"Both networks were retrained the same way ({f['config']['retrain_epochs']} epochs from scratch). "
        "Measured latencies are the table's statistic over interleaved passes; the speed-up is measured "
        "side by side with the dense network.", "",
        "![Pareto front](search/pareto.png)", "",
        "Stage times (s): " + ", ".join(f"{k} {v}" for k, v in f["stage_seconds"].items()), "",
    ]
    return "\n".join(lines)
