"""Evolutionary search under latency / FLOPs / params budgets (MetaPruning, section 3.3).

Per budget: a population of feasible encodings; each generation keeps the top
``keep_top`` seen, takes the best ``parents``, and forms the next population from
``mutations`` (each gene redrawn with ``mutation_prob``), ``crossovers`` (uniform
mask between two parents) and random feasible encodings. A candidate over any
budget is rejected before it is evaluated (latency from the table, FLOPs and
params from the space, all vectorised); no encoding is evaluated twice, across
budgets too. Fitness is validation top-1 with PruningNet weights after BatchNorm
recalibration. State is saved after every generation; a resumed search continues
with the same random stream and ends where an uninterrupted one would.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch.distributed as dist

from .checkpoint import write_json
from .errors import HwpruneError, SpaceMismatchError
from .evaluate import evaluate_candidate
from .meta import PruningNet

__all__ = ["SearchConfig", "SearchResult", "Budget", "search", "InfeasibleBudgetError"]

Enc = tuple[int, ...]
STATE_FORMAT = "hwprune.search-state/1"


class InfeasibleBudgetError(HwpruneError):
    """A budget no encoding of the space can meet."""


@dataclass
class SearchConfig:
    population: int = 50
    keep_top: int = 50  # best candidates seen, kept across generations
    parents: int = 10  # top candidates that breed
    mutations: int = 25
    crossovers: int = 25
    mutation_prob: float = 0.1  # per gene
    generations: int = 20
    calib_batches: int = 10  # BatchNorm recalibration batches per candidate
    val_batches: int | None = None  # limit validation batches per candidate (None: all)
    seed: int = 0
    max_draws: int = 200_000  # random encodings tried when filling a population before giving up


@dataclass(frozen=True)
class Budget:
    latency_ms: float | None = None
    flops: float | None = None
    params: float | None = None

    def label(self) -> str:
        parts = [f"{self.latency_ms:g}ms" if self.latency_ms is not None else "",
                 f"{self.flops / 1e6:g}MFLOPs" if self.flops is not None else "",
                 f"{self.params / 1e6:g}Mparams" if self.params is not None else ""]
        return " ".join(p for p in parts if p) or "unconstrained"


@dataclass
class SearchResult:
    fingerprint: str
    budgets: list[Budget]
    best: list[dict]  # per budget: encoding, channels, latency_ms, flops, params, fitness, uniform baseline
    history: list[dict]  # every evaluated candidate
    pareto: list[int] = field(default_factory=list)  # indices into history: accuracy vs latency (or FLOPs) front
    stats: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": "hwprune.search-result/1", "fingerprint": self.fingerprint,
                "budgets": [asdict(b) for b in self.budgets], "best": self.best,
                "pareto": [self.history[i] for i in self.pareto], "stats": self.stats}


class _Evaluator:
    """Costs (vectorised) and fitness (cached, spread over ranks) of encodings."""

    def __init__(self, pnet: PruningNet, table, val_loader, calib_loader, cfg: SearchConfig):
        self.pnet, self.space, self.table, self.cfg = pnet, pnet.space, table, cfg
        self.val = _Limited(val_loader, cfg.val_batches) if cfg.val_batches else val_loader
        self.calib = calib_loader
        self.cache: dict[Enc, float] = {}
        self.evaluated = 0
        self.eval_seconds = 0.0

    def costs(self, encs: np.ndarray) -> np.ndarray:
        """(N, 3): predicted latency (ms, NaN without a table), FLOPs, params."""
        lat = self.table.predict_batch(encs) if self.table is not None else np.full(len(encs), np.nan)
        return np.stack([lat, self.space.flops_batch(encs), self.space.params_batch(encs)], 1)

    def feasible(self, encs: np.ndarray, budget: Budget) -> np.ndarray:
        c = self.costs(encs)
        ok = np.ones(len(encs), bool)
        for col, limit in enumerate((budget.latency_ms, budget.flops, budget.params)):
            if limit is not None:
                ok &= c[:, col] <= limit
        return ok

    def fitness(self, encs: list[Enc]) -> list[float]:
        todo = [e for e in dict.fromkeys(encs) if e not in self.cache]
        if todo:
            t = time.perf_counter()
            rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
            mine = {e: evaluate_candidate(self.pnet, e, self.val, self.calib, self.cfg.calib_batches)
                    for e in todo[rank::world]}
            if world > 1:
                parts: list = [None] * world
                dist.all_gather_object(parts, mine)
                for p in parts:
                    mine.update(p)
            self.cache.update(mine)
            self.evaluated += len(todo)
            self.eval_seconds += time.perf_counter() - t
        return [self.cache[e] for e in encs]


class _Limited:
    def __init__(self, loader, n):
        self.loader, self.n = loader, n

    def __iter__(self):
        for k, batch in enumerate(self.loader):
            if k >= self.n:
                return
            yield batch


def _draw(space, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random encodings: half uniform per gene, half scaled toward narrow widths so tight budgets fill."""
    choices = np.asarray(space.num_choices)
    u = rng.random((n, len(choices)))
    scale = np.where(np.arange(n)[:, None] % 2 == 0, 1.0, rng.random((n, 1)))  # (n, 1)
    return np.minimum((u * scale * choices).astype(np.int64), choices - 1)


