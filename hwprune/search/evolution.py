"""Evolutionary search under latency / FLOPs / params budgets (MetaPruning, section 3.3).

Per budget: a population of feasible encodings (the first one holds the budget's uniform,
magnitude and saliency networks, :mod:`.baselines`, unless ``seed_baselines`` is off); each
generation keeps the top
``keep_top`` seen, takes the best ``parents``, and forms the next population from
``mutations`` (each gene mutated with ``mutation_prob``: ``local_share`` of them moved one or
two choices, the rest redrawn), ``crossovers`` (uniform
mask between two parents) and random feasible encodings (with ``ramp``, ever fewer: none in the
last generation). A candidate over any
budget, or under ``min_fraction`` of it (a network that leaves speed unused; where
that window cannot be filled, random fill takes the networks closest under the
budget), is rejected before it is evaluated (latency from the table, FLOPs and params
from the space, all vectorised); no encoding is evaluated twice, across budgets too.
Fitness is validation top-1 after BatchNorm recalibration, with the evaluator's
weights (PruningNet-generated or inherited). With ``steer_after`` and a ``measure``, a
latency budget's fittest are timed on the target after that many generations and the table
is asked from then on for what it predicts for them at the budget as measured (the table's
error differs across the space, and the search keeps what it under-predicts); the next
generation holds the baseline networks of that latency, as the first held those of the budget
asked at first. State is saved
after every generation; a resumed search continues with the same random stream and ends where
an uninterrupted one would. With ``fill``, each budget's winner is then widened toward the budget
(:mod:`.fill`), every step scored and kept in the history (``filled``: its steps), the widest the winner.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch.distributed as dist

from ..errors import HwpruneError, SpaceMismatchError
from ..files.atomic import write_json
from ..training.distributed import is_main, world_info
from .budgets import Budget, InfeasibleBudgetError, check_feasible
from .config import SearchConfig
from .evaluator import CandidateEvaluator, Enc, scoring_processes
from .baselines import baseline_encodings, magnitude_baseline, saliency_baseline, uniform_baseline
from .fill import check_fill_rule, fill_winners
from .measured import CANDIDATE_KEYS
from .result import SearchResult, describe, pareto_front

__all__ = ["search", "draw_encodings"]
STATE_FORMAT = "hwprune.search-state/1"
STEPS = np.array([-2, -1, 1, 2])  # how far a local mutation moves a gene, in choices


def draw_encodings(space, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random encodings: half uniform per gene, half scaled toward narrow widths so tight budgets fill."""
    choices = np.asarray(space.num_choices)
    u = rng.random((n, len(choices)))
    scale = np.where(np.arange(n)[:, None] % 2 == 0, 1.0, rng.random((n, 1)))  # (n, 1)
    return np.minimum((u * scale * choices).astype(np.int64), choices - 1)


def _near_chance(ev: CandidateEvaluator, fitness: list[float]) -> dict[int, int]:
    """{budget index: classes} for the budgets whose fittest candidate scores under twice chance: there the
    evaluator's ranking is mostly noise (measured: inherited resnet20 networks at 30% of the dense latency score
    0.20-0.22 on 10 classes before fine-tuning, and the inherit search there lost to random search)."""
    classes = len({int(v) for _, y in ev.val for v in y.reshape(-1)})
    if classes < 2:
        return {}
    return {i: classes for i, f in enumerate(fitness) if f < 2.0 / classes}


def _floor(ev: CandidateEvaluator, budget: Budget, fraction: float) -> tuple[int, float] | None:
    """The window's lower edge: ``fraction`` of the budget's primary limit (latency, else FLOPs, else params),
    never above what the widest network costs (a budget over the dense network's cost is met by it alone)."""
    if not fraction or not budget.limits():
        return None
    col, limit = budget.limits()[0]
    full = ev.costs(np.asarray([ev.space.full()]))[0, col]
    return col, fraction * min(limit, full)


