"""One trained dense start, every method at equal measured latency and equal fine-tuning, on Fashion-MNIST.

    python benchmarks/fashion_mnist.py [--models resnet20 mobilenet_v2_cifar] [--fractions 0.3 0.5]
        [--seeds 0 1 2] [--workers 2] [--ablations] [--quick]

For each model, with latency measured by onnxruntime on this CPU (1 thread, batch 1):

1. profile the latency table, train ONE dense network (seed 0) and measure it; the
   budgets are fractions of its measured latency;
2. pick a network per budget with every method, all from that dense checkpoint:
   ``uniform`` (the widest uniform width whose measured latency meets the budget), ``l1`` (Torch-Pruning's
   global L1 magnitude pruning, its ratio bisected until the *measured* latency meets
   the budget), ``random`` (the best of N random networks under the budget, scored by
   the inherit evaluator: the sanity baseline of any search), ``hwprune`` (the default
   path: ``hwprune search --evaluator inherit``, on the space whose residual blocks may also be dropped),
   ``hwprune-<variant>`` for each
   PruningNet variant of ``pnet_methods`` (which search channels alone)
   (:data:`PNETS`: trained from the ordered dense weights, then searched; one by default). ``--ablations``
   adds a single-sample PruningNet, ``hwprune-inherit-bn`` (adaptive BN alone), ``hwprune-channels`` (the
   default search on channels alone: ``--keep-blocks``, what dropping blocks adds) and ``hwprune-rerank``
   (that search's ``rerank_top`` fittest and its uniform and magnitude networks scored again, tuned
   ``rerank_steps`` steps each: ``--rerank-top``); resnet20 only. The searched and random networks
   are the fittest whose latency, measured as the final networks are, meets the budget (``measure_top`` timed
   at a time, fittest first: ``hwprune search --measure-top``), as L1's ratio is bisected
   on measured latency. "Measured" is always beside reference networks: uniform widths
   near each budget, timed when the budgets were set and in every interleaved run
   since, and each network is held to its budget at the level of then, scaled by the
   reference nearest its own size (:func:`anchored`): this machine's speed drifts by
   10-20% over hours, and not alike for networks of every size. Every method that picks its network with the table
   (uniform, random, searched) asks it for the budget times what it over-predicts there
   (:func:`asked_budgets`). How long each took to choose, PruningNet training included, is
   ``search_seconds``;
3. fine-tune every chosen network the same way (epochs, schedule, distillation from
   the dense network) from its inherited weights, once per seed;
4. is the search signal any good? ``tau_candidates`` networks spread over 25-75% of
   the dense latency that keep every block, and ``tau_block_candidates`` more that drop at least one, are
   fine-tuned the same way; Kendall tau and Spearman between fitness and fine-tuned accuracy, of the inherit
   evaluators on all of them (the space they search) and of each PruningNet on those it can score, the first set
   (also for the PruningNet variants of ``pnet_tau_only``, which are not searched);
5. export every network, measure all of them interleaved with the references (``held_ms``, the
   latency at the level of when the budgets were set, and ``within_budget``, as in 2), and
   time each winner again in a plain onnxruntime session (1 thread, 20 warm-up and
   200 timed runs): the median a user measures, against the table's prediction.

Writes ``benchmarks/results/fashion_mnist.csv``, ``fashion_mnist_tau.csv``,
``fashion_mnist.png`` and ``fashion_mnist.md``. ``--quick`` runs every step in seconds
on the bundled data (the test suite runs it); its figures mean nothing. Every
finished step is kept under ``--work`` and a rerun resumes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy_vs_latency as avl  # noqa: E402  (shared: Torch-Pruning's L1 pruning and its ratio bisection)
import bench_common as common  # noqa: E402

import hwprune as hp  # noqa: E402
from hwprune.core.importance import TAYLOR_BATCHES, order_channels  # noqa: E402
from hwprune.core.macs import count_macs  # noqa: E402
from hwprune.files.atomic import write_atomic, write_json  # noqa: E402
from hwprune.profilers.registry import get_profiler  # noqa: E402
from hwprune.search import SearchConfig, search  # noqa: E402
from hwprune.search.baselines import BASELINES as FIRST_GENERATION, uniform_encodings  # noqa: E402
from hwprune.search.evolution import draw_encodings  # noqa: E402
from hwprune.search.evaluator import score_many  # noqa: E402
from hwprune.search.measured import budget_candidates  # noqa: E402
from hwprune.search.rerank import fresh_batches, rerank  # noqa: E402
from hwprune.supernet.evaluate import TUNE_STEPS, InheritEvaluator, PruningNetEvaluator  # noqa: E402
from hwprune.supernet.pruningnet import PruningNet  # noqa: E402
from hwprune.supernet.sampling import LatencyWindow  # noqa: E402
from hwprune.supernet.train import train_pruningnet  # noqa: E402
from hwprune.training.distill import distillation_loss  # noqa: E402
from hwprune.training.loop import fit  # noqa: E402
from hwprune.training.memory_format import channels_last  # noqa: E402
from hwprune.training.metrics import accuracy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BASELINES = ("uniform", "l1", "random", "hwprune")
# PruningNets, each built from the Taylor-ordered dense weights and trained pnet_epochs: TrainConfig overrides,
# ``window`` (random networks drawn from this fraction of the dense latency up to it) and ``rank`` (generator; the
# paper's full output layer unless given, as these were measured before rank 4 became the library's default)
PNETS = {
    "pruningnet": {},  # the library's default training (sandwich rule, in-place distillation)
    "pruningnet-single": {"sampling": "single"},  # MetaPruning's one random network per step
    "pruningnet-window": {"window": 0.25},  # the default, random networks from the search's latency range
    "pruningnet-rank4": {"rank": 4},  # the same with a rank-4 generator: the library's default since it was measured
}

COLUMNS = ["model", "dataset", "method", "budget_fraction", "budget_ms", "seed", "test_acc", "val_acc",
           "predicted_ms", "measured_ms", "held_ms", "median_ms", "within_budget", "flops", "params",
           "search_seconds", "finetune_seconds"]
TAU_COLUMNS = ["model", "evaluator", "candidates", "kendall_tau", "spearman", "default"]
# the settings random search's networks depend on (how they are scored and held to the budget), and a searched
# network on them and the evolution's: chosen.json keeps them, a change searches again (and draws random search's
# networks again only where one of the first changed)
RANDOM_SETTINGS = ("calib_batches", "val_batches", "random_candidates", "measure_top", "tune_steps", "taylor_batches")
SEARCH_SETTINGS = ("population", "generations", "bred", "local_share", "ramp", "steer_after") + RANDOM_SETTINGS
# search settings added since chosen.json's were first written: what they were
ADDED_SETTINGS = {"local_share": 0.0, "ramp": False}
# hwprune-rerank's own: a change scores its candidates again
RERANK_SETTINGS = ("rerank_top", "rerank_steps", "rerank_baselines", "rerank_fresh")
# how hwprune's network is picked from its search (``--pick-top``, ``--pick-draws``) and every search's winner is
# filled to the budget (``--no-fill``, ``--fill-rule``): a change picks again from the finished searches (a change of
# the fill every searched method's); chosen.json's from before 2026-12-05 08:30 were picked as with the defaults,
# those from before 2026-12-05 16:00 unfilled (PICK_BEFORE)
PICK_SETTINGS = ("pick_top", "pick_draws", "fill", "fill_rule")
PICK_BEFORE = {"pick_top": 0, "pick_draws": 1, "fill": False, "fill_rule": "proportion"}
METER = "beside references"  # how chosen.json's networks were held to the budget (:func:`anchored`); until
# 2026-12-04 "anchored", beside the dense network
SPACE = "blocks"  # chosen.json's encodings are of the space whose blocks may drop (:func:`blocks_space`)
# the networks every search with the inherit evaluator starts from (its first generation: hwprune.search.baselines);
# chosen.json keeps them, and a change searches those methods again (the PruningNets, which know no dense importances,
# start from the uniform network alone and keep theirs). Until 2026-12-05 uniform and magnitude
SEEDS = list(FIRST_GENERATION)
INHERIT_SEARCHED = ("hwprune", "hwprune-channels", "hwprune-rerank")  # (and hwprune-<INHERITS variant>)
DEFAULT_EVALUATOR = "inherit"  # what `hwprune search` uses unless told otherwise
# InheritEvaluator settings: the default (tuned Settings.tune_steps steps), adaptive BN alone
INHERITS = {"inherit": {}, "inherit-bn": {"tune_steps": 0}}


def methods(s: "Settings") -> tuple[str, ...]:
    """Every method of a run: the baselines, hwprune's default path, its ablations and one search per PruningNet
    variant."""
    every = BASELINES + ("hwprune-channels",) * s.channels + ("hwprune-rerank",) * bool(s.rerank_top) + tuple(
        f"hwprune-{v}" for v in s.inherit_methods + s.pnet_methods)
    return tuple(m for m in every if m in s.only) if s.only else every


@dataclass
class Settings:
    models: list[str] = field(default_factory=lambda: ["resnet20", "mobilenet_v2_cifar"])
    fractions: list[float] = field(default_factory=lambda: [0.3, 0.5])
    budget_of: str = "dense"  # fractions of the dense network's measured latency; "range": of the way from the
    # narrowest network's predicted latency to the dense one's, scaled to its measured (reachable anywhere: --quick)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    data: str = "fashion-mnist"
    limit: int | None = 12000  # training images (seeded subset of the 51,000)
    eval_limit: int | None = None  # validation and test images (None: all; --quick: fewer)
    batch_size: int = 64
    dense_epochs: int = 8
    dense_lr: float = 0.05
    finetune_epochs: int = 3
    finetune_lr: float = 0.01
    round_to: int = 4
    population: int = 32  # 16 x 5 missed networks the evaluator ranks higher (L1's at 30%); the CLI's is 50 x 20
    generations: int = 10
    # share of each generation after the first bred from the fittest (half mutations, half crossovers), the rest
    # random networks: hwprune's default share (SearchConfig). Until 2026-12-05 all of it (1.0, MetaPruning's)
    bred: float = (SearchConfig.mutations + SearchConfig.crossovers) / SearchConfig.population
    # share of mutated genes moved one or two choices rather than redrawn: hwprune's default (SearchConfig, 0).
    # chosen.json's from before 2026-12-05 lack it (searched at 0: ADDED_SETTINGS)
    local_share: float = SearchConfig.local_share
    # the bred share grown to the whole generation by the last one: hwprune's default (SearchConfig.ramp, since
    # 2026-12-05 10:40). chosen.json's from before lack it (searched without: ADDED_SETTINGS)
    ramp: bool = SearchConfig.ramp
    calib_batches: int = 4
    val_batches: int | None = 8  # fitness on 8 x 256 validation images
    tune_steps: int = TUNE_STEPS  # the default evaluator's distillation steps per candidate (hwprune's default)
    taylor_batches: int = TAYLOR_BATCHES  # calibration batches the channel order sums Taylor over (hwprune's default)
    random_candidates: int = 320  # as many as the search scores per budget (population x generations)
    measure_top: int = 8  # searched and random networks: the fittest timed, best first, until one meets the budget
    # every search times its measure_top fittest after this many generations and asks the table from then on for what
    # it predicts for them at the budget (SearchConfig.steer_after; 0: the asked budget throughout). Resnet20's
    # fittest at 50% measured 4% over their prediction where random networks measured 5% under, so the search asked
    # for 1.05 x the budget spent its generations on networks 3-16% over it, and the 18th fittest was the first within
    steer_after: int = 5
    # with pick_top, hwprune picks among its search's pick_top fittest and the budget's baseline networks, scored
    # again with its own evaluator, each the mean of pick_draws draws of tuning batches, on the validation batches
    # after the search's (`hwprune search --rerank-top N --rerank-steps 20 --rerank-draws D`). 0: the search's
    # fittest, hwprune's default: 4 and 3 kept the search's winner in all four cells of the run of 2026-12-05
    # 08:12-08:27 and took 95 s (resnet20) and about 200 s (mobilenet_v2_cifar) more (README, Results)
    pick_top: int = 0
    pick_draws: int = 1
    # every search's winner widened toward the budget after its last generation, every step timed down from the
    # widest until one meets the budget (SearchConfig.fill, hwprune's default since 2026-12-05 16:00)
    fill: bool = SearchConfig.fill
    fill_rule: str = SearchConfig.fill_rule  # which group the fill widens first (SearchConfig.fill_rule)
    # hwprune-rerank: the default search's rerank_top fittest scored again, tuned rerank_steps steps each
    # (`hwprune search --rerank-top`); 0: not run (--ablations: 8)
    rerank_top: int = 0
    rerank_steps: int = 300
    rerank_baselines: bool = True  # and the search's uniform and magnitude networks (rerank's ``baselines``)
    # scored on the validation batches after the search's (rerank.fresh_batches), as `hwprune search` does (False:
    # on the search's own, as before 2026-12-04 10:30)
    rerank_fresh: bool = True
    # hwprune-channels: the default search on channels alone (the space without dropped blocks: --keep-blocks);
    # --ablations (a search and 6 fine-tunes, kept out of the default run and its 2.5 h)
    channels: bool = False
    # searched ablations of INHERITS, searched PruningNet variants and tau-only ones: the default run has what the
    # comparison needs (the default evaluator and one PruningNet), --ablations adds the rest (ABLATIONS)
    inherit_methods: list[str] = field(default_factory=list)
    pnet_epochs: int = 3
    pnet_methods: list[str] = field(default_factory=lambda: ["pruningnet"])
    pnet_tau_only: list[str] = field(default_factory=list)
    tau_candidates: int = 16  # networks that keep every block (every evaluator can score them)
    tau_block_candidates: int = 8  # and networks that drop at least one (the inherit evaluators' space)
    # ranking agreement on resnet20 only: mobilenet_v2_cifar's 16 fine-tunes (~20 min) would not fit the 2.5 h run
    tau_models: list[str] = field(default_factory=lambda: ["resnet20"])
    only: list[str] | None = None  # a run of these methods alone (--methods); None: every method
    profile_repeats: int = 25
    calibrate: int = 16
    passes: int = 5
    runs_per_pass: int = 10
    median_runs: int = 200
    max_wait_s: float = 10.0  # longest wait for a quiet machine before each latency measurement
    tp_max_ratio: float = 0.9
    tp_iterative_steps: int = 10
    tp_steps: int = 8
    # mobilenet_v2_cifar trains ~5x slower per image on these CPUs and the default evaluator scores a candidate in
    # ~7.6 s on 4 validation batches (channels last; 11 s in NCHW; most of it the 20 tuning steps): fewer images,
    # fine-tuning epochs and fitness batches, a 16 x 7 search and one searched PruningNet keep its part near resnet20's
    # (every method of a model still gets the same fine-tuning). Its 16 x 5 search (before channels last paid for two
    # more generations) was still gaining fitness in the last generation at both budgets
    per_model: dict = field(default_factory=lambda: {"mobilenet_v2_cifar": dict(
        limit=5000, dense_epochs=6, finetune_epochs=2, val_batches=4, population=16, generations=7, steer_after=3,
        random_candidates=112, inherit_methods=[], pnet_methods=["pruningnet"], pnet_tau_only=[], rerank_top=0,
        channels=False)})

    def for_model(self, name: str) -> "Settings":
        return replace(self, **self.per_model.get(name, {}), per_model={})


# what --ablations adds to resnet20's run (mobilenet_v2_cifar's settings keep one PruningNet and no ablation)
ABLATIONS = dict(inherit_methods=["inherit-bn"], pnet_methods=["pruningnet", "pruningnet-single"],
                 pnet_tau_only=["pruningnet-window", "pruningnet-rank4"], channels=True, rerank_top=8)
# which methods run, not how: a rerun may add or drop them in the same work folder
METHOD_LISTS = tuple(ABLATIONS) + ("blocks",)  # ("blocks": claimed before 2026-12-03 17:00)

QUICK = dict(per_model={}, models=["resnet20"], fractions=[0.5], budget_of="range", seeds=[0, 1], data="bundled",
             limit=128, inherit_methods=["inherit-bn"],  # (an ablation, so that the quick run covers its path)
             dense_epochs=1, finetune_epochs=1, population=4, generations=2, steer_after=1, calib_batches=1,
             val_batches=1, tune_steps=2, taylor_batches=1, eval_limit=256,
             random_candidates=4, measure_top=2, rerank_top=2, rerank_steps=3, pnet_epochs=1, channels=True,
             pnet_methods=["pruningnet"],
             pnet_tau_only=["pruningnet-single"],
             tau_candidates=4, tau_block_candidates=2, profile_repeats=3, calibrate=2, passes=1,
             runs_per_pass=2, median_runs=5, max_wait_s=0.2, tp_iterative_steps=2, tp_steps=2, round_to=8)


# ---- ranking agreement --------------------------------------------------------------------------
def kendall_tau(a, b) -> float:
    """Kendall's tau-b (ties counted as neither concordant nor discordant)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    i, j = np.triu_indices(len(a), 1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    n_a, n_b = np.count_nonzero(da), np.count_nonzero(db)
    return float((da * db).sum() / np.sqrt(n_a * n_b)) if n_a and n_b else float("nan")


