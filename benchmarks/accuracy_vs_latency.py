"""hwprune's search vs uniform width vs L1 magnitude pruning, at equal measured latency, from one trained start.

    python benchmarks/accuracy_vs_latency.py [--models resnet20 mobilenet_v2_cifar] [--fractions 0.3 0.5 0.7]
        [--seeds 0 1 2] [--epochs 10] [--workers 2] [--fast]

For each model, on the bundled MNIST subset (fixed split), with latency measured by
onnxruntime on this CPU at 1 thread, batch 1:

1. profile a latency table for the model as trained (1-channel input, widths in
   multiples of 4) and measure the dense network; the budgets are ``fractions`` x
   that measured latency;
2. train the dense network once per seed: the start of every pruned network and
   the reference accuracy;
3. search all budgets in one run, hwprune's default path (``search --evaluator
   inherit``): candidates inherit seed 0's L1-ordered dense weights, BatchNorm
   recalibrated. (a) is the best encoding under each budget and (b) the widest
   uniform width under the same budget, both judged by the table;
4. (c) prune each seed's trained dense network with Torch-Pruning (L1 magnitude,
   global ranking, channels rounded to 4, at most 90% of a layer, in 10 re-ranked
   steps), choosing the smallest pruning ratio whose *measured* latency meets the
   budget;
5. fine-tune every pruned network the same way (epochs, optimizer, lr, schedule,
   data, distillation from its dense network) from that seed's dense weights: (a)
   and (b) keep the leading channels of the seed's L1-ordered dense model (what
   ``hwprune retrain --init inherit`` does), (c) what Torch-Pruning kept;
6. export every trained network to ONNX (checked against torch on real images)
   and measure all of them, interleaved with the dense network, on the same backend.

Epochs, training images and search size are set per model (``Settings.per_model``)
so that the whole run fits about 1.5 h on 2 CPU cores; within a model every method
gets the same. Seeds vary the dense network and the fine-tuning; the search runs
once per model (seed 0's dense network). The figures of the previous protocol
(PruningNet search, (a) and (b) trained from scratch), when
``accuracy_vs_latency_before_summary.csv`` holds them, are shown beside the new ones. Long stages run in
``--workers`` processes of one torch thread each; latency is measured only while
no worker runs. Every finished step is kept under ``--work`` and a rerun resumes.

Writes ``benchmarks/results/accuracy_vs_latency.csv`` (one row per trained network),
``accuracy_vs_latency_summary.csv`` (mean/std over seeds), ``accuracy_vs_latency.png``
and ``accuracy_vs_latency.md`` (the table for benchmarks/README.md), and prints it.
"""
from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as common  # noqa: E402  (the job pool, latency measurement and CSVs the benchmarks share)

import hwprune as hp
from hwprune.files.atomic import write_atomic, write_json
from hwprune.files.checkpoint import load_checkpoint
from hwprune.training.metrics import accuracy
from hwprune.training.loop import fit
from hwprune.core.importance import order_channels
from hwprune.runs import ProfileSettings, RunFolder
from hwprune.runs.settings import DenseModel
from hwprune.runs.stages import profile_stage, search_stage
from hwprune.training.distill import distillation_loss
from hwprune.training.memory_format import channels_last
from hwprune.core.macs import count_macs
from hwprune.deploy.verify import DEFAULT_TOLERANCE

ROOT = Path(__file__).resolve().parent.parent
METHODS = {"hwprune": "hwprune search (a)", "uniform": "uniform width (b)", "l1": "L1 magnitude, Torch-Pruning (c)"}
BEFORE = "accuracy_vs_latency_before_summary.csv"  # the previous protocol's figures, kept for comparison
TP_FORMAT = "hwprune.bench.l1/1"