class _Evolution:
    """One budget's search; its state is plain JSON so it can be saved and resumed."""

    def __init__(self, ev: CandidateEvaluator, budget: Budget, cfg: SearchConfig, index: int,
                 seeding: Callable[[Budget], Sequence[Enc]] = lambda budget: ()):
        self.ev, self.budget, self.cfg, self.index = ev, budget, cfg, index
        self.seeding = seeding  # a budget -> the networks a generation under it starts with (its baselines)
        self.seeds = list(seeding(budget))[: cfg.population]  # networks of the first generation (under the budget)
        self.floor = _floor(ev, budget, cfg.min_fraction)  # (cost column, least cost a candidate may have)
        self.rng = np.random.default_rng((cfg.seed, index))
        self.generation = 0
        self.seen: set[Enc] = set()
        self.top: list[tuple[float, Enc]] = []  # (fitness, enc), best first
        self.population: list[Enc] = []
        self.steered: dict | None = None  # how the budget the table is asked for was corrected (:meth:`steer`)

    def state(self) -> dict:
        return {"generation": self.generation, "rng": self.rng.bit_generator.state,
                "seen": [list(e) for e in self.seen], "top": [[f, list(e)] for f, e in self.top],
                "population": [list(e) for e in self.population], "steered": self.steered}

    def restore(self, s: dict) -> None:
        self.generation = s["generation"]
        self.rng.bit_generator.state = s["rng"]
        self.seen = {tuple(e) for e in s["seen"]}
        self.top = [(f, tuple(e)) for f, e in s["top"]]
        self.population = [tuple(e) for e in s["population"]]
        if s.get("steered"):
            self._ask(s["steered"])

    def _ask(self, steered: dict) -> None:
        """From now on ask the table for ``steered["asked_ms"]`` (the budget's other limits stay)."""
        self.steered = steered
        self.budget = replace(self.budget, latency_ms=steered["asked_ms"])
        self.floor = _floor(self.ev, self.budget, self.cfg.min_fraction)

    def steer(self, measure, target_ms: float, log) -> None:
        """Time the ``cfg.steer_top`` fittest so far (``measure``: encodings -> measured ms), ask the table from now
        on for ``target_ms`` times the median of their predicted over measured latency, drop what that makes
        infeasible from the fittest kept, and breed the next generation again under it, the baseline networks of
        that latency first (those of the latency asked before may be over it: on Fashion-MNIST, mobilenet_v2_cifar's
        saliency network at 50% of the dense latency was the fittest until a steer to 0.988 x left it out)."""
        picked = [e for _, e in self.top[: self.cfg.steer_top]]
        measured = np.asarray(measure(picked), dtype=float)
        if len(measured) != len(picked) or not np.all(np.isfinite(measured) & (measured > 0)):
            raise HwpruneError(f"measuring {len(picked)} candidates gave {measured.tolist()}: expected one positive "
                               f"latency (ms) each")
        predicted = self.ev.costs(np.asarray(picked))[:, 0]
        ratio = float(np.median(predicted / measured))
        before = self.budget.latency_ms
        # never under what the narrowest network costs (nothing would be feasible), nor, from under it, up to what the
        # dense network costs (a noisy timing must not let the unpruned network in)
        ends = self.ev.costs(np.asarray([self.ev.space.narrowest(), self.ev.space.full()]))[:, 0]
        asked = max(min(target_ms * ratio, max(before, 0.999 * ends[1])), ends[0])
        self._ask({"generation": self.generation, "ratio": round(ratio, 4), "measured": len(picked),
                   "asked_ms": round(asked, 6), "asked_before_ms": before,
                   "predicted_ms": [round(float(v), 5) for v in predicted],
                   "measured_ms": [round(float(v), 5) for v in measured]})
        keep = self.ev.feasible(np.asarray([e for _, e in self.top]), self.budget) if self.top else []
        dropped = len(self.top) - int(np.sum(keep))
        self.top = [t for t, ok in zip(self.top, keep) if ok]
        log(f"[{target_ms:g}ms] the table puts the {len(picked)} fittest at {ratio:.3f} x their measured latency "
            f"(median {np.median(measured):.4g} ms): asking it for {self.budget.latency_ms:.5g} ms from here on, "
            f"not {before:.5g} ({dropped} of the fittest kept are over that)")
        if self.generation < self.cfg.generations:
            self.population = self._breed(self.seeding(self.budget))

    def _novel(self, encs: np.ndarray, want: int, taken: set[Enc], window: bool = True) -> list[Enc]:
        if len(encs) == 0:
            return []
        ok = self.ev.feasible(encs, self.budget)
        if window and self.floor is not None:
            col, least = self.floor
            ok &= self.ev.costs(encs)[:, col] >= least
        out = []
        for e, good in zip(map(tuple, encs.tolist()), ok):
            if good and e not in self.seen and e not in taken:
                out.append(e)
                taken.add(e)
                if len(out) == want:
                    break
        return out

    def _random(self, want: int, taken: set[Enc]) -> list[Enc]:
        """Random feasible encodings, from the budget's window first; where the window (with the other budgets)
        is too narrow to fill, from anywhere under the budget."""
        out: list[Enc] = []
        draws, limit = 0, self.cfg.max_draws // (2 if self.floor is not None else 1)
        while len(out) < want and draws < limit:
            n = max(256, 4 * want)
            out += self._novel(draw_encodings(self.ev.space, self.rng, n), want - len(out), taken)
            draws += n
        if len(out) < want and self.floor is not None:  # of what is under the budget, the closest to it
            encs = draw_encodings(self.ev.space, self.rng, min(limit, 50_000))
            encs = encs[np.argsort(-self.ev.costs(encs)[:, self.floor[0]], kind="stable")]
            out += self._novel(encs, want - len(out), taken, window=False)
        return out

    def _mutate(self, parents: list[Enc], want: int, taken: set[Enc]) -> list[Enc]:
        choices = np.asarray(self.ev.space.num_choices)
        out: list[Enc] = []
        for _ in range(10):
            if len(out) >= want or not parents:
                break
            base = np.asarray(parents)[self.rng.integers(len(parents), size=4 * want)]  # (n, G)
            redraw = self.rng.random(base.shape) < self.cfg.mutation_prob
            fresh = (self.rng.random(base.shape) * choices).astype(np.int64)
            if self.cfg.local_share:  # (no draws otherwise: at 0 the random stream is MetaPruning's search's)
                near = np.clip(base + self.rng.choice(STEPS, size=base.shape), 0, choices - 1)
                fresh = np.where(self.rng.random(base.shape) < self.cfg.local_share, near, fresh)
            out += self._novel(np.where(redraw, fresh, base), want - len(out), taken)
        return out

    def _crossover(self, parents: list[Enc], want: int, taken: set[Enc]) -> list[Enc]:
        out: list[Enc] = []
        if len(parents) < 2:
            return out
        p = np.asarray(parents)
        for _ in range(10):
            if len(out) >= want:
                break
            a = p[self.rng.integers(len(p), size=4 * want)]
            b = p[self.rng.integers(len(p), size=4 * want)]
            mask = self.rng.random(a.shape) < 0.5
            out += self._novel(np.where(mask, a, b), want - len(out), taken)
        return out

    def step(self) -> list[tuple[Enc, float]]:
        """Evaluate one generation and breed the next; returns the evaluated (enc, fitness)."""
        cfg = self.cfg
        if self.generation == 0 and not self.population:
            self.population = list(self.seeds) + self._random(cfg.population - len(self.seeds), set(self.seeds))
            if not self.population:
                raise InfeasibleBudgetError(f"no random encoding met the budget {self.budget.label()} in "
                                            f"{cfg.max_draws} draws; raise the budget")
        fits = self.ev.fitness(self.population)
        self.seen.update(self.population)
        merged = {e: f for f, e in self.top}
        merged.update(zip(self.population, fits))
        self.top = sorted(((f, e) for e, f in merged.items()), key=lambda t: (-t[0], t[1]))[: cfg.keep_top]
        evaluated = list(zip(self.population, fits))
        self.generation += 1
        if self.generation < cfg.generations:
            self.population = self._breed()
        return evaluated

    def bred(self) -> tuple[int, int]:
        """(mutations, crossovers) of the generation bred next: the config's, or with ``ramp`` that share grown
        linearly to the whole population from the second generation (``mutations + crossovers``) to the last."""
        cfg = self.cfg
        m, c = cfg.mutations, cfg.crossovers
        free = cfg.population - m - c
        if not cfg.ramp or cfg.generations < 3 or free <= 0 or m + c == 0:
            return m, c
        # self.generation generations are evaluated: the next is the second at 1, the last at generations - 1
        extra = round(free * min(1.0, max(0.0, (self.generation - 1) / (cfg.generations - 2))))
        more = round(extra * m / (m + c))
        return m + more, c + extra - more

    def _breed(self, first: Sequence[Enc] = ()) -> list[Enc]:
        """The next generation: ``first`` (those not evaluated yet), mutations and crossovers of the fittest kept,
        then random feasible encodings."""
        cfg = self.cfg
        parents = [e for _, e in self.top[: cfg.parents]]
        nxt = [e for e in dict.fromkeys(map(tuple, first)) if e not in self.seen][: cfg.population]
        taken: set[Enc] = set(nxt)
        mutations, crossovers = self.bred()
        nxt += self._mutate(parents, mutations, taken)
        nxt += self._crossover(parents, crossovers, taken)
        nxt += self._random(cfg.population - len(nxt), taken)
        return nxt[: cfg.population]