def check_feasible(ev: _Evaluator, budget: Budget) -> None:
    """Refuse a budget below what the narrowest network of the space costs."""
    narrowest = np.zeros((1, len(ev.space.groups)), dtype=np.int64)
    c = ev.costs(narrowest)[0]
    for name, col, limit, unit in (("latency", 0, budget.latency_ms, "ms"), ("FLOPs", 1, budget.flops, ""),
                                   ("params", 2, budget.params, "")):
        if limit is not None and c[col] > limit:
            value = f"{c[col]:.4g} ms" if unit else f"{c[col] / 1e6:.4g}M"
            raise InfeasibleBudgetError(f"{name} budget {limit:g}{unit if unit else ''} is below the smallest "
                                        f"{name} this space reaches ({value}, every group at its narrowest); "
                                        f"raise the budget or widen the search space")


class _Evolution:
    """One budget's search; its state is plain JSON so it can be saved and resumed."""

    def __init__(self, ev: _Evaluator, budget: Budget, cfg: SearchConfig, index: int):
        self.ev, self.budget, self.cfg, self.index = ev, budget, cfg, index
        self.rng = np.random.default_rng((cfg.seed, index))
        self.generation = 0
        self.seen: set[Enc] = set()
        self.top: list[tuple[float, Enc]] = []  # (fitness, enc), best first
        self.population: list[Enc] = []

    def state(self) -> dict:
        return {"generation": self.generation, "rng": self.rng.bit_generator.state,
                "seen": [list(e) for e in self.seen], "top": [[f, list(e)] for f, e in self.top],
                "population": [list(e) for e in self.population]}

    def restore(self, s: dict) -> None:
        self.generation = s["generation"]
        self.rng.bit_generator.state = s["rng"]
        self.seen = {tuple(e) for e in s["seen"]}
        self.top = [(f, tuple(e)) for f, e in s["top"]]
        self.population = [tuple(e) for e in s["population"]]

    def _novel(self, encs: np.ndarray, want: int, taken: set[Enc]) -> list[Enc]:
        if len(encs) == 0:
            return []
        ok = self.ev.feasible(encs, self.budget)
        out = []
        for e, good in zip(map(tuple, encs.tolist()), ok):
            if good and e not in self.seen and e not in taken:
                out.append(e)
                taken.add(e)
                if len(out) == want:
                    break
        return out

    def _random(self, want: int, taken: set[Enc]) -> list[Enc]:
        out: list[Enc] = []
        draws = 0
        while len(out) < want and draws < self.cfg.max_draws:
            n = max(256, 4 * want)
            out += self._novel(_draw(self.ev.space, self.rng, n), want - len(out), taken)
            draws += n
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
            self.population = self._random(cfg.population, set())
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
            parents = [e for _, e in self.top[: cfg.parents]]
            taken: set[Enc] = set()
            nxt = self._mutate(parents, cfg.mutations, taken)
            nxt += self._crossover(parents, cfg.crossovers, taken)
            nxt += self._random(cfg.population - len(nxt), taken)
            self.population = nxt[: cfg.population]
        return evaluated


def _uniform_baseline(ev: _Evaluator, budget: Budget) -> dict | None:
    """The widest uniform width ratio that meets the budget, and its PruningNet fitness."""
    ratios = np.round(np.arange(1.0, 0.0, -0.01), 2)
    encs = np.asarray([ev.space.uniform(r) for r in ratios])
    ok = ev.feasible(encs, budget)
    if not ok.any():
        return None
    i = int(np.argmax(ok))
    enc = tuple(int(v) for v in encs[i])
    return {"ratio": float(ratios[i]), **_describe(ev, enc, ev.fitness([enc])[0])}