@dataclass
class Settings:
    models: list[str] = field(default_factory=lambda: ["resnet20", "mobilenet_v2_cifar"])
    fractions: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.7])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: int = 10
    batch_size: int = 64
    # every network's lr (SGD, cosine). 0.05 at batch 64 is the usual plain-CNN rate; TrainConfig's default,
    # 0.01, is the PruningNet's and left 6-epoch resnet20s at 0.52-0.83 test top-1 from scratch.
    lr: float = 0.05  # the dense networks' (from scratch)
    finetune_lr: float = 0.01  # every pruned network's, from inherited weights
    importance: str = "taylor"  # the channel order (a) and (b) inherit (hwprune's default)
    limit: int | None = None  # training images (None: the whole training split)
    round_to: int = 4
    population: int = 20
    generations: int = 6
    parents: int = 6
    mutations: int = 8
    crossovers: int = 8
    calib_batches: int = 4
    profile_repeats: int = 25
    passes: int = 5
    runs_per_pass: int = 10
    tp_max_ratio: float = 0.9  # Torch-Pruning's max_pruning_ratio: no layer loses more than this
    tp_iterative_steps: int = 10  # pruning in steps lets max_pruning_ratio hold (one global step can skip
    # a whole coupled group instead, which made latency non-monotonic in the ratio)
    tp_steps: int = 8  # bisection steps for the pruning ratio
    # settings of one model only: a 2-core CPU trains mobilenet_v2_cifar ~5x slower than resnet20
    per_model: dict = field(default_factory=lambda: {
        "resnet20": dict(epochs=6, population=16, generations=5),
        "mobilenet_v2_cifar": dict(limit=1000, epochs=5, population=12, generations=5)})

    def for_model(self, name: str) -> "Settings":
        return replace(self, **self.per_model.get(name, {}), per_model={})


FAST = dict(per_model={}, fractions=[0.5], seeds=[0, 1], epochs=1, limit=384, population=6, generations=2,
            parents=3, mutations=2, crossovers=2, calib_batches=1, profile_repeats=8, passes=2, runs_per_pass=5,
            tp_steps=4)


# ---- shared set-up (rebuilt identically in every worker) -----------------------------------------
def setup(name: str, s: Settings, seed: int = 0):
    return common.setup(name, "bundled", s.limit, s.batch_size, s.round_to, seed)  # one split for every seed


def train_config(s: Settings, seed: int, finetune: bool = False) -> hp.TrainConfig:
    return hp.TrainConfig(epochs=s.epochs, lr=s.finetune_lr if finetune else s.lr, seed=seed, schedule="cosine",
                          eval_ratios=())


def classifier(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def l1_prune(dense: nn.Module, ratio: float, example: torch.Tensor, s: Settings) -> nn.Module:
    """A copy of ``dense`` pruned by Torch-Pruning: L1 magnitude, global ranking, channels rounded, reached
    in ``tp_iterative_steps`` steps of re-ranked magnitudes (no training between them)."""
    import torch_pruning as tp

    model = copy.deepcopy(dense).eval()
    if ratio <= 0:
        return model
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                  global_pruning=True, pruning_ratio=ratio, max_pruning_ratio=s.tp_max_ratio,
                                  iterative_steps=s.tp_iterative_steps, ignored_layers=[classifier(model)],
                                  round_to=s.round_to)
    for _ in range(s.tp_iterative_steps):
        pruner.step()
    return model


def fit_ratio(measure, budget_ms: float, max_ratio: float, steps: int) -> tuple[float, float, list]:
    """The smallest pruning ratio in [0, max_ratio] whose measured latency is within ``budget_ms``, by bisection
    (latency falls as the ratio grows); returns (ratio, its measured ms, every (ratio, ms) tried)."""
    tried = []
    lo, hi = 0.0, max_ratio
    ms_hi = measure(hi)
    tried.append((hi, ms_hi))
    if ms_hi > budget_ms:
        raise hp.HwpruneError(f"even pruning {max_ratio:.0%} of every layer measures {ms_hi:.4f} ms, over the "
                              f"{budget_ms:.4f} ms budget")
    best = (hi, ms_hi)
    for _ in range(steps):
        mid = (lo + hi) / 2
        ms = measure(mid)
        tried.append((mid, ms))
        if ms <= budget_ms:
            hi, best = mid, (mid, ms)
        else:
            lo = mid
    return best[0], best[1], tried