def spearman(a, b) -> float:
    """Spearman's rho: Pearson correlation of the (average) ranks."""
    def ranks(x):
        x = np.asarray(x, float)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):  # ties share their mean rank
            r[x == v] = r[x == v].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


# ---- shared set-up ------------------------------------------------------------------------------
def setup(name: str, s: Settings, seed: int = 0):
    """The model's space (channels alone: the dense network's) and loaders; :func:`blocks_space` is the default
    search's."""
    return common.setup(name, s.data, s.limit, s.batch_size, s.round_to, seed, s.eval_limit)


def ordered_dense(space, dense, loaders, batches: int):
    """The dense network, its channels in the default (Taylor) order summed over ``batches`` calibration batches:
    what every searched, random and uniform network inherits, and what every seed fine-tunes."""
    return order_channels(space, dense, data=loaders.calib, batches=batches)


def blocks_space(space, s: "Settings"):
    """``space`` whose residual blocks may also be dropped (the default search's, ``hwprune search``'s): same groups
    and widths, and width 0 for a group on a residual branch. Every chosen network is an encoding of it."""
    return hp.SearchSpace.from_model(space.model, space.input_shapes[0], round_to=s.round_to, drop_blocks=True)


def channels_space(space, s: "Settings"):
    """``space`` without dropped blocks (``hwprune-channels`` and the PruningNets, ``--keep-blocks``)."""
    return hp.SearchSpace.from_model(space.model, space.input_shapes[0], round_to=s.round_to)


def recoded(enc, src, dst) -> list[int]:
    """``enc`` of space ``src`` as the encoding of ``dst`` with the same widths (same groups, one with width 0)."""
    return [dst.groups[i].choices.index(src.groups[i].choices[int(e)]) for i, e in enumerate(enc)]


def inherit_evaluator(variant: str, space, ordered, s: "Settings") -> InheritEvaluator:
    """The inherit evaluator ``variant`` of :data:`INHERITS`; the default tunes ``s.tune_steps`` steps."""
    return InheritEvaluator(space, ordered, **{"tune_steps": s.tune_steps, **INHERITS[variant]})


def batch_key(x: torch.Tensor) -> str:
    """A training batch's identity: the digest of its bytes (the same images, augmented alike, in the same order)."""
    return hashlib.sha1(x.detach().contiguous().cpu().numpy().tobytes()).hexdigest()


