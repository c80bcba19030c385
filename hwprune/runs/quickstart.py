"""The whole pipeline on the bundled default: a list of stages over one run folder, and a report.

resnet20 on the bundled MNIST subset, this machine's CPU with onnxruntime (1 thread):
profile a latency table, train the dense network (``pretrain``), order its channels
by first-order Taylor importance, search at a fraction of the dense network's latency with inherited
weights (the ``inherit`` evaluator), keeping the fittest network measured within the budget here
(``measure_top``), then fine-tune three networks of the same budget
the same way (from their inherited weights, distilled from the dense model): the
searched one, the uniform-width one and the one global L1 magnitude pruning keeps.
Export all three to ONNX, verify their latency against the table and the budget beside
one dense measurement, and write ``report.md`` (+ ``report.json``, ``pareto.png``).
Every stage is one of :mod:`.stages` / :mod:`.deploy_stages`, recorded in the
folder's ``run.json``; ``resume=True`` skips the stages it lists as done.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from ..errors import HwpruneError
from ..files.atomic import check_writable
from ..search.config import SearchConfig
from .folder import RunFolder
from .settings import DenseModel, PretrainJob, ProfileSettings

__all__ = ["QuickstartConfig", "FULL", "FAST", "quickstart", "STAGES", "NETWORKS"]


@dataclass(frozen=True)
class QuickstartConfig:
    model: str = "resnet20"
    round_to: int = 4  # widths in multiples of 4: a smaller table, friendlier kernels
    budget_fraction: float = 0.3  # of the dense network's predicted latency (budget_of="dense"), or of the way
    # from the narrowest network's to the dense one's (budget_of="range": reachable on any machine)
    budget_of: str = "dense"
    smoke: bool = False  # a smoke run: the report says its accuracies mean nothing
    importance: str = "taylor"  # the channel order candidates inherit (hwprune.core.importance)
    drop_blocks: bool = True  # the search may also remove residual blocks (hwprune.core.branches)
    tune_steps: int | None = None  # distillation steps per candidate before it is scored (None: the library's)
    pretrain_epochs: int = 15
    finetune_epochs: int = 8
    finetune_lr: float = 0.01
    batch_size: int = 64
    limit: int | None = None  # training images (None: the whole training split)
    seed: int = 0
    # the search times its measure_top fittest here and keeps the fittest measured within the budget (0: trusts the
    # table), and after steer_after generations asks the table for what it predicts for them at the budget as
    # measured: ``hwprune search --measure-top 8``'s defaults. Trusting the table, the quickstart's searched network
    # measured 3.4% over its budget in one run on a 2-core EPYC, where the table predicted it 3.9% under
    measure_top: int = 8
    search: SearchConfig = field(default_factory=lambda: SearchConfig(
        population=20, keep_top=20, parents=6, mutations=5, crossovers=5, generations=6, calib_batches=4,
        steer_after=3))
    profile: ProfileSettings = field(default_factory=lambda: ProfileSettings(calibrate=6))


FULL = QuickstartConfig()
FAST = QuickstartConfig(round_to=8, pretrain_epochs=1, finetune_epochs=1, limit=384, budget_of="range", smoke=True,
                        tune_steps=2, measure_top=2,
                        search=SearchConfig(population=6, keep_top=6, parents=3, mutations=2, crossovers=2,
                                            generations=2, calib_batches=1, val_batches=1, steer_after=1),
                        profile=ProfileSettings(repeats=8, calibrate=3, passes=2, runs_per_pass=5))

NETWORKS = ("searched", "uniform", "magnitude")  # the search's choice and the baselines of its result
STAGES = ("profile", "pretrain", "search", "finetune", "export", "verify", "report")  # the order they run in


def quickstart(out: str | Path = "runs/quickstart", config: QuickstartConfig = FULL, resume: bool = False,
               progress: bool | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Run the pipeline (module docstring); returns the report's figures."""
    from ..core.space import SearchSpace
    from ..data import load_dataset
    from ..latency.calibration import describe
    from ..models import create_model
    from .deploy_stages import export_stage, retrain_stage, verify_stage
    from .report import report_stage
    from .stages import pretrain_stage, profile_stage, search_stage

    cfg, out = config, Path(out)
    if out.exists() and any(out.iterdir()) and not resume:
        raise HwpruneError(f"{out} is not empty; pass --resume to continue that run or choose another --out")
    check_writable(out / "run.json", "run folder")
    run = RunFolder(out)
    log = log or print
    started = time.perf_counter()

    def stage(n: int, title: str):
        log(f"== {n}/{len(STAGES)} {title} ({time.perf_counter() - started:.0f}s so far)")

    data = load_dataset("bundled", seed=cfg.seed)  # only its shape: the stages load what they use
    model = create_model(cfg.model, num_classes=data.num_classes, in_channels=data.input_shape[0])
    space = SearchSpace.from_model(model, (1, *data.input_shape), round_to=cfg.round_to, drop_blocks=cfg.drop_blocks)

    stage(1, "profile the latency table (onnxruntime, CPU, 1 thread)")
    table, _ = profile_stage(run, space, replace(cfg.profile, seed=cfg.seed), out=out / "latency_table.csv",
                             cache_dir=out / "kernel_store", quiet=progress is False, model=cfg.model)
    log(describe(table.meta.get("calibration", {})))  # and, where it is suspect, what to do

    stage(2, "train the dense network (the starting point and the reference accuracy)")
    if not (resume and run.done("pretrain")):
        job = PretrainJob(model=cfg.model, batch_size=cfg.batch_size, limit=cfg.limit, device="cpu",
                          train={"epochs": cfg.pretrain_epochs, "seed": cfg.seed, "lr": 0.05, "schedule": "cosine",
                                 "eval_ratios": ()})
        pretrain_stage(run, job, where="pretrain", resume=resume, progress=progress, log=log)

    # (the narrowest network every method can reach: the uniform and magnitude baselines never drop a block)
    budget, rule = _budget(cfg, table.predict(space.full()), table.predict(space.narrowest(keep_blocks=True)))
    stage(3, f"search at {rule} ({budget:.4f} ms predicted), candidates inheriting the dense weights "
             f"({cfg.importance} order)")
    if not (resume and run.done("search")):
        dense = DenseModel(cfg.model, str(run.file("pretrain", "weights").resolve()), cfg.round_to,
                           importance=cfg.importance, drop_blocks=cfg.drop_blocks)
        search_stage(run, dense=dense, table=out / "latency_table.csv", latency_ms=[budget],
                     config=replace(cfg.search, seed=cfg.seed), device="cpu", where="search", resume=resume,
                     measure_top=cfg.measure_top, tune_steps=cfg.tune_steps, log=log)

    stage(4, "fine-tune the searched, the uniform-width and the L1-magnitude network the same way")
    result = run.file("search", "result")
    for name in NETWORKS:
        if resume and run.done(f"finetune_{name}"):
            continue
        log(f"-- fine-tune the {name} network")
        retrain_stage(run, result=result, baseline=None if name == "searched" else name, init="inherit",
                      device="cpu", where=f"finetune_{name}", key=f"finetune_{name}", resume=resume,
                      progress=progress, log=log,
                      train={"epochs": cfg.finetune_epochs, "lr": cfg.finetune_lr, "seed": cfg.seed,
                             "schedule": "cosine", "eval_ratios": ()})

    stage(5, "export to ONNX (checked against torch on real images)")
    for name in NETWORKS:
        if not (resume and run.done(f"export_{name}")):
            export_stage(run, checkpoint=run.file(f"finetune_{name}", "model"), out=out / f"{name}.onnx",
                         force=True, key=f"export_{name}")  # its own folder: a file there is an unrecorded export

    stage(6, "verify measured latency against prediction and budget, beside one dense measurement")
    if not (resume and run.done("verify")):
        verify_stage(run, models=[run.file(f"export_{name}", "onnx") for name in NETWORKS], table=table,
                     latency_ms=budget, passes=cfg.profile.passes, runs_per_pass=cfg.profile.runs_per_pass)

    stage(7, "write the report")
    figures = report_stage(run, space, table, config=asdict(cfg), budget_ms=budget, budget_rule=rule,
                           networks=NETWORKS)
    log(f"== done in {time.perf_counter() - started:.0f}s: {out / 'report.md'}")
    return figures


def _budget(cfg: QuickstartConfig, dense_ms: float, narrowest_ms: float) -> tuple[float, str]:
    """The search's budget (ms) and how it was set. A fraction of the dense latency that the narrowest network
    cannot meet on this machine falls back to the same fraction of the reachable range."""
    f = cfg.budget_fraction
    if cfg.budget_of not in ("dense", "range"):
        raise HwpruneError(f"budget_of must be 'dense' or 'range', got {cfg.budget_of!r}")
    if cfg.budget_of == "dense" and f * dense_ms > narrowest_ms:
        return round(f * dense_ms, 5), f"{f:.0%} of the dense network's predicted latency"
    return (round(narrowest_ms + f * (dense_ms - narrowest_ms), 5),
            f"{f:.0%} of the way from the narrowest network's predicted latency to the dense one's")