# ---- worker jobs ------------------------------------------------------------------------------------
def run_job(job: dict) -> dict:
    torch.set_num_threads(1)
    s = Settings(**job["settings"])
    out = Path(job["out"])
    started = time.time()
    space, loaders = setup(job["model"], s, job.get("seed", 0))
    log = lambda msg: None  # noqa: E731
    if job["kind"] == "dense":
        model, _ = hp.retrain(space, space.full(), loaders.train, config=train_config(s, job["seed"]),
                              run_dir=out.parent, resume=True, progress=False, log=log)
        result = {"encoding": list(space.full())}
    else:  # every pruned network: fine-tuned from its seed's dense weights, distilled from that dense network
        dense, _ = hp.load_pruned(job["dense"])
        cfg = train_config(s, job["seed"], finetune=True)
        if job["kind"] in ("hwprune", "uniform"):
            enc = tuple(job["encoding"])
            model, _ = hp.retrain(space, enc, loaders.train, config=cfg, init="inherit",
                                  source=order_channels(space, dense, s.importance, data=loaders.calib),
                                  teacher=dense,
                                  run_dir=out.parent, resume=True, progress=False, log=log)
            result = {"encoding": list(enc)}
        elif job["kind"] == "l1":
            model = l1_prune(dense, job["ratio"], torch.zeros(1, *loaders.input_shape), s)
            with channels_last(dense):  # (as hwprune.retrain runs the other methods' teacher)
                fit(model.train(), loaders.train, cfg, forward=lambda m, x, step: m(x),
                    payload=lambda: {"state_dict": model.state_dict(), "ratio": job["ratio"]}, fmt=TP_FORMAT,
                    fingerprint=f"{job['dense']}:{job['ratio']}", checkpoint=out.parent / "model.pt",
                    loss_fn=distillation_loss(dense, label_smoothing=cfg.label_smoothing), resume=True,
                    progress=False, log=log)
            result = {"ratio": job["ratio"]}
        else:
            raise ValueError(job["kind"])
    result.update(test_acc=accuracy(model, loaders.test), val_acc=accuracy(model, loaders.val),
                  flops=count_macs(model, [torch.zeros(1, *loaders.input_shape)]),
                  params=sum(p.numel() for p in model.parameters()))
    result["train_seconds"] = round(time.time() - started, 1)
    write_json(out, result)
    return result


def run_pool(jobs: list[dict], workers: int, say) -> None:
    """Run the jobs whose result file is missing, longest first, in ``workers`` processes."""
    common.run_pool(jobs, workers, say, run_job)