class CachedTeacher(torch.nn.Module):
    """The dense teacher, its outputs looked up by batch (:func:`batch_key`) where :func:`teacher_outputs_job`
    computed them, computed where it did not. Every fine-tune of a seed trains on the same batches (the sampler and
    augmentation are seeded per seed and epoch) and distils from the same dense network, so its outputs are computed
    once per seed instead of once per fine-tune: the teacher's forward pass took 45 ms of a resnet20 fine-tune's
    150 ms training step (batch 64, 1 thread, a 2-core EPYC, the 50% network), about a fifth of the fine-tune with
    its evaluation. The outputs are the teacher's own, computed on one thread as the fine-tune's would be."""

    def __init__(self, teacher: torch.nn.Module, outputs: dict):
        super().__init__()
        self.teacher, self.outputs, self.hits, self.misses = teacher, outputs, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None if self.training else self.outputs.get(batch_key(x))  # (the outputs are of the teacher in eval mode)
        if out is None:
            self.misses += 1
            return self.teacher(x)
        self.hits += 1
        return out.to(x.device)


TEACHER_FORMAT = "hwprune.bench.teacher-outputs/1"


def teacher_outputs_job(job: dict) -> dict:
    """The dense network's outputs on every training batch of one seed's fine-tunes (``finetune_epochs`` epochs, as
    :func:`hwprune.training.loop.fit` draws them), kept beside the job's JSON for :class:`CachedTeacher`."""
    torch.set_num_threads(job.get("threads", 1))
    s, out = Settings(**job["settings"]), Path(job["out"])
    started = time.time()
    _, loaders = setup(job["model"], s, job["seed"])
    dense, _ = hp.load_pruned(job["dense"])
    dense.eval()
    outputs, train = {}, loaders.train
    with torch.no_grad(), channels_last(dense):  # (as the fine-tune's teacher runs: hwprune.retrain converts it)
        for epoch in range(s.finetune_epochs):
            train.sampler.set_epoch(epoch, start=0)
            train.dataset.set_epoch(epoch)
            for x, _ in train:
                outputs[batch_key(x)] = dense(x).float()
    from hwprune.files.checkpoint import save_checkpoint

    save_checkpoint(out.with_suffix(".pt"), {"format": TEACHER_FORMAT, "outputs": outputs})
    result = {"batches": len(outputs), "train_seconds": round(time.time() - started, 1)}
    write_json(out, result)
    return result


def teacher_jobs(name: str, s: Settings, dense_path: Path, seeds, jobs: list[dict]) -> list[dict]:
    """One :func:`teacher_outputs_job` per seed, named by everything its batches and outputs depend on (the dense
    checkpoint's bytes, the data, the training images, the batch size and the epochs), and ``jobs`` told where
    their seed's outputs are."""
    key = json.dumps([hashlib.sha1(dense_path.read_bytes()).hexdigest(), s.data, s.limit, s.batch_size,
                      s.finetune_epochs, s.eval_limit])
    tag = hashlib.sha1(key.encode()).hexdigest()[:10]
    out = {seed: dense_path.parent / f"teacher_{tag}_s{seed}.json" for seed in seeds}
    for j in jobs:
        j["teacher_outputs"] = str(out[j["seed"]].with_suffix(".pt"))
    return [{"kind": "teacher", "model": name, "seed": seed, "settings": asdict(s), "dense": str(dense_path),
             "label": f"{name} teacher outputs, seed {seed}", "out": str(path)} for seed, path in out.items()]


def teacher_for(job: dict, dense: torch.nn.Module) -> torch.nn.Module:
    """The fine-tune's teacher: ``dense``, its outputs looked up where :func:`teacher_outputs_job` kept them."""
    path = job.get("teacher_outputs")
    if not path or not Path(path).exists():
        return dense
    from hwprune.files.checkpoint import load_checkpoint

    return CachedTeacher(dense, load_checkpoint(path, TEACHER_FORMAT)["outputs"])


def finetune_job(job: dict) -> dict:
    """One fine-tune (or the dense training, or a seed's teacher outputs): a worker process, one torch thread."""
    if job["kind"] == "teacher":
        return teacher_outputs_job(job)
    torch.set_num_threads(job.get("threads", 1))
    s, out = Settings(**job["settings"]), Path(job["out"])
    started = time.time()
    space, loaders = setup(job["model"], s, job["seed"])
    quiet = dict(progress=False, log=lambda m: None)
    if job["kind"] != "dense":
        space = blocks_space(space, s)  # every chosen network's encoding is of the default search's space
    if job["kind"] == "dense":
        cfg = hp.TrainConfig(epochs=s.dense_epochs, lr=s.dense_lr, seed=0, schedule="cosine", eval_ratios=())
        model, _ = hp.retrain(space, space.full(), loaders.train, config=cfg, run_dir=out.parent, resume=True, **quiet)
        extra = {"encoding": list(space.full())}
    else:
        dense, _ = hp.load_pruned(job["dense"])
        cfg = hp.TrainConfig(epochs=s.finetune_epochs, lr=s.finetune_lr, seed=job["seed"], schedule="cosine",
                             eval_ratios=())
        if job.get("ratio") is not None:  # Torch-Pruning's network
            model = avl.l1_prune(dense, job["ratio"], torch.zeros(1, *loaders.input_shape), s)
            teacher = teacher_for(job, dense)
            with channels_last(teacher):  # (as hwprune.retrain runs the other methods' teacher)
                fit(model.train(), loaders.train, cfg, forward=lambda m, x, step: m(x),
                    payload=lambda: {"state_dict": model.state_dict(), "ratio": job["ratio"]}, fmt=avl.TP_FORMAT,
                    fingerprint=f"{job['dense']}:{job['ratio']}", checkpoint=out.parent / "model.pt",
                    loss_fn=distillation_loss(teacher, label_smoothing=cfg.label_smoothing), resume=True, **quiet)
            extra = {"ratio": job["ratio"]}
        else:
            source = (order_channels(space, dense, metric="l1") if job.get("order") == "l1" else  # (l1_widths.py)
                      ordered_dense(space, dense, loaders, job.get("taylor_batches", s.taylor_batches)))
            model, _ = hp.retrain(space, job["encoding"], loaders.train, config=cfg, init="inherit", source=source,
                                  teacher=teacher_for(job, dense),
                                  run_dir=out.parent,
                                  resume=True, **quiet)
            extra = {"encoding": list(job["encoding"])}
    model.eval()
    result = {**extra, "test_acc": accuracy(model, loaders.test), "val_acc": accuracy(model, loaders.val),
              "flops": count_macs(model, [torch.zeros(1, *loaders.input_shape)]),
              "params": sum(p.numel() for p in model.parameters()),
              "finetune_seconds": round(time.time() - started, 1)}
    write_json(out, result)
    return result


def run_pool(jobs: list[dict], workers: int, say) -> None:
    common.run_pool(jobs, workers, say, finetune_job)


def run_finetunes(name: str, s: Settings, dense_path: Path, jobs: list[dict], workers: int, say) -> None:
    """Fine-tune ``jobs`` (of ``name``'s dense checkpoint ``dense_path``, settings ``s``), first computing the dense
    network's outputs on the batches of each seed that has a fine-tune to run (:class:`CachedTeacher`)."""
    pending = sorted({j["seed"] for j in jobs if not common.done(j)})
    teachers = teacher_jobs(name, s, dense_path, pending, [j for j in jobs if j["seed"] in pending])
    if teachers:
        say(f"  the dense network's outputs on the fine-tunes' batches, once per seed ({len(teachers)})")
    run_pool(teachers, workers, say)
    run_pool(jobs, workers, say)


# ---- choosing the networks ------------------------------------------------------------------------
def train_pnet(variant: str, s: Settings, work: Path, space, ordered, loaders, table) -> tuple[PruningNet, float]:
    """The PruningNet ``variant`` of :data:`PNETS` (trained once, kept in ``work``) and its training seconds."""
    opts = dict(PNETS[variant])
    window, rank = opts.pop("window", None), opts.pop("rank", None)  # the full generator unless told, as measured
    path = work / f"{variant}.pt"
    if not path.exists():
        t = time.time()
        pnet = PruningNet(space, source=ordered, rank=rank)
        train_pruningnet(pnet, loaders.train, config=hp.TrainConfig(epochs=s.pnet_epochs, eval_ratios=(), **opts),
                         window=LatencyWindow.from_fraction(table, space, window) if window else None,
                         run_dir=work / f"{variant}_run", resume=True, progress=False, log=lambda m: None)
        torch.save({"state_dict": pnet.state_dict(), "seconds": time.time() - t}, path)
    saved = torch.load(path, weights_only=True)
    pnet = PruningNet(space, source=ordered, rank=rank)
    pnet.load_state_dict(saved["state_dict"])
    return pnet.eval(), float(saved["seconds"])