def _describe(ev: _Evaluator, enc: Enc, fitness: float) -> dict:
    lat, flops, params = ev.costs(np.asarray([enc]))[0]
    return {"encoding": list(enc), "channels": ev.space.channels(enc),
            "latency_ms": None if np.isnan(lat) else round(float(lat), 5),
            "flops": int(flops), "params": int(params), "fitness": round(float(fitness), 5)}


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of points not dominated by one with lower-or-equal x and higher-or-equal y."""
    order = sorted(range(len(xs)), key=lambda i: (xs[i], -ys[i]))
    front, best = [], -np.inf
    for i in order:
        if ys[i] > best:
            front.append(i)
            best = ys[i]
    return front


def search(pnet: PruningNet, val_loader, calib_loader, table=None, latency_ms: float | Sequence[float] | None = None,
           flops: float | None = None, params: float | None = None, config: SearchConfig | None = None,
           run_dir: str | Path | None = None, resume: bool = False,
           log: Callable[[str], None] | None = None) -> SearchResult:
    """Find the most accurate encoding under each budget (see the module docstring).

    ``latency_ms`` may be a list: one best candidate per latency budget, each also
    under the ``flops``/``params`` limits. With ``run_dir``, the state is saved after
    every generation (``search_state.json``) and ``resume=True`` continues it.
    """
    cfg = config or SearchConfig()
    log = log or (lambda s: None)
    space = pnet.space
    lats = [latency_ms] if isinstance(latency_ms, (int, float)) else list(latency_ms or [])
    if lats and table is None:
        raise HwpruneError("a latency budget needs a latency table (table=...)")
    if table is not None:
        table.check(space, check_device=False)  # refuse a table of another space, whatever the machine
    budgets = [Budget(l, flops, params) for l in lats] or [Budget(None, flops, params)]
    ev = _Evaluator(pnet, table, val_loader, calib_loader, cfg)
    for b in budgets:
        check_feasible(ev, b)
    state_path = Path(run_dir) / "search_state.json" if run_dir else None
    evolutions = [_Evolution(ev, b, cfg, i) for i, b in enumerate(budgets)]
    history: list[dict] = []
    if resume and state_path is not None and state_path.exists():
        s = json.loads(state_path.read_text())
        if s.get("format") != STATE_FORMAT or s["fingerprint"] != space.fingerprint:
            raise SpaceMismatchError(f"{state_path} belongs to a search of another space; use a new run folder")
        if s["budgets"] != [asdict(b) for b in budgets] or s["config"] != asdict(cfg):
            raise HwpruneError(f"{state_path} was saved with other budgets or settings; resume with the same ones")
        for evo, es in zip(evolutions, s["evolutions"]):
            evo.restore(es)
        ev.cache = {tuple(json.loads(k)): v for k, v in s["cache"].items()}
        history = s["history"]
        log(f"resuming search: generations done {[e.generation for e in evolutions]}")
    started = time.perf_counter()
    for evo in evolutions:
        while evo.generation < cfg.generations:
            evaluated = evo.step()
            g = evo.generation
            for e, f in evaluated:
                history.append({"budget": evo.index, "generation": g, **_describe(ev, e, f)})
            if state_path is not None and (not dist.is_initialized() or dist.get_rank() == 0):
                write_json(state_path, {"format": STATE_FORMAT, "fingerprint": space.fingerprint,
                                        "budgets": [asdict(b) for b in budgets], "config": asdict(cfg),
                                        "evolutions": [e.state() for e in evolutions],
                                        "cache": {json.dumps(list(k)): v for k, v in ev.cache.items()},
                                        "history": history})
            best = evo.top[0]
            log(f"[{evo.budget.label()}] generation {g}/{cfg.generations}: best {best[0]:.4f}, "
                f"{ev.evaluated} evaluated, {ev.evaluated / max(ev.eval_seconds, 1e-9):.2f} candidates/s")
    best = []
    for evo in evolutions:
        f, e = evo.top[0]
        best.append({"budget": asdict(evo.budget), **_describe(ev, e, f), "uniform": _uniform_baseline(ev, evo.budget)})
    xs = [h["latency_ms"] if h["latency_ms"] is not None else h["flops"] for h in history]
    front = pareto_front(xs, [h["fitness"] for h in history])
    stats = {"evaluated": ev.evaluated, "eval_seconds": round(ev.eval_seconds, 2),
             "candidates_per_s": round(ev.evaluated / max(ev.eval_seconds, 1e-9), 3),
             "wall_seconds": round(time.perf_counter() - started, 2), "config": asdict(cfg)}
    return SearchResult(space.fingerprint, budgets, best, history, front, stats)


def save_result(result: SearchResult, run_dir: str | Path, plot: bool = True) -> dict[str, Path]:
    """Write ``result.json``, ``history.csv`` and (with matplotlib) ``pareto.png`` into ``run_dir``."""
    import csv
    import io

    from .checkpoint import write_atomic

    run_dir = Path(run_dir)
    paths = {"result": run_dir / "result.json", "history": run_dir / "history.csv"}
    write_json(paths["result"], result.to_json())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["budget", "generation", "encoding", "latency_ms", "flops", "params", "fitness"])
    for h in result.history:
        w.writerow([h["budget"], h["generation"], " ".join(map(str, h["encoding"])), h["latency_ms"], h["flops"],
                    h["params"], h["fitness"]])
    write_atomic(paths["history"], lambda f: f.write(buf.getvalue().encode()))
    if plot:
        from .plots import plot_pareto

        paths["pareto"] = plot_pareto(result, run_dir / "pareto.png")
    return paths