# ---- the benchmark ---------------------------------------------------------------------------------
def bench_model(name: str, s: Settings, work: Path, workers: int, say) -> list[dict]:
    work.mkdir(parents=True, exist_ok=True)
    s = s.for_model(name)
    sd = asdict(s)
    space, loaders = setup(name, s)
    shape = (1, *loaders.input_shape)

    say(f"== {name}: latency table and dense latency (onnxruntime, CPU, 1 thread)")
    run = RunFolder(work)
    table, _ = profile_stage(run, space, ProfileSettings(repeats=s.profile_repeats, passes=s.passes,
                                                         runs_per_pass=s.runs_per_pass),
                             out=work / "latency_table.csv", cache_dir=work.parent / "kernel_store", quiet=True,
                             model=name)

    measure = common.latency_meter(table, shape, s.passes, s.runs_per_pass)

    dense_path = work / "dense_latency.json"
    if not dense_path.exists():
        write_json(dense_path, {"measured_ms": measure([space.materialize(space.full())])[0],
                                "predicted_ms": table.predict(space.full())})
    dense_ms = json.loads(dense_path.read_text())["measured_ms"]
    floor = table.predict(tuple(0 for _ in space.full()))
    budgets = []
    for f in s.fractions:
        b = round(f * dense_ms, 4)
        if b <= floor:
            say(f"  budget {f:.0%} of dense ({b:.4f} ms) is under the narrowest network's {floor:.4f} ms; skipped")
            continue
        budgets.append((f, b))
    say(f"  dense {dense_ms:.4f} ms measured; budgets " + ", ".join(f"{f:.0%}: {b:.4f} ms" for f, b in budgets))

    say(f"== {name}: dense networks (one per seed)")
    dense_jobs = [{"kind": "dense", "model": name, "seed": seed, "settings": sd, "cost": 3.0,
                   "label": f"{name} dense seed {seed}", "out": str(work / f"dense_s{seed}" / "result.json")}
                  for seed in s.seeds]
    run_pool(dense_jobs, workers, say)

    say(f"== {name}: search {len(budgets)} budgets (hwprune, inherit evaluator) and the uniform width of each")
    result_path = work / "search" / "result.json"
    if not result_path.exists():
        cfg = hp.SearchConfig(population=s.population, keep_top=s.population, parents=s.parents,
                              mutations=s.mutations, crossovers=s.crossovers, generations=s.generations,
                              calib_batches=s.calib_batches, seed=0, workers=1, fill=False)  # (as its figures were
                              # scored: one thread each, the fittest unfilled)
        dense0 = DenseModel(name, str(work / f"dense_s{s.seeds[0]}" / "model.pt"), s.round_to, importance=s.importance)
        search_stage(run, dense=dense0, table=work / "latency_table.csv", latency_ms=[b for _, b in budgets],
                     config=cfg, device="cpu", where="search", resume=True, log=say)
    best = json.loads(result_path.read_text())["best"]

    say(f"== {name}: L1 magnitude pruning to each budget, measured (Torch-Pruning)")
    l1_path = work / "l1_ratios.json"
    l1 = json.loads(l1_path.read_text()) if l1_path.exists() else {}
    example = torch.zeros(shape)
    for seed in s.seeds:
        dense, _ = hp.load_pruned(work / f"dense_s{seed}" / "model.pt")
        for f, b in budgets:
            key = f"{f}:{seed}"
            if key in l1:
                continue
            ratio, ms, tried = fit_ratio(lambda r: measure([l1_prune(dense, r, example, s)])[0], b,
                                         s.tp_max_ratio, s.tp_steps)
            l1[key] = {"ratio": ratio, "measured_ms": ms, "tried": tried}
            write_json(l1_path, l1)
            say(f"  seed {seed}, budget {b:.4f} ms: ratio {ratio:.4f} measures {ms:.4f} ms")

    say(f"== {name}: fine-tune every pruned network ({s.epochs} epochs, {len(s.seeds)} seeds)")
    jobs = []
    for i, (f, b) in enumerate(budgets):
        encs = {"hwprune": best[i]["encoding"], "uniform": best[i]["uniform"]["encoding"]}
        for seed in s.seeds:
            for method, enc in encs.items():
                jobs.append({"kind": method, "model": name, "seed": seed, "settings": sd, "encoding": enc,
                             "dense": str(work / f"dense_s{seed}" / "model.pt"),
                             "cost": f, "label": f"{name} {method} {f:.0%} seed {seed}",
                             "out": str(work / f"{method}_{f}_s{seed}" / "result.json")})
            jobs.append({"kind": "l1", "model": name, "seed": seed, "settings": sd, "cost": f,
                         "dense": str(work / f"dense_s{seed}" / "model.pt"), "ratio": l1[f"{f}:{seed}"]["ratio"],
                         "label": f"{name} l1 {f:.0%} seed {seed}", "out": str(work / f"l1_{f}_s{seed}" / "result.json")})
    run_pool(jobs, workers, say)

    say(f"== {name}: export every trained network to ONNX and measure it beside the dense one")
    rows = []
    nets = [("dense", None, None, seed, work / f"dense_s{seed}") for seed in s.seeds]
    for i, (f, b) in enumerate(budgets):
        for seed in s.seeds:
            for method in METHODS:
                nets.append((method, f, b, seed, work / f"{method}_{f}_s{seed}"))
    check = [x for _, (x, _) in zip(range(2), loaders.val)]
    onnx_files = []
    for method, f, b, seed, folder in nets:
        path = folder / "model.onnx"
        if not path.exists():
            model = load_trained(folder, method, name, s, example)
            hp.export_onnx(model, path, example, check_inputs=check)
        onnx_files.append(path)
    lat_path = work / "measured.json"
    if not lat_path.exists():
        # one interleaved measurement of every exported file; the dense network of seed 0 is the reference
        ms = measure([p.read_bytes() for p in onnx_files])
        write_json(lat_path, {str(p.relative_to(work)): v for p, v in zip(onnx_files, ms)})
    measured = json.loads(lat_path.read_text())
    dense_ref = measured[str(onnx_files[0].relative_to(work))]
    for (method, f, b, seed, folder), path in zip(nets, onnx_files):
        r = json.loads((folder / "result.json").read_text())
        enc = r.get("encoding")
        ms = measured[str(path.relative_to(work))]
        rows.append({"model": name, "method": method, "budget_fraction": f, "budget_ms": b, "seed": seed,
                     "test_acc": round(r["test_acc"], 4), "val_acc": round(r["val_acc"], 4),
                     "predicted_ms": round(table.predict(enc), 4) if enc is not None else "",
                     # how much of its budget the table says a network uses (the search should use all of it)
                     "predicted_of_budget": round(table.predict(enc) / b, 4) if enc is not None and b else "",
                     "measured_ms": round(ms, 4), "speedup": round(dense_ref / ms, 3),
                     "within_budget": "" if b is None else ms <= b * (1 + DEFAULT_TOLERANCE),
                     "flops": r["flops"], "params": r["params"],
                     "l1_ratio": r.get("ratio", ""), "train_seconds": r["train_seconds"]})
    return rows