def search_config(s: Settings, seed: int = 0, workers: int = 1) -> SearchConfig:
    """The search every searched method runs: ``s.population`` x ``s.generations``, a third of the population
    breeding, ``s.bred`` of the next generation bred from them (half mutations, half crossovers) and the rest random
    (with ``s.ramp`` the bred share grows to all of the last generation); candidates scored in ``workers``
    processes (one thread each: each candidate scored as on one thread, whatever ``workers``)."""
    half = round(s.population * s.bred / 2)
    return SearchConfig(population=s.population, keep_top=s.population, parents=max(2, s.population // 3),
                        mutations=half, crossovers=half, local_share=s.local_share, ramp=s.ramp,
                        generations=s.generations,
                        calib_batches=s.calib_batches, val_batches=s.val_batches, seed=seed,
                        steer_after=s.steer_after, steer_top=s.measure_top, workers=workers, fill=s.fill,
                        fill_rule=s.fill_rule)


def l1_ratio(measure_at, budget_ms: float, s: Settings, say) -> float:
    """L1's pruning ratio for a budget: the smallest whose measured latency (``measure_at(ratio)``, ms) meets it, by
    bisection. Where even ``s.tp_max_ratio`` measures over the budget (L1 cannot meet it, or one timing of a busy
    machine said so), that ratio's network: the final timing holds it to the budget like every other network and its
    row says whether it met it, instead of the run stopping."""
    try:
        return avl.fit_ratio(measure_at, budget_ms, s.tp_max_ratio, s.tp_steps)[0]
    except hp.HwpruneError as e:
        say(f"  {budget_ms:.4f} ms budget, L1: {e}; its network is the {s.tp_max_ratio:.0%} one, held to the budget in "
            f"the final timing")
        return s.tp_max_ratio


def choose(name: str, s: Settings, work: Path, space, loaders, table, budgets, dense_path: Path, measure, say,
           workers: int = 1):
    """Every method's network per budget (``{method: {fraction: {"encoding"|"ratio", "search_seconds"}}}``, every
    encoding of ``space``, the default search's) and the evaluators the tau step reuses. Methods already in
    ``chosen.json`` are kept (a rerun adds the new ones). The table is asked for what it predicts at each budget
    (:func:`asked_budgets`, kept in ``chosen.json``); ``measure`` holds every network to the budget itself."""
    path = work / "chosen.json"
    dense, _ = hp.load_pruned(dense_path)
    ordered = ordered_dense(space, dense, loaders, s.taylor_batches)  # the default order (Taylor)
    inherit = inherit_evaluator(DEFAULT_EVALUATOR, space, ordered, s)
    plain = channels_space(space, s)  # hwprune-channels' and the PruningNets' (which cannot drop a block)
    cfg = search_config(s, workers=workers)
    evaluators, train_seconds = {"inherit": inherit}, {}
    for variant in s.inherit_methods:
        evaluators[variant] = inherit_evaluator(variant, space, ordered, s)
    if "hwprune-channels" in methods(s):
        evaluators["channels"] = inherit_evaluator(DEFAULT_EVALUATOR, plain, ordered, s)
    for variant in dict.fromkeys(s.pnet_methods + s.pnet_tau_only):
        if f"hwprune-{variant}" not in methods(s) and name not in s.tau_models:  # neither searched nor ranked
            continue
        pnet, train_seconds[variant] = train_pnet(variant, s, work, plain, ordered, loaders, table)
        evaluators[variant] = PruningNetEvaluator(pnet)
    chosen = reusable(json.loads(path.read_text()) if path.exists() else {}, s, say)
    if "asked" not in chosen:
        chosen["asked"], chosen["asked_rule"] = asked_budgets(space, table, budgets, measure, say), ASKED_RULE
        write_json(path, chosen)
    asked = {f: chosen["asked"][str(f)] for f, _ in budgets}
    lats = [asked[f] for f, _ in budgets]
    searches = [("hwprune", inherit, 0.0)] + [(f"hwprune-{v}", evaluators[v], train_seconds.get(v, 0.0))
                                              for v in ["channels"] + s.inherit_methods + s.pnet_methods
                                              if v in evaluators]
    if chosen.get("rerank") != {k: getattr(s, k) for k in RERANK_SETTINGS}:
        chosen.pop("hwprune-rerank", None)
        chosen["rerank"] = {k: getattr(s, k) for k in RERANK_SETTINGS}
    pick, picked_before = {k: getattr(s, k) for k in PICK_SETTINGS}, {}  # (hwprune's picks made another way)
    before = {**PICK_BEFORE, **chosen.get("pick", {})}
    if before != pick:  # (its search is kept)
        picked_before = chosen.pop("hwprune", None) or {}
        if picked_before:
            say(f"  hwprune's pick changed ({before} -> {pick}): picking again from its search")
        filled = lambda p: (p["fill"], p["fill"] and p["fill_rule"])  # noqa: E731
        if filled(before) != filled(pick):  # (every search's winner filled, or not, or another way: theirs too)
            for method, _, _ in searches[1:]:
                chosen.pop(method, None)
        chosen["pick"] = pick
    for method, ev, extra in searches + [("hwprune-rerank", inherit, 0.0)]:
        if method in chosen or method not in methods(s):
            continue
        t = time.time()
        # its state is kept after every generation, in a folder named by everything its fitness and budgets rest
        # on, so that an interrupted run resumes the search (a change of settings starts another); hwprune-rerank
        # resumes the default's search (finished: at once) and scores its fittest again
        searched = "hwprune" if method == "hwprune-rerank" else method
        # (the default's searches of the space with dropped blocks are kept apart from those before it was)
        # (and the inherit searches seeded with the saliency network apart from those before: SEEDS)
        # (a setting added since at the value it had before keeps the folder's name: ADDED_SETTINGS)
        key = json.dumps([searched, lats, {k: getattr(s, k) for k in SEARCH_SETTINGS if k not in ADDED_SETTINGS or
                                           getattr(s, k) != ADDED_SETTINGS[k]}] + ["blocks"] * bool(
            ev.space.branches) + SEEDS * (getattr(ev, "saliency", None) is not None), sort_keys=True)
        run_dir = work / f"{searched}_search_{hashlib.sha1(key.encode()).hexdigest()[:10]}"
        res = search(ev, loaders.val, loaders.calib, table=table, latency_ms=lats, config=cfg, log=say,
                     run_dir=run_dir, resume=True, measure=steer_meter(measure, ev.space),
                     measured_ms=[b for _, b in budgets])
        # the search's own seconds, summed over the runs that worked on it (a finished one resumes at once); one
        # searched before they were kept here took what the pick made from it said
        spent = chosen.setdefault("searched", {})
        if run_dir.name not in spent:
            made = (picked_before or chosen.get("hwprune", {})) if searched == "hwprune" else {}
            spent[run_dir.name] = next(iter(made.values()), {}).get("search_seconds", 0.0)
        spent[run_dir.name] = round(spent[run_dir.name] + time.time() - t, 1)
        t = time.time()
        if method == "hwprune" and s.pick_top:
            rerank(res, ev, loaders.val, loaders.calib, top=s.pick_top, calib_batches=s.calib_batches,
                   **fresh_batches(s.val_batches), draws=s.pick_draws, workers=workers, log=say)
        if method == "hwprune-rerank":
            window = fresh_batches(s.val_batches) if s.rerank_fresh else {"val_batches": s.val_batches}
            rerank(res, inherit_evaluator(DEFAULT_EVALUATOR, space, ordered, replace(s, tune_steps=s.rerank_steps)),
                   loaders.val, loaders.calib, top=s.rerank_top, calib_batches=s.calib_batches, **window,
                   baselines=s.rerank_baselines, log=say)
        seconds = round(spent[run_dir.name] + time.time() - t + extra, 1)
        chosen[method] = {}
        for i, ((f, b), best) in enumerate(zip(budgets, res.best)):
            pool = [(h["encoding"], h["fitness"]) for h in budget_candidates(res, i)]
            picked = fittest_within(pool, b, measure, ev.space, s.measure_top, say)
            picked["encoding"] = recoded(picked["encoding"], ev.space, space)
            chosen[method][str(f)] = {**picked, "search_seconds": seconds,
                                      **({"steered": best["steered"]} if "steered" in best else {})}
            drops = [space.groups[p].name for p in space.branches if picked["encoding"][p] == 0]
            say(f"  {b:.4f} ms budget, {method}: drops the blocks of {drops or 'no group'}")
        write_json(path, chosen)
    rng = np.random.default_rng(0)
    for f, b in budgets:
        # (a uniform network chosen another way, by the table alone or timed only where the table put it under the
        # budget, on one run per check, is chosen again; so is an L1 ratio bisected on one run per check)
        if "uniform" in methods(s) and chosen.setdefault("uniform", {}).get(str(f), {}).get("rule") != UNIFORM_RULE:
            t = time.time()
            chosen["uniform"][str(f)] = {**uniform_within(space, table, b, measure, s.measure_top, say, asked[f]),
                                         "rule": UNIFORM_RULE, "search_seconds": round(time.time() - t, 1)}
        if "random" in methods(s) and str(f) not in chosen.setdefault("random", {}):  # best of N random, same evaluator
            t = time.time()
            # drawn as the search draws its random networks, from the same window (min_fraction of the budget up
            # to it; under it where the window is empty): the search without its evolution
            pool = draw_encodings(space, rng, 200 * s.random_candidates)
            lat = table.predict_batch(pool)
            window = (lat <= asked[f]) & (lat >= cfg.min_fraction * asked[f])
            feasible = [tuple(map(int, e)) for e in pool[window if window.any() else lat <= asked[f]]][
                : s.random_candidates] \
                or [space.narrowest()]
            val = limited(loaders.val, s.val_batches)
            scores = score_many(inherit, feasible, val, loaders.calib, s.calib_batches, workers)  # the default's
            pool = sorted(zip(map(list, feasible), scores), key=lambda c: -c[1])  # stable: argmax first on ties
            chosen["random"][str(f)] = {**fittest_within(pool, b, measure, space, s.measure_top, say),
                                        "search_seconds": round(time.time() - t, 1)}
        if "l1" in methods(s) and chosen.setdefault("l1", {}).get(str(f), {}).get("repeats") != REPEATS:
            t = time.time()
            ratio = l1_ratio(lambda r: median_of(measure, [avl.l1_prune(dense, r, torch.zeros(
                1, *loaders.input_shape), s)])[0], b, s, say)
            chosen["l1"][str(f)] = {"ratio": ratio, "repeats": REPEATS, "search_seconds": round(time.time() - t, 1)}
        write_json(path, chosen)
    return chosen, evaluators


def reusable(chosen: dict, s: Settings, say) -> dict:
    """What of a saved ``chosen.json`` still holds under ``s``: all of it when it was chosen with the same search
    settings (:data:`SEARCH_SETTINGS`), else only the uniform and L1 networks (which no search picks) and random
    search's where what it rests on (:data:`RANDOM_SETTINGS`) did not change; only L1's
    (which never asks the table) when it was chosen before the table was asked for what it predicts at each budget
    (``"asked"``, :func:`asked_budgets`) or was asked another way than :data:`ASKED_RULE`, or when its encodings
    are of another space than :data:`SPACE`; none of it when it was held to the budget another way (:data:`METER`).
    The inherit evaluator's searches are dropped too where they started from other networks than :data:`SEEDS`."""
    searched = {k: getattr(s, k) for k in SEARCH_SETTINGS}
    if chosen and chosen.get("meter") != METER:  # held to the budget another way: all again
        meter = chosen.get("meter")
        how = {None: "in ms alone", "anchored": "beside the dense network"}.get(meter, meter)
        say(f"  the networks were held to the budget {how}, not beside reference networks of their size: choosing "
            f"again")
        return {"search": searched, "meter": METER, "space": SPACE, "seeds": SEEDS}
    if chosen and chosen.get("space") != SPACE:  # encodings of the space without dropped blocks
        say("  the networks were chosen in the space without dropped blocks: choosing every network but L1's again")
        chosen = {m: v for m, v in chosen.items() if m in ("l1", "search", "meter")}
    if chosen and ("asked" not in chosen or chosen.get("asked_rule") != ASKED_RULE):
        how = ("for the budgets as they are, not for what it predicts at them" if "asked" not in chosen else
               f"for what it predicts at each budget in one step, not {ASKED_RULE}")
        say(f"  the table was asked {how}: asking it again and choosing every network but L1's again")
        chosen = {m: v for m, v in chosen.items() if m in ("l1", "search", "meter")}
    before = {**ADDED_SETTINGS, **chosen["search"]} if chosen.get("search") else {}
    if chosen and before != searched:
        keep = ("uniform", "l1", "asked", "asked_rule") + ("random",) * all(
            k in before and before[k] == searched[k] for k in RANDOM_SETTINGS)
        changed = {k: (before.get(k), v) for k, v in searched.items() if before.get(k) != v}
        how = f"changed ({', '.join(f'{k}: {a} -> {b}' for k, (a, b) in changed.items())})" if before else "not kept"
        say(f"  search settings {how}: searching again{', keeping random search' * ('random' in keep)}")
        chosen = {m: v for m, v in chosen.items() if m in keep}
    inherit = INHERIT_SEARCHED + tuple(f"hwprune-{v}" for v in INHERITS)
    if chosen and chosen.get("seeds") != SEEDS and any(m in chosen for m in inherit):
        say(f"  the inherit searches started from {' and '.join(chosen.get('seeds') or ['uniform', 'magnitude'])}, "
            f"not {', '.join(SEEDS)}: searching them again")
        chosen = {m: v for m, v in chosen.items() if m not in inherit}
    return {**chosen, "search": searched, "meter": METER, "space": SPACE, "seeds": SEEDS}


def asked_budgets(space, table, budgets, measure, say, n: int = 5, seed: int = 0,
                  steps: int = 2) -> dict[str, float]:
    """What to ask the table for at each budget (``{fraction: ms}``): the budget times the median of predicted over
    measured latency of the ``n`` random networks the table puts nearest what it is asked for, ``steps`` times: first
    nearest the budget itself, then nearest the last answer (the networks that will be chosen, which measure near the
    budget). The table's error depends on a network's size (resnet20's put the dense network 5.1% over its measured
    latency and networks near 30% and 50% of it 4.8% and 7.3% over), so a table asked for the budget itself leaves
    what it over-predicts there unused, while L1's ratio, bisected on measured latency, does not. One step was not
    enough where the error changes fast with size: on the Xeon at 30% it asked for 0.782 x the budget, and the chosen
    network, which the table put at 0.807 x what it measured, left 4% of the budget unused. It is never asked for as
    much as it puts the dense network at (at most for the widest of the random networks): a budget under the dense
    network's latency asks for a pruned one, and a noisy timing (1.65 x in one quick run) must not let it in."""
    rng, out = np.random.default_rng(seed), {}
    pool = draw_encodings(space, rng, 20000)
    lat = table.predict_batch(pool)
    dense_ms = float(table.predict_batch(np.asarray([space.full()]))[0])
    cap = float(lat[lat < dense_ms].max()) if (lat < dense_ms).any() else dense_ms
    for f, b in budgets:
        target = b
        for step in range(steps):
            nearest = np.argsort(np.abs(lat - target), kind="stable")[:n]
            ms = np.asarray(measure([space.materialize(tuple(map(int, e))) for e in pool[nearest]]))
            ratio = float(np.median(lat[nearest] / ms))
            say(f"  {b:.4f} ms budget, step {step + 1}: the table puts {n} networks near {target:.4f} ms at "
                f"{ratio:.3f} x their measured latency ({np.median(ms):.4f} ms)")
            target = round(b * ratio, 5)
            if target > cap:
                say(f"  {b:.4f} ms budget: {target:.4f} ms would let the dense network in (the table puts it at "
                    f"{dense_ms:.4f} ms): {cap:.4f} ms, the widest random network's")
                target = cap
        out[str(f)] = target
        say(f"  {b:.4f} ms budget: asking the table for {target:.4f} ms")
    return out


ASKED_RULE = "2 steps"  # how chosen.json's "asked" was found (:func:`asked_budgets`); networks the table picked
# when it was asked another way are chosen again (:func:`reusable`)
REPEATS = 3  # interleaved runs per budget check (:func:`median_of`)
UNIFORM_SLACK = 1.25  # uniform widths are timed from those the table puts up to this much over the budget
UNIFORM_RULE = f"timed within {UNIFORM_SLACK} x asked, median of {REPEATS}"  # kept beside a uniform choice


def fittest_within(pool: list, budget_ms: float, measure, space, top: int, say, order: str = "fitness",
                   repeats: int = REPEATS) -> dict:
    """Of ``pool`` ((encoding, fitness), fittest first), the fittest whose latency, measured as every method's final
    network is, meets the budget: ``top`` at a time, up to 3 x ``top`` (what ``hwprune search --measure-top`` does,
    with this harness's meter). None meeting it: the fittest, as the search chose it. In width order (widest first),
    every width is timed until one meets it, and where none does the narrowest is kept: the widest, kept before,
    made the dense network the uniform baseline of a quick run on a loaded machine. Each batch is timed in
    ``repeats`` interleaved runs and a network's latency is the median of them: one run on this shared machine put
    two uniform resnet20s 25% above what four later runs agreed on, and so chose a width narrower than the budget
    allowed."""
    scan = len(pool) if order == "width" else min(len(pool), 3 * top)
    for start in range(0, scan, top):
        batch = pool[start:start + top]
        runs = median_of(measure, [space.materialize(e) for e, _ in batch], repeats)
        for rank, ((enc, _), ms) in enumerate(zip(batch, runs), start):
            if ms <= budget_ms:
                if rank:
                    say(f"  {budget_ms:.4f} ms budget: candidate {rank + 1} in {order} order is the first within "
                        f"it as measured ({ms:.4f} ms)")
                return {"encoding": list(enc), "measured_rank": rank, "measured_ms": round(float(ms), 4)}
    kept = pool[-1 if order == "width" else 0][0]
    say(f"  {budget_ms:.4f} ms budget: none of the first {scan} in {order} order measured within it; keeping the "
        f"{'narrowest' if order == 'width' else 'fittest'}")
    return {"encoding": list(kept), "measured_rank": None, "measured_ms": None}


def steer_meter(measure, space):
    """What every search steers by (``SearchConfig.steer_after``): encodings of ``space`` timed as every budget check
    is, the median of :data:`REPEATS` interleaved runs of ``measure`` (the anchored meter)."""
    return lambda encs: median_of(measure, [space.materialize(e) for e in encs])


def median_of(measure, nets: list, repeats: int = REPEATS) -> list[float]:
    """Each network's median latency over ``repeats`` interleaved runs of ``measure`` (as :func:`fittest_within`
    and L1's ratio bisection hold networks to the budget)."""
    return np.median([measure(nets) for _ in range(repeats)], axis=0).tolist()


def uniform_within(space, table, budget_ms: float, measure, top: int, say, asked_ms: float | None = None) -> dict:
    """The widest uniform-width network whose latency, measured as every method's final network is, meets the
    budget: what a user slimming every layer alike would ship, held to the same measured budget as L1's ratio and
    the searched networks. The table only narrows down which widths to time (those it predicts within
    :data:`UNIFORM_SLACK` x ``asked_ms``, the budget unless given, widest first; where it predicts none, the
    narrowest): a user would time the widths, not ask our table, and the table put resnet20's next width 4% over
    its 50% budget where it measured 48-49% of the dense network. The full width is the dense network, never a
    uniform one, however far under the budget it measures."""
    widths = dict.fromkeys(map(tuple, uniform_encodings(space)[1].tolist()))  # the search's uniform networks, once each
    widths.pop(tuple(space.full()), None)
    pool = [(list(e), None) for e in widths if table.predict(e) <= UNIFORM_SLACK * (asked_ms or budget_ms)] \
        or [(list(space.narrowest()), None)]
    return fittest_within(pool, budget_ms, measure, space, top, say, order="width")


def limited(loader, n):
    from hwprune.search.evaluator import _Limited

    return _Limited(loader, n) if n else loader


def tau_candidates(space, table, n: int, dense_ms: float, seed: int = 0, drop: bool = False) -> list[tuple[int, ...]]:
    """``n`` networks spread evenly over 25-75% of the dense network's predicted latency (one per latency bin):
    networks that keep every block, or with ``drop`` networks that drop at least one."""
    rng = np.random.default_rng(seed)
    edges = np.linspace(0.25, 0.75, n + 1) * dense_ms
    low = [int(g.choices[0] == 0 and not drop) for g in space.groups]  # (width 0 drops a block)
    picked = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        for _ in range(20000):
            # uniform choices (drawn as in the space without width 0: the same networks as before it was added)
            enc = tuple(a + int(rng.integers(0, k - a)) for a, k in zip(low, space.num_choices))
            if lo <= table.predict(enc) < hi and (not drop or any(enc[p] == 0 for p in space.branches)):
                picked.append(enc)
                break
        else:  # the bin is hard to hit at random: the uniform width nearest its middle (its last block dropped)
            ratios = np.linspace(0.1, 1.0, 91)
            last = max(space.branches) if drop else None
            encs = [tuple(0 if i == last else v for i, v in enumerate(space.uniform(r))) for r in ratios]
            picked.append(min(encs, key=lambda e: abs(table.predict(e) - (lo + hi) / 2)))
    return picked


def median_ms(onnx_path: Path, shape, runs: int) -> float:
    """The median a user measures: a plain onnxruntime session, 1 thread, 20 warm-up runs."""
    return common.user_times(onnx_path, np.zeros(shape, np.float32), runs)[1]


# ---- the benchmark ---------------------------------------------------------------------------------
@dataclass
class Prepared:
    """A model's set-up in its work folder: space, loaders, latency table, meter, trained dense network, budgets."""
    space: object
    loaders: object
    table: object
    measure: object  # raw: each network's latency as measured now
    within: object  # anchored: each network's latency beside a reference of its size, at the level of when the
    # budgets were set
    dense_path: Path
    budgets: list[tuple[float, float]]
    dense_ms: float  # the dense network's latency when the budgets were set
    references: list  # (network, its ms when the budgets were set): what ``within`` holds networks beside


def prepare(name: str, s: Settings, work: Path, workers: int, say) -> Prepared:
    """Profile the latency table, train the dense network (seed 0) and measure it, once per work folder; the
    budgets are ``s.fractions`` of its measured latency (of the predicted range with ``budget_of="range"``): the
    least of :data:`REPEATS` interleaved runs beside the reference networks (:func:`reference_encodings`), since what
    disturbs this machine slows the dense network and never speeds it up; each reference's is the median of them."""
    work.mkdir(parents=True, exist_ok=True)
    space, loaders = setup(name, s)
    space = blocks_space(space, s)  # the default search's: its table serves the space without dropped blocks too
    shape = (1, *loaders.input_shape)
    say(f"== {name} on {s.data}: latency table, dense network, budgets")
    table_path = work / "latency_table.csv"
    if table_path.exists():
        table = hp.LatencyTable.load(table_path, space)
    else:
        table = hp.profile(space, passes=s.passes, calibrate=s.calibrate, runs_per_pass=s.runs_per_pass, out=table_path,
                           cache_dir=work.parent / "kernel_store", quiet=True,
                           profiler=get_profiler("onnxruntime", "cpu", threads=1, repeats=s.profile_repeats,
                                                 max_wait_s=s.max_wait_s))

    measure = common.latency_meter(table, shape, s.passes, s.runs_per_pass, s.max_wait_s)
    dense_dir = work / "dense"
    run_pool([{"kind": "dense", "model": name, "seed": 0, "settings": asdict(s), "label": f"{name} dense",
               "threads": workers, "out": str(dense_dir / "result.json")}], 1, say)
    lat_path = work / "dense_latency.json"
    saved = json.loads(lat_path.read_text()) if lat_path.exists() else {}
    timed = with_references(saved, reference_encodings(space, table, s.fractions),
                            lambda encs: measure([space.materialize(e) for e in encs]), space.full())
    if timed != saved:
        saved = timed
        write_json(lat_path, saved)
    dense_ms = saved["measured_ms"]
    references = [(space.materialize(tuple(r["encoding"])), r["measured_ms"]) for r in saved["references"]]
    # (the narrowest network every method reaches: uniform and L1 never drop a block)
    floor, top = table.predict(space.narrowest(keep_blocks=True)), table.predict(space.full())
    if s.budget_of == "range":  # the way from the narrowest to the dense network as the table puts them, in the
        # dense network's measured ms: under it however far the table's level is from this machine's timing (a quick
        # run on a loaded machine set a budget over the dense network's measured latency, and uniform chose it)
        budgets = [(f, round(dense_ms * (floor + f * (top - floor)) / top, 4)) for f in s.fractions]
    else:
        budgets = [(f, round(f * dense_ms, 4)) for f in s.fractions if f * dense_ms > floor]
    if not budgets:
        raise SystemExit(f"no budget of {s.fractions} x {dense_ms:.4f} ms is above the narrowest network's "
                         f"{floor:.4f} ms on this machine")
    say(f"  dense {dense_ms:.4f} ms measured; budgets " + ", ".join(f"{f:.0%}: {b:.4f} ms" for f, b in budgets)
        + "; held beside uniform networks of " + ", ".join(f"{r['measured_ms']:.4f} ms" for r in saved["references"]))
    return Prepared(space, loaders, table, measure, anchored(measure, references), dense_dir / "model.pt", budgets,
                    dense_ms, references)


def with_references(saved: dict, refs, measure, full) -> dict:
    """``dense_latency.json``'s content (``saved``) with every encoding of ``refs`` among its references, each with
    its ms at the level of when the budgets were set: the dense network (``full``) and the references timed in
    :data:`REPEATS` interleaved runs of ``measure(encodings) -> ms`` (dense: the least, references: the median).
    References it has keep their times, and those it lacks (a run with other fractions: ``within_budget.py`` at one
    budget, then both) are timed beside them and scaled to that level (:func:`held_ms`); re-timing them all would
    move the level the budgets were set at. A folder whose budgets were set before the references keeps its dense
    latency, and so its budgets. Unchanged (no timing) when it has every one."""
    have = {tuple(r["encoding"]): r["measured_ms"] for r in saved.get("references") or []}
    new = list(dict.fromkeys(tuple(map(int, e)) for e in refs if tuple(map(int, e)) not in have))
    if not new and "references" in saved:
        return saved
    kept = list(have)
    runs = np.asarray([measure([tuple(full), *kept, *new]) for _ in range(REPEATS)])
    med = np.median(runs[:, 1:], axis=0)
    now, then = med[:len(kept)], [have[e] for e in kept]
    times = {**have, **{e: float(held_ms(ms, now, then) if kept else ms) for e, ms in zip(new, med[len(kept):])}}
    return {"measured_ms": saved.get("measured_ms", float(runs[:, 0].min())),
            "references": [{"encoding": list(e), "measured_ms": float(ms)} for e, ms in times.items()]}


def reference_encodings(space, table, fractions) -> list[tuple[int, ...]]:
    """One uniform-width network per fraction (of the 91 widths 10-100%, every block kept), the one the table puts
    nearest that fraction of the dense network: the networks every other is held to its budget beside
    (:func:`anchored`)."""
    top = table.predict(space.full())
    widths = [tuple(space.uniform(r)) for r in np.linspace(0.1, 1.0, 91)]
    return [min(widths, key=lambda e: abs(table.predict(e) - f * top)) for f in fractions]


def anchored(measure, references: list[tuple[object, float]]):
    """``measure`` with ``references`` (``(network, its ms when the budgets were set)``: uniform networks near each
    budget, :func:`reference_encodings`) timed in the same interleaved run, each network's result scaled by the
    reference nearest its own time: by that reference's ms then over its time now. Held against a budget, a network
    meets it when its time beside a network of its own size does, at the level of when the budgets were set. This
    shared machine's speed drifts by 10-20% over hours (the dense resnet20 measured 0.2874 ms when its budgets were
    set and 0.3077 ms two hours later), so an absolute budget in ms, checked at another time, passes or fails
    networks by when they were measured; and what disturbs it does not slow every network alike: twelve interleaved
    runs in four minutes read the dense mobilenet_v2_cifar at 1.64-1.93 ms while networks of 30% of it read
    0.502-0.516 ms, so held beside the dense network (as they were until 2026-12-04) they read up to 15% fast,
    and the searches chose networks over their budgets."""
    nets, then = [net for net, _ in references], [ms for _, ms in references]

    def within(items) -> list[float]:
        ms = measure([*nets, *items])
        return [held_ms(m, ms[:len(nets)], then) for m in ms[len(nets):]]

    return within


def held_ms(ms: float, now: list[float], then: list[float]) -> float:
    """A network's ``ms``, timed beside references that took ``now`` ms in the same run and ``then`` ms when the
    budgets were set, at the level of then: scaled by the reference nearest its own time (:func:`anchored`)."""
    k = int(np.argmin(np.abs(np.log(np.asarray(now) / ms))))
    return ms * then[k] / now[k]


def bench_model(name: str, s: Settings, work: Path, workers: int, say) -> tuple[list[dict], list[dict]]:
    s = s.for_model(name)
    sd = asdict(s)
    p = prepare(name, s, work, workers, say)
    space, loaders, table, measure, budgets = p.space, p.loaders, p.table, p.measure, p.budgets
    dense_path = p.dense_path
    shape = (1, *loaders.input_shape)
    dense_dir = dense_path.parent

    say(f"== {name}: choose a network per budget with every method")
    chosen, evaluators = choose(name, s, work, space, loaders, table, budgets, dense_path, p.within, say, workers)

    say(f"== {name}: fine-tune every chosen network ({s.finetune_epochs} epochs, seeds {s.seeds})")
    jobs = []
    for method in methods(s):
        for f, _ in budgets:
            c = chosen[method][str(f)]
            for seed in s.seeds:
                jobs.append({"kind": "finetune", "model": name, "seed": seed, "settings": sd, "dense": str(dense_path),
                             "encoding": c.get("encoding"), "ratio": c.get("ratio"),
                             "label": f"{name} {method} {f:.0%} seed {seed}",
                             "out": str(work / f"{method}_{f}_s{seed}" / "result.json")})
    tau_rows, tau_nets = [], []  # (folder, encoding): those that keep every block first
    if name in s.tau_models:
        top = table.predict(space.full())
        tau_nets = [(work / f"tau_{k}", e) for k, e in enumerate(tau_candidates(space, table, s.tau_candidates, top))]
        tau_nets += [(work / f"tau_blocks_{k}", e) for k, e in enumerate(tau_candidates(
            space, table, s.tau_block_candidates, top, seed=1, drop=True))]
        for folder, enc in tau_nets:
            jobs.append({"kind": "finetune", "model": name, "seed": 0, "settings": sd, "dense": str(dense_path),
                         "encoding": list(enc), "ratio": None, "label": f"{name} tau candidate {folder.name}",
                         "out": str(folder / "result.json")})
    run_finetunes(name, s, dense_path, jobs, workers, say)

    if tau_nets:
        say(f"== {name}: does each evaluator rank networks as fine-tuning does? ({len(tau_nets)} networks, "
            f"{s.tau_block_candidates} of them dropping blocks)")
        tuned = [json.loads((folder / "result.json").read_text())["test_acc"] for folder, _ in tau_nets]
        val = limited(loaders.val, s.val_batches)
        for ev_name, ev in evaluators.items():
            # an evaluator of the space without dropped blocks (the PruningNets) ranks the networks that keep them
            n = len(tau_nets) if ev.space.branches else s.tau_candidates
            fitness = [ev.score(recoded(e, space, ev.space), val, loaders.calib, s.calib_batches)
                       for _, e in tau_nets[:n]]
            tau_rows.append({"model": name, "evaluator": ev_name, "candidates": n,
                             "kendall_tau": round(kendall_tau(fitness, tuned[:n]), 4),
                             "spearman": round(spearman(fitness, tuned[:n]), 4),
                             "default": ev_name == DEFAULT_EVALUATOR})
            say(f"  {ev_name}: Kendall tau {tau_rows[-1]['kendall_tau']:.3f}, Spearman {tau_rows[-1]['spearman']:.3f}")

    say(f"== {name}: export, measure interleaved with the reference networks, and time each winner in a plain "
        f"session")
    nets = [("dense", None, None, 0, dense_dir)] + [(m, f, b, seed, work / f"{m}_{f}_s{seed}") for m in methods(s)
                                                    for f, b in budgets for seed in s.seeds]
    check = [x for _, (x, _) in zip(range(2), loaders.val)]
    example = torch.zeros(shape)
    files = []
    for method, f, b, seed, folder in nets:
        path = folder / "model.onnx"
        if not path.exists():
            hp.export_onnx(load_net(folder, method, chosen, f, dense_path, s, example), path, example,
                           check_inputs=check)
        files.append(path)
    measured_path = work / "measured.json"
    # keyed by file and content: a network chosen anew is fine-tuned and exported again into the same folder
    keys = [f"{p}:{hashlib.sha1(p.read_bytes()).hexdigest()[:16]}" for p in files]
    saved = json.loads(measured_path.read_text()) if measured_path.exists() else {}
    if ("references" not in saved or len(saved["references"]) != len(p.references)  # (a reference added since)
            or any(k not in saved["measured"] for k in keys)):  # all again, interleaved
        ms = measure([*(net for net, _ in p.references), *(f.read_bytes() for f in files)])
        medians = {k: median_ms(f, shape, s.median_runs) for k, f, n in zip(keys, files, nets) if n[3] == s.seeds[0]}
        write_json(measured_path, {"measured": dict(zip(keys, ms[len(p.references):])), "median": medians,
                                   "references": ms[:len(p.references)]})
    m = json.loads(measured_path.read_text())
    then = [ms for _, ms in p.references]
    rows = []
    for (method, f, b, seed, folder), key in zip(nets, keys):
        r = json.loads((folder / "result.json").read_text())
        enc = r.get("encoding")
        c = chosen[method][str(f)] if f is not None else {}
        ms = m["measured"][key]
        # each network is held to its budget as when it was chosen (:func:`anchored`): beside the reference nearest
        # it in this same interleaved run, at the level of when the budgets were set; the dense network's is the
        # latency the budgets are fractions of
        held = p.dense_ms if f is None else held_ms(ms, m["references"], then)
        rows.append({"model": name, "dataset": s.data, "method": method, "budget_fraction": f if f else "",
                     "budget_ms": b or "", "seed": seed, "test_acc": round(r["test_acc"], 4),
                     "val_acc": round(r["val_acc"], 4),
                     "predicted_ms": round(table.predict(enc), 4)
                     if enc is not None else "",
                     "measured_ms": round(ms, 4), "held_ms": round(held, 4),
                     "median_ms": round(m["median"].get(key, float("nan")), 4),
                     "within_budget": "" if b is None else held <= b, "flops": r["flops"], "params": r["params"],
                     "search_seconds": c.get("search_seconds", ""), "finetune_seconds": r["finetune_seconds"]})
    return rows, tau_rows


def load_net(folder: Path, method: str, chosen: dict, f, dense_path: Path, s: Settings, example):
    if method != "l1":
        return hp.load_pruned(folder / "model.pt")[0]
    from hwprune.files.checkpoint import load_checkpoint

    ck = load_checkpoint(folder / "model.pt", avl.TP_FORMAT)
    model = avl.l1_prune(hp.load_pruned(dense_path)[0], ck["ratio"], example, s)
    model.load_state_dict(ck["state_dict"])
    return model.eval()


def row_held_ms(row: dict) -> float:
    """A CSV row's latency at the level of when the budgets were set (``held_ms``); a row written before that column
    was, its measured latency (whose share of the dense row's is what such runs held to the budget)."""
    return float(row.get("held_ms") or row["measured_ms"])


def summary(rows: list[dict], tau: list[dict]) -> str:
    """Mean ± std over seeds per model, budget and method; the tau table; whether the goal is met."""
    lines = ["| model | budget | method | test top-1 (mean ± std) | measured ms | held / budget | within budget | "
             "held / dense | predicted / user median | search s |", "|---|---|---|---|---|---|---|---|---|---|"]
    means = {}
    # the budgets are fractions of the dense network's latency when they were set; the machine's speed drifts
    # between then and this run, so each network is held to them at the level of then (``held_ms``, beside a
    # reference of its size); a CSV from before references has each network's share of the dense one timed beside it
    dense_ms = {r["model"]: row_held_ms(r) for r in rows if r["method"] == "dense"}
    for key in dict.fromkeys((r["model"], r["budget_fraction"], r["method"]) for r in rows):
        g = [r for r in rows if (r["model"], r["budget_fraction"], r["method"]) == key]
        acc = np.array([float(r["test_acc"]) for r in g])
        means[key] = acc.mean()
        pm = [float(r["predicted_ms"]) / float(r["median_ms"]) for r in g
              if r["predicted_ms"] != "" and float(r["median_ms"]) == float(r["median_ms"])]
        ms = np.mean([float(r["measured_ms"]) for r in g])
        at_then = np.mean([row_held_ms(r) for r in g])
        dense = key[1] == ""
        budget = "dense" if dense else f"{float(key[1]):.0%} ({float(g[0]['budget_ms']):.4f} ms)"
        within = "" if dense else f"{sum(str(r['within_budget']) == 'True' for r in g)}/{len(g)}"
        # (budgets of --quick's "range" are not fractions of the dense network: this share is meaningless there)
        share = "" if dense or key[0] not in dense_ms else f"{at_then / (float(key[1]) * dense_ms[key[0]]):.1%}"
        of_dense = "" if dense or key[0] not in dense_ms else f"{at_then / dense_ms[key[0]]:.1%}"
        std = acc.std(ddof=1) if len(g) > 1 else 0
        lines.append(f"| {key[0]} | {budget} | {key[2]} | {acc.mean():.4f} ± {std:.4f} "
                     f"| {ms:.4f} | {share} | {within} | {of_dense} | {f'{np.mean(pm):.3f}' if pm else ''} | "
                     f"{g[0]['search_seconds']} |")
    lines += ["", "| model | evaluator | candidates | Kendall tau | Spearman |", "|---|---|---|---|---|"]
    lines += [f"| {t['model']} | {t['evaluator']}{' (default)' if str(t['default']) == 'True' else ''} | "
              f"{t['candidates']} | {float(t['kendall_tau']):.3f} | {float(t['spearman']):.3f} |" for t in tau]
    goals = []
    for (model, f, method), v in means.items():
        if method == "hwprune" and f != "" and float(f) in (0.3, 0.5):
            u, l1 = means.get((model, f, "uniform")), means.get((model, f, "l1"))
            goals.append(u is not None and l1 is not None and v >= u + 0.01 and v >= l1 + 0.005)
    taus = [float(t["kendall_tau"]) for t in tau if str(t["default"]) == "True"]
    met = bool(goals) and all(goals) and bool(taus) and min(taus) >= 0.6
    lines += ["", f"Goal (hwprune >= uniform + 1 point and >= L1 + 0.5 point at 30% and 50%, default evaluator's "
                  f"tau >= 0.6): {'met' if met else 'NOT met'}"]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    order = ("dense", *dict.fromkeys(r["method"] for r in rows if r["method"] != "dense"))  # one colour per method
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        for k, method in enumerate(order):
            g = [r for r in rows if r["model"] == model and r["method"] == method]
            if g:
                ax.scatter([row_held_ms(r) for r in g], [float(r["test_acc"]) for r in g], label=method, s=18,
                           color=f"C{k % 10}")
        for b in {r["budget_ms"] for r in rows if r["model"] == model and r["budget_ms"] != ""}:
            ax.axvline(float(b), color="0.8", lw=0.8, zorder=0)
        ax.set_title(f"{model}: test top-1 vs measured latency (every seed; grey: budgets)", fontsize=9)
        ax.set_xlabel("measured latency, onnxruntime CPU, 1 thread (ms;\nat the level of when the budgets were set)",
                      fontsize=9)
        ax.set_ylabel("test top-1")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    Path(tmp).replace(path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+")
    ap.add_argument("--fractions", nargs="+", type=float)
    ap.add_argument("--seeds", nargs="+", type=int)
    ap.add_argument("--data", help="dataset (default fashion-mnist; --quick: bundled)")
    ap.add_argument("--methods", nargs="+", metavar="METHOD",
                    help="run these methods alone (dense always; e.g. uniform l1 hwprune); default: every method")
    ap.add_argument("--no-tau", action="store_true", help="skip the ranking agreement (16 more fine-tunes)")
    ap.add_argument("--tau-models", nargs="+", metavar="MODEL",
                    help="models whose ranking agreement is measured (default: resnet20; mobilenet_v2_cifar's 24 "
                         "fine-tunes take ~20 min more)")
    ap.add_argument("--ablations", action="store_true",
                    help="also search with adaptive BN alone, a single-sample PruningNet and channels alone, rerank the "
                         "default search's fittest, and rank with two more PruningNets (resnet20: 3 searches, a "
                         "rerank, 3 PruningNets and 24 fine-tunes more)")
    ap.add_argument("--rerank-top", type=int, metavar="N",
                    help="run hwprune-rerank on every model: the default search's N fittest scored again")
    ap.add_argument("--rerank-steps", type=int, metavar="STEPS", help="tuning steps of each hwprune-rerank score")
    ap.add_argument("--val-batches", type=int, metavar="B",
                    help="validation batches of 256 each searched candidate is scored on, for every model "
                         "(default: 8, mobilenet_v2_cifar 4)")
    ap.add_argument("--local-share", type=float, metavar="S",
                    help="share of the searches' mutated genes moved one or two choices instead of redrawn, every "
                         "model (default: hwprune's, 0; the searches run again)")
    ap.add_argument("--ramp", action=argparse.BooleanOptionalAction,
                    help="grow the searches' bred share to the whole generation by the last one, every model "
                         "(default: hwprune's; a change searches again)")
    ap.add_argument("--pick-top", type=int, metavar="N",
                    help="hwprune picks among its search's N fittest and the budget's baseline networks scored again "
                         "with its evaluator on the validation batches after the search's, every model (default: 0, "
                         "the search's fittest; picked again from the kept searches)")
    ap.add_argument("--pick-draws", type=int, metavar="D",
                    help="with --pick-top, each score the mean of D draws of tuning batches (default 1)")
    ap.add_argument("--fill", action=argparse.BooleanOptionalAction,
                    help="widen every search's winner toward the budget (hwprune's default; --no-fill: the fittest "
                         "as scored)")
    ap.add_argument("--fill-rule", choices=("proportion", "saliency"),
                    help="which group the fill widens first (SearchConfig.fill_rule; default: proportion)")
    ap.add_argument("--finetune-epochs", type=int, metavar="E",
                    help="fine-tuning epochs of every pruned network, for every model (default: 3, "
                         "mobilenet_v2_cifar 2); another work folder (the fine-tunes are of other lengths)")
    ap.add_argument("--workers", type=int, default=2,
                    help="training processes, and processes scoring searched candidates (one torch thread each)")
    ap.add_argument("--quick", action="store_true", help="every step in seconds on the bundled data (for tests)")
    ap.add_argument("--summarize", action="store_true",
                    help="only rewrite the summary (.md) and plot (.png) from the CSVs in --out")
    ap.add_argument("--work", default=str(ROOT / "runs" / "fashion_mnist"), help="kept work (resumable)")
    ap.add_argument("--out", default=os.environ.get("HWPRUNE_BENCH_RESULTS", str(ROOT / "benchmarks" / "results")))
    args = ap.parse_args(argv)
    if args.summarize:
        out, stem = Path(args.out), "fashion_mnist_quick" if args.quick else "fashion_mnist"
        rows, tau = common.read_csv(out / f"{stem}.csv"), common.read_csv(out / f"{stem}_tau.csv")
        plot(rows, out / f"{stem}.png")
        write_atomic(out / f"{stem}.md", summary(rows, tau) + "\n")
        print(summary(rows, tau))
        return
    s = Settings(**QUICK) if args.quick else Settings()
    for k in ("models", "fractions", "seeds", "data"):
        if getattr(args, k) is not None:
            s = replace(s, **{k: getattr(args, k)})
    if args.ablations:
        s = replace(s, **ABLATIONS)
    s = overridden(s, **{k: getattr(args, k) for k in ("rerank_top", "rerank_steps", "val_batches",
                                                        "finetune_epochs", "local_share", "ramp",
                                                        "pick_top", "pick_draws", "fill", "fill_rule")})
    if args.methods:
        every = list(dict.fromkeys(m for name in s.models for m in methods(replace(s.for_model(name), only=None))))
        unknown = [m for m in args.methods if m not in every]
        if unknown:
            ap.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(every)}")
        s = replace(s, only=list(args.methods))
    if args.tau_models:
        s = replace(s, tau_models=list(args.tau_models))
    if args.no_tau:
        s = replace(s, tau_models=[])
    work = Path(args.work) / ("quick" if args.quick else "full")
    common.claim_work(work, claimed(s), unclaimed=METHOD_LISTS)  # (claimed before 2026-12-03)
    torch.set_num_threads(args.workers)  # the PruningNet training and the searches run here, alone on the CPU
    started = time.time()
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    stem = "fashion_mnist_quick" if args.quick else "fashion_mnist"
    # the other models' rows of an earlier run stay (a run of one model replaces only its own)
    rows, tau = ([r for r in common.read_csv(p) if r["model"] not in s.models] if p.exists() else []
                 for p in (Path(args.out) / f"{stem}.csv", Path(args.out) / f"{stem}_tau.csv"))
    parts = {m: v for m, v in part_seconds(Path(args.out) / f"{stem}.env.json").items()
             if m not in s.models and any(r["model"] == m for r in rows)}
    for name in s.models:  # the results so far are written after each model
        t0 = time.time()
        r, t = bench_model(name, s, work / name, args.workers, say)
        rows += r
        tau += t
        parts[name] = round(time.time() - t0)
        write_results(rows, tau, s, Path(args.out), stem, round(time.time() - started), parts)
    print(summary(rows, tau))
    print(f"wrote {stem}.csv, _tau.csv, .png, .md in {round(time.time() - started)} s (each model's part, earlier "
          f"runs' kept: " + ", ".join(f"{m} {v} s" for m, v in parts.items()) + ")")


def overridden(s: Settings, **values) -> Settings:
    """``s`` with each setting given (not None) set for every model, over the models' own settings too."""
    for k, v in values.items():
        if v is not None:
            s = replace(s, **{k: v}, per_model={m: {**own, k: v} for m, own in s.per_model.items()})
    return s


def follow_up(argv, doc: str, own=lambda ap: None):
    """The command line of a script that works in a finished work folder of this one (``taylor_batches.py``,
    ``l1_widths.py``): ``--model``, ``--seeds``, ``--workers``, ``--quick``, ``--work``, ``--out`` and what
    ``own(parser)`` adds. Returns (args, the settings, the model's work folder, a flushing print)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--model", default="resnet20")
    own(ap)
    ap.add_argument("--seeds", nargs="+", type=int, help="fine-tuning seeds (default: fashion_mnist.py's)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="seconds, on the bundled data, in a finished --quick folder")
    ap.add_argument("--work", default=str(ROOT / "runs" / "fashion_mnist"), help="fashion_mnist.py's kept work")
    ap.add_argument("--out", default=os.environ.get("HWPRUNE_BENCH_RESULTS", str(ROOT / "benchmarks" / "results")))
    args = ap.parse_args(argv)
    s = Settings(**QUICK) if args.quick else Settings()
    s = replace(s, seeds=args.seeds or s.seeds)
    torch.set_num_threads(args.workers)
    return args, s, Path(args.work) / ("quick" if args.quick else "full") / args.model, \
        (lambda msg: print(msg, flush=True))


def write_follow_up(rows: list[dict], args, stem: str, columns: list[str]) -> None:
    """``rows`` as ``--out/STEM.csv`` (``STEM_quick.csv`` with ``--quick``), under the environment record."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"{stem}{'_quick' if args.quick else ''}.csv", common.csv_text(rows, avl.environment(), columns))


def claimed(s: Settings) -> dict:
    """The settings a kept work folder must share with a rerun: all but the models (each has its folder), the
    fine-tuning seeds (each seed's fine-tunes have their folders and no shared step depends on them: a rerun with
    ``--seeds 0`` reports what is done, one with more seeds adds theirs) and the search settings, which each model's
    ``chosen.json`` keeps (:func:`reusable`: a change searches again; the pick from a search, :data:`PICK_SETTINGS`,
    likewise). Nor which methods run (``--methods``,
    ``--ablations``): each keeps its own networks and fine-tunes. Nor how many tau networks drop blocks (added
    2026-12-03; each has its folder, fine-tuned again where another network lands in it)."""
    keep = lambda d: {k: v for k, v in d.items() if k not in ("models", "only", "tau_models", "seeds",  # noqa: E731
                                                              "tau_block_candidates", *METHOD_LISTS,
                                                              *SEARCH_SETTINGS, *RERANK_SETTINGS, *PICK_SETTINGS)}
    return {**keep(asdict(s)), "per_model": {m: keep(o) for m, o in s.per_model.items()}}


def part_seconds(env_path: Path) -> dict:
    """Each model's seconds in the run that wrote ``env_path`` (``model_seconds``; a run of one model written before
    it was recorded: the run's ``seconds``), so that a run of one model beside the kept rows of another reports
    both parts' time."""
    if not env_path.exists():
        return {}
    env = json.loads(env_path.read_text())
    models = env.get("settings", {}).get("models", [])
    return env.get("model_seconds") or ({models[0]: env["seconds"]} if len(models) == 1 and "seconds" in env else {})


def write_results(rows: list[dict], tau: list[dict], s: Settings, out: Path, stem: str, seconds: int,
                  parts: dict | None = None) -> Path:
    """The CSVs, plot, summary and environment record; ``seconds`` is this run's, ``parts`` each model's
    (``model_seconds``: models whose rows an earlier run wrote keep that run's figure)."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**avl.environment(), "settings": asdict(s), "seconds": seconds, "model_seconds": parts or {}}
    head = {k: v for k, v in env.items() if k != "settings"}
    write_atomic(out / f"{stem}.csv", common.csv_text(rows, head, COLUMNS))
    write_atomic(out / f"{stem}_tau.csv", common.csv_text(tau, head, TAU_COLUMNS))
    plot(rows, out / f"{stem}.png")
    write_atomic(out / f"{stem}.md", summary(rows, tau) + "\n")
    write_json(out / f"{stem}.env.json", env)
    return out / stem


if __name__ == "__main__":
    main()