def _on_main(measure):
    """``measure`` run by the main process alone and its answer shared, so that every rank of a distributed search
    steers alike (timing on every rank at once would also measure the others' load)."""
    def shared(encs):
        rank, world = world_info()
        out = [list(measure(encs)) if rank == 0 else None]
        if world > 1:
            dist.broadcast_object_list(out, src=0)
        return out[0]
    return shared


def search(evaluator, val_loader, calib_loader, table=None, latency_ms: float | Sequence[float] | None = None,
           flops: float | None = None, params: float | None = None, config: SearchConfig | None = None,
           run_dir: str | Path | None = None, resume: bool = False,
           log: Callable[[str], None] | None = None, measure: Callable[[list[Enc]], Sequence[float]] | None = None,
           measured_ms: float | Sequence[float] | None = None) -> SearchResult:
    """Find the most accurate encoding under each budget (see the module docstring).

    ``evaluator`` scores candidates: a trained :class:`~hwprune.PruningNet` (MetaPruning), or
    :class:`~hwprune.supernet.evaluate.InheritEvaluator` over the importance-ordered dense model.

    ``latency_ms`` may be a list: one best candidate per latency budget, each also
    under the ``flops``/``params`` limits. With ``run_dir``, the state is saved after
    every generation (``search_state.json``) and ``resume=True`` continues it.

    ``measure`` (encodings -> their latency in ms as measured on the target, the table's statistic) lets the search
    steer by measurement (``config.steer_after``): after that many generations of each latency budget it times the
    ``config.steer_top`` fittest and asks the table from then on for the latency it predicts for them at the budget as
    measured, ``measured_ms`` (one per latency budget; default ``latency_ms``, which is then only where the search
    starts). Each best entry says how (``steered``: the ratio, the latency asked for, before and after).
    """
    cfg = config or SearchConfig()
    log = log or (lambda s: None)
    ev = CandidateEvaluator(evaluator, table, val_loader, calib_loader, cfg)
    space = ev.space
    if cfg.val_batches:  # a limited validation: say what it covers, since every fitness rests on it
        labels = [int(v) for _, y in ev.val for v in y.reshape(-1)]
        total = len(getattr(val_loader, "dataset", [])) or "?"
        log(f"fitness on {len(labels)} of {total} validation images (--val-batches {cfg.val_batches}), "
            f"{len(set(labels))} classes")
    processes = scoring_processes(cfg.workers, ev.val, ev.calib, space=ev.space)
    if processes > 1 and world_info()[1] == 1:
        log(f"candidates scored in {processes} processes of one thread each ("
            + (f"--workers {cfg.workers})" if cfg.workers else "one per core; --workers 1 scores them here)"))
    lats = [latency_ms] if isinstance(latency_ms, (int, float)) else list(latency_ms or [])
    if lats and table is None:
        raise HwpruneError("a latency budget needs a latency table (table=...)")
    if table is not None:
        table.check(space, check_device=False)  # refuse a table of another space, whatever the machine
        ev.table = table = table.for_space(space)  # (made with or without dropped blocks: this space's choices)
    budgets = [Budget(l, flops, params) for l in lats] or [Budget(None, flops, params)]
    for b in budgets:
        check_feasible(ev, b)
    targets = lats if measured_ms is None else \
        [measured_ms] if isinstance(measured_ms, (int, float)) else list(measured_ms)
    if len(targets) != len(lats):
        raise HwpruneError(f"measured_ms has {len(targets)} budgets for {len(lats)} latency budgets: give one each")
    steering = bool(cfg.steer_after and lats)
    if steering and measure is None:
        raise HwpruneError("steer_after times candidates on the target: pass measure=... (or set steer_after=0)")
    if steering and cfg.steer_after >= cfg.generations:
        raise HwpruneError(f"steer_after={cfg.steer_after} leaves no generation to steer (generations="
                           f"{cfg.generations}): steer after fewer")
    state_path = Path(run_dir) / "search_state.json" if run_dir else None
    importance, saliency = getattr(ev.scorer, "importance", None), getattr(ev.scorer, "saliency", None)
    if cfg.fill:
        check_fill_rule(cfg.fill_rule, saliency)  # (said before the search, not after it)
    seeding = (lambda b: baseline_encodings(ev, b, importance, saliency)) if cfg.seed_baselines else (lambda b: ())
    evolutions = [_Evolution(ev, b, cfg, i, seeding) for i, b in enumerate(budgets)]
    history: list[dict] = []
    choices = [list(g.choices) for g in space.groups]
    if resume and state_path is not None and state_path.exists():
        s = json.loads(state_path.read_text())
        if s.get("format") != STATE_FORMAT or s["fingerprint"] != space.fingerprint or \
                s.get("choices", choices) != choices:  # (the same model with or without dropped blocks: other codes)
            raise SpaceMismatchError(f"{state_path} belongs to a search of another space; use a new run folder")
        # (settings added since the state was saved are compared at their defaults)
        # (how many score: any; the fill, and how it fills, follow the last generation)
        alike = lambda c: {k: v for k, v in c.items() if k not in ("workers", "fill", "fill_rule")}  # noqa: E731
        if s["budgets"] != [asdict(b) for b in budgets] or \
                alike({**asdict(SearchConfig()), **s["config"]}) != alike(asdict(cfg)):
            raise HwpruneError(f"{state_path} was saved with other budgets or settings; resume with the same ones")
        for evo, es in zip(evolutions, s["evolutions"]):
            evo.restore(es)
        ev.cache = {tuple(json.loads(k)): v for k, v in s["cache"].items()}
        history = s["history"]
        log(f"resuming search: generations done {[e.generation for e in evolutions]}")

    def save():
        if state_path is not None and is_main():
            write_json(state_path, {"format": STATE_FORMAT, "fingerprint": space.fingerprint, "choices": choices,
                                    "budgets": [asdict(b) for b in budgets], "config": asdict(cfg),
                                    "evolutions": [e.state() for e in evolutions],
                                    "cache": {json.dumps(list(k)): v for k, v in ev.cache.items()},
                                    "history": history})

    started = time.perf_counter()
    for evo in evolutions:
        while evo.generation < cfg.generations:
            evaluated = evo.step()
            g = evo.generation
            for e, f in evaluated:
                history.append({"budget": evo.index, "generation": g, **describe(ev, e, f)})
            fittest = evo.top[0][0]  # (before a steer, which may leave none of the fittest kept)
            if steering and g == cfg.steer_after and evo.steered is None:
                evo.steer(_on_main(measure), targets[evo.index], log)
            save()
            log(f"[{evo.budget.label()}] generation {g}/{cfg.generations}: best {fittest:.4f}, "
                f"{ev.evaluated} evaluated, {ev.evaluated / max(ev.eval_seconds, 1e-9):.2f} candidates/s")
    best, weak = [], _near_chance(ev, [evo.top[0][0] for evo in evolutions])
    for i in weak:
        f, classes = evolutions[i].top[0][0], weak[i]
        log(f"[{evolutions[i].budget.label()}] warning: the fittest candidate scores {f:.3f} top-1 over {classes} "
            f"classes (chance {1 / classes:.3f}): at this budget the evaluator barely tells candidates apart, so the "
            f"search is close to random; tune each candidate longer (--tune-steps, with --evaluator inherit) or score "
            f"with a PruningNet (hwprune train, then search --checkpoint; train the one you have longer)")
    filled = fill_winners(ev, evolutions, cfg.generations + 1, log) if cfg.fill else {}
    save()  # (the ladders' scores in the cache: a resumed search fills again without scoring)
    for evo in evolutions:
        f, e = evo.top[0]
        budget = budgets[evo.index]  # as given (a steered search asked the table for another latency)
        ladder = filled.get(evo.index, [])
        won = describe(ev, e, f) if not ladder else {**{k: ladder[-1][k] for k in CANDIDATE_KEYS}, "filled": {
            "steps": len(ladder), "from": describe(ev, e, f)}}
        best.append({"budget": asdict(budget), **won, "uniform": uniform_baseline(ev, budget),
                     "magnitude": magnitude_baseline(ev, budget, importance),
                     "saliency": saliency_baseline(ev, budget, saliency),
                     **({"steered": evo.steered} if evo.steered else {})})
    history = history + [h for i in sorted(filled) for h in filled[i]]
    xs = [h["latency_ms"] if h["latency_ms"] is not None else h["flops"] for h in history]
    front = pareto_front(xs, [h["fitness"] for h in history])
    stats = {"evaluated": ev.evaluated, "eval_seconds": round(ev.eval_seconds, 2),
             "candidates_per_s": round(ev.evaluated / max(ev.eval_seconds, 1e-9), 3),
             "wall_seconds": round(time.perf_counter() - started, 2), "config": asdict(cfg),
             "near_chance_budgets": sorted(weak)}
    return SearchResult(space.fingerprint, budgets, best, history, front, stats)