def load_trained(folder: Path, method: str, name: str, s: Settings, example: torch.Tensor) -> nn.Module:
    if method != "l1":
        return hp.load_pruned(folder / "model.pt")[0]
    ck = load_checkpoint(folder / "model.pt", TP_FORMAT)
    dense_folder = folder.parent / f"dense_s{folder.name.rsplit('_s', 1)[1]}"
    dense, _ = hp.load_pruned(dense_folder / "model.pt")
    model = l1_prune(dense, ck["ratio"], example, s)
    model.load_state_dict(ck["state_dict"])
    return model.eval()


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    keys = []
    for r in rows:
        k = (r["model"], r["method"], r["budget_fraction"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        g = [r for r in rows if (r["model"], r["method"], r["budget_fraction"]) == k]
        acc = np.array([r["test_acc"] for r in g])
        ms = np.array([r["measured_ms"] for r in g])
        out.append({"model": k[0], "method": k[1], "budget_fraction": k[2], "budget_ms": g[0]["budget_ms"],
                    "seeds": len(g), "test_acc_mean": round(float(acc.mean()), 4),
                    "test_acc_std": round(float(acc.std(ddof=1)) if len(g) > 1 else 0.0, 4),
                    "measured_ms_mean": round(float(ms.mean()), 4),
                    "measured_ms_std": round(float(ms.std(ddof=1)) if len(g) > 1 else 0.0, 4),
                    "speedup_mean": round(float(np.mean([r["speedup"] for r in g])), 3),
                    "predicted_of_budget": g[0]["predicted_of_budget"],  # one encoding for every seed
                    "mflops_mean": round(float(np.mean([r["flops"] for r in g])) / 1e6, 2)})
    return out


def markdown(summary: list[dict], before: list[dict] | None = None) -> str:
    """The summary table; with ``before`` (the previous protocol's summary rows) a column of its figures."""
    def key(r):
        f = r["budget_fraction"]
        return r["model"], r["method"], "" if f in (None, "") else f"{float(f):g}"

    prev = {key(r): r for r in before or []}
    head = "| model | budget | method | test top-1 (mean ± std) | measured ms | speed-up | MFLOPs | predicted / budget |"
    lines = [head + (" before: PruningNet search, trained from scratch |" if before else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if before else "")]
    for r in summary:
        budget = "dense" if r["budget_fraction"] in (None, "") else f"{r['budget_fraction']:.0%} ({r['budget_ms']:.3f} ms)"
        method = "dense" if r["method"] == "dense" else METHODS[r["method"]]
        used = f"{r['predicted_of_budget']:.1%}" if r.get("predicted_of_budget") not in (None, "") else ""
        line = (f"| {r['model']} | {budget} | {method} | {r['test_acc_mean']:.4f} ± {r['test_acc_std']:.4f} | "
                f"{r['measured_ms_mean']:.4f} | {r['speedup_mean']:.2f}x | {r['mflops_mean']:.2f} | {used} |")
        if before:
            b = prev.get(key(r))
            line += f" {float(b['test_acc_mean']):.4f} ± {float(b['test_acc_std']):.4f} |" if b else " |"
        lines.append(line)
    return "\n".join(lines)


def read_summary(path: Path) -> list[dict] | None:
    """A summary CSV this script wrote (its first line is the environment comment), or None."""
    if not path.exists():
        return None
    return common.read_csv(path)


def plot(rows: list[dict], summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    style = {"dense": ("k", "*"), "hwprune": ("tab:red", "o"), "uniform": ("tab:blue", "s"), "l1": ("tab:green", "^")}
    for ax, m in zip(axes[0], models):
        for method, (color, marker) in style.items():
            g = [r for r in summary if r["model"] == m and r["method"] == method]
            if not g:
                continue
            ax.errorbar([r["measured_ms_mean"] for r in g], [r["test_acc_mean"] for r in g],
                        xerr=[r["measured_ms_std"] for r in g], yerr=[r["test_acc_std"] for r in g], color=color,
                        marker=marker, ls="-" if method != "dense" else "", capsize=3,
                        label="dense" if method == "dense" else METHODS[method])
        for b in sorted({r["budget_ms"] for r in summary if r["model"] == m and r["budget_ms"] not in (None, "")}):
            ax.axvline(b, color="0.8", ls="--", lw=0.8, zorder=0)
        ax.set_title(f"{m}: test top-1 vs measured latency (mean ± std over seeds)", fontsize=9)
        ax.set_xlabel("measured latency, onnxruntime CPU, 1 thread, batch 1 (ms)")
        ax.set_ylabel("test top-1 (bundled MNIST subset)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    Path(tmp).replace(path)


def environment() -> dict:
    from importlib.metadata import version

    import onnxruntime

    from hwprune.profilers.machine import cpu_name

    # (torch_pruning's installed version from its package metadata: 1.6.1 names its __version__ 1.6.0)
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu": cpu_name(), "cores": mp.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "torch_pruning": version("torch-pruning"), "hwprune": hp.__version__}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", choices=["resnet20", "mobilenet_v2_cifar", "resnet56"])
    ap.add_argument("--fractions", nargs="+", type=float, help="budgets as fractions of the dense latency")
    ap.add_argument("--seeds", nargs="+", type=int)
    ap.add_argument("--epochs", type=int, help="training epochs of every network (dense, pruned, fine-tuned)")
    ap.add_argument("--limit", type=int, help="training images (default: all; 1000 for mobilenet_v2_cifar)")
    ap.add_argument("--workers", type=int, default=2, help="training processes (one torch thread each)")
    ap.add_argument("--fast", action="store_true", help="a smoke pass: tiny data, 1 epoch, 1 budget, 2 seeds")
    ap.add_argument("--work", default=str(ROOT / "runs" / "accuracy_vs_latency"), help="kept work (resumable)")
    ap.add_argument("--out", default=os.environ.get("HWPRUNE_BENCH_RESULTS", str(ROOT / "benchmarks" / "results")))
    args = ap.parse_args(argv)
    s = Settings(**FAST) if args.fast else Settings()
    for k in ("models", "fractions", "seeds", "epochs", "limit"):
        if getattr(args, k) is not None:  # an explicit option wins over the per-model settings
            s = replace(s, **{k: getattr(args, k)},
                        per_model={m: {a: b for a, b in o.items() if a != k} for m, o in s.per_model.items()})
    work = Path(args.work) / ("fast" if args.fast else "full")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common.claim_work(work, asdict(s))
    torch.set_num_threads(1)
    started = time.time()
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    rows = []
    for name in s.models:
        rows += bench_model(name, s, work / name, args.workers, say)
    summary = summarise(rows)
    stem = "accuracy_vs_latency_fast" if args.fast else "accuracy_vs_latency"
    env = {**environment(), "settings": asdict(s), "seconds": round(time.time() - started)}
    for path, data in ((out / f"{stem}.csv", rows), (out / f"{stem}_summary.csv", summary)):
        write_atomic(path, lambda fh, data=data: fh.write(_csv(data, env).encode()))
    plot(rows, summary, out / f"{stem}.png")
    table = markdown(summary, read_summary(out / BEFORE))
    write_atomic(out / f"{stem}.md", lambda fh: fh.write((table + "\n").encode()))
    write_json(out / f"{stem}.env.json", env)
    print(table)
    print(f"wrote {out / stem}.csv, _summary.csv, .png, .md in {env['seconds']} s")


def _csv(rows: list[dict], env: dict) -> str:
    return common.csv_text(rows, env)


if __name__ == "__main__":
    main()
