"""The whole pipeline on the bundled default, in one run folder, with a report.

resnet20 on the bundled MNIST subset, this machine's CPU with onnxruntime (1 thread):
profile a latency table, train the PruningNet, search at about half the dense
network's latency, retrain the searched network and the uniform-width network of
the same budget the same way, export both to ONNX, verify their latency against
the table and the budget, and write ``report.md`` (+ ``report.json``, ``pareto.png``).
Every stage keeps its files in the run folder; ``resume=True`` skips finished work.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..files.atomic import write_atomic, write_json

__all__ = ["QuickstartConfig", "FULL", "FAST", "quickstart"]


@dataclass(frozen=True)
class QuickstartConfig:
    model: str = "resnet20"
    round_to: int = 4  # widths in multiples of 4: a smaller table, friendlier kernels
    budget_fraction: float = 0.5  # of the dense network's predicted latency
    pnet_epochs: int = 12
    retrain_epochs: int = 12
    batch_size: int = 64
    limit: int | None = None  # training images (None: the whole training split)
    population: int = 20
    generations: int = 6
    parents: int = 6
    mutations: int = 8
    crossovers: int = 8
    calib_batches: int = 4
    val_batches: int | None = None
    profile_repeats: int = 25
    profile_calibrate: int = 6
    passes: int = 5  # end-to-end measurement passes (calibration, verify)
    runs_per_pass: int = 10
    seed: int = 0


FULL = QuickstartConfig()
FAST = QuickstartConfig(round_to=8, pnet_epochs=1, retrain_epochs=1, limit=384, population=6, generations=2,
                        parents=3, mutations=2, crossovers=2, calib_batches=1, val_batches=1, profile_repeats=8,
                        profile_calibrate=3, passes=2, runs_per_pass=5)


def quickstart(out: str | Path = "runs/quickstart", config: QuickstartConfig = FULL, resume: bool = False,
               progress: bool | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Run the pipeline (module docstring); returns the report's figures."""
    from ..latency import profile
    from ..data import load_dataset, make_loaders
    from ..supernet.evaluate import accuracy
    from ..deploy.export import export_onnx
    from ..training.config import TrainConfig
    from ..supernet.pruningnet import PruningNet
    from ..models import create_model
    from ..deploy.retrain import retrain
    from ..search import SearchConfig, save_result, search
    from ..core.space import SearchSpace
    from ..supernet.train import train_pruningnet
    from ..deploy.verify import verify

    cfg = config
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not resume:
        from ..errors import HwpruneError

        raise HwpruneError(f"{out} is not empty; pass --resume to continue that run or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    log = log or print
    started = time.perf_counter()
    times: dict[str, float] = {}

    def stage(name: str):
        log(f"== {name} ({time.perf_counter() - started:.0f}s so far)")
        times[name] = time.perf_counter()

    def done(name: str):
        times[name] = round(time.perf_counter() - times[name], 1)

    write_json(out / "config.json", asdict(cfg))
    torch.manual_seed(cfg.seed)
    data = load_dataset("bundled", seed=cfg.seed)
    if cfg.limit:
        data = data.limit_train(cfg.limit, seed=cfg.seed)
    loaders = make_loaders(data, cfg.batch_size, seed=cfg.seed)
    model = create_model(cfg.model, num_classes=data.num_classes, in_channels=data.input_shape[0])
    space = SearchSpace.from_model(model, (1, *data.input_shape), round_to=cfg.round_to)
    (out / "space.json").write_text(space.to_json())

    stage("1/6 profile the latency table (onnxruntime, CPU, 1 thread)")
    from ..latency import LatencyTable

    table_path = out / "latency_table.csv"
    if resume and table_path.exists():
        table = LatencyTable.load(table_path, space=space)
    else:
        table = profile(space, backend="onnxruntime", device="cpu", threads=1, batch_size=1, out=table_path,
                        cache_dir=out / "kernel_store", repeats=cfg.profile_repeats,
                        calibrate=cfg.profile_calibrate, passes=cfg.passes, runs_per_pass=cfg.runs_per_pass,
                        seed=cfg.seed, quiet=progress is False)
    done("1/6 profile the latency table (onnxruntime, CPU, 1 thread)")

    stage("2/6 train the PruningNet")
    pnet = PruningNet(space)
    train_cfg = TrainConfig(epochs=cfg.pnet_epochs, seed=cfg.seed, eval_ratios=())
    train_pruningnet(pnet, loaders.train, config=train_cfg, run_dir=out / "pruningnet", resume=resume,
                     progress=progress, log=log)
    done("2/6 train the PruningNet")

    stage("3/6 search at about half the dense latency")
    dense_pred = table.predict(space.full())
    budget = round(cfg.budget_fraction * dense_pred, 5)
    scfg = SearchConfig(population=cfg.population, keep_top=cfg.population, parents=cfg.parents,
                        mutations=cfg.mutations, crossovers=cfg.crossovers, generations=cfg.generations,
                        calib_batches=cfg.calib_batches, val_batches=cfg.val_batches, seed=cfg.seed)
    result = search(pnet, loaders.val, loaders.calib, table=table, latency_ms=budget, config=scfg,
                    run_dir=out / "search", resume=resume, log=log)
    save_result(result, out / "search")
    best = result.best[0]
    done("3/6 search at about half the dense latency")

    stage("4/6 retrain the searched and the uniform-width network the same way")
    rcfg = TrainConfig(epochs=cfg.retrain_epochs, seed=cfg.seed, schedule="cosine", eval_ratios=())
    nets = {"searched": best["encoding"]}
    if best.get("uniform"):
        nets["uniform"] = best["uniform"]["encoding"]
    trained = {}
    for name, enc in nets.items():
        model_n, _ = retrain(space, enc, loaders.train, config=rcfg, val_loader=loaders.val,
                             test_loader=loaders.test, run_dir=out / f"retrain_{name}", resume=resume,
                             progress=progress, log=log)
        trained[name] = (model_n, enc, accuracy(model_n, loaders.test), accuracy(model_n, loaders.val))
    done("4/6 retrain the searched and the uniform-width network the same way")

    stage("5/6 export to ONNX (checked against torch on real images)")
    check = [x for _, (x, _) in zip(range(2), loaders.val)]
    exports = {}
    for name, (model_n, enc, _, _) in trained.items():
        rep = export_onnx(model_n, out / f"{name}.onnx", torch.zeros(1, *data.input_shape), check_inputs=check,
                          metadata={"space": json.loads(space.to_json()), "encoding": list(enc),
                                    "channels": space.channels(enc)})
        exports[name] = rep
    done("5/6 export to ONNX (checked against torch on real images)")

    stage("6/6 verify measured latency against prediction and budget")
    reports = {name: verify(out / f"{name}.onnx", table, latency_ms=budget, passes=cfg.passes,
                            runs_per_pass=cfg.runs_per_pass) for name in trained}
    done("6/6 verify measured latency against prediction and budget")

    figures = {
        "machine": {"cpu": table.backend.get("device_name"), "python": platform.python_version(),
                    "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M")},
        "config": asdict(cfg), "budget_ms": budget, "dense_predicted_ms": round(dense_pred, 4),
        "search": {"evaluated": result.stats["evaluated"], "candidates_per_s": result.stats["candidates_per_s"]},
        "networks": {name: {
            "encoding": list(enc), "channels": space.channels(enc), "flops": space.flops(enc),
            "params": space.params(enc), "pruningnet_fitness": (best if name == "searched" else best["uniform"])["fitness"],
            "test_acc": round(test_acc, 4), "val_acc": round(val_acc, 4),
            "predicted_ms": round(reports[name].predicted_ms, 4), "measured_ms": round(reports[name].measured_ms, 4),
            "dense_measured_ms": round(reports[name].dense_measured_ms, 4),
            "speedup": round(reports[name].speedup, 3), "within_budget": reports[name].within_budget,
            "onnx_max_abs_diff": exports[name].max_abs_diff}
            for name, (_, enc, test_acc, val_acc) in trained.items()},
        "stage_seconds": times, "total_seconds": round(time.perf_counter() - started, 1),
    }
    write_json(out / "report.json", figures)
    write_atomic(out / "report.md", lambda f: f.write(_markdown(figures).encode()))
    log(f"== done in {figures['total_seconds']:.0f}s: {out / 'report.md'}")
    return figures


def _markdown(f: dict) -> str:
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
        "Stage times (s): " + ", ".join(f"{k.split(' ', 1)[1]} {v}" for k, v in f["stage_seconds"].items()), "",
    ]
    return "\n".join(lines)
