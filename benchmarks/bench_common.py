"""What the accuracy benchmarks share: a pool of training jobs, latency measurement with a table's settings, CSVs.

Imported by ``accuracy_vs_latency.py`` and ``fashion_mnist.py`` (each puts this folder on
``sys.path``); job functions run in spawned worker processes of one torch thread each.
"""
from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Callable

__all__ = ["setup", "run_pool", "labelled", "latency_meter", "csv_text", "read_csv", "write_rows", "user_runs",
           "user_times", "p10_median", "claim_work"]


def setup(name: str, data: str, limit: int | None, batch_size: int, round_to: int | None, seed: int = 0,
          eval_limit: int | None = None):
    """A zoo model's space and the loaders over one fixed split (rebuilt identically in every worker: the data
    order follows ``seed``, the split and the model's initial weights do not). ``eval_limit``: the first that many
    validation and test images only (the quick runs')."""
    from dataclasses import replace

    import torch

    import hwprune as hp
    from hwprune.data import load_dataset, make_loaders

    ds = load_dataset(data, seed=0)
    if limit:
        ds = ds.limit_train(limit, seed=0)
    if eval_limit:
        ds = replace(ds, val_idx=ds.val_idx[:eval_limit], test_idx=ds.test_idx[:eval_limit])
    loaders = make_loaders(ds, batch_size, seed=seed)
    torch.manual_seed(0)
    model = hp.create_model(name, num_classes=ds.num_classes, in_channels=ds.input_shape[0])
    space = hp.SearchSpace.from_model(model.eval(), (1, *ds.input_shape), round_to=round_to)
    return space, loaders


def run_pool(jobs: list[dict], workers: int, say, fn: Callable[[dict], dict]) -> None:
    """Run ``fn`` on the jobs whose result file (``job["out"]``) is missing, costliest first, in ``workers``
    processes. A result of another network than the job's (an ``encoding`` chosen anew, as after a new latency
    table) is not reused: its folder is cleared and the job runs again."""
    for j in jobs:
        out = Path(j["out"])
        if out.exists() and not done(j):
            say(f"  {j.get('label', out.parent.name)}: the saved result is of another network; fine-tuning again")
            shutil.rmtree(out.parent)
    todo = [j for j in jobs if not Path(j["out"]).exists()]
    if not todo:
        return
    say(f"  {len(todo)} training jobs in {workers} process(es) ({len(jobs) - len(todo)} already done)")
    started = time.time()
    todo.sort(key=lambda j: -j.get("cost", 1.0))
    if workers <= 1:
        for k, j in enumerate(todo):
            say(f"  [{k + 1}/{len(todo)}] {labelled(j, fn)} ({time.time() - started:.0f}s)")
        return
    with mp.get_context("spawn").Pool(workers, maxtasksperchild=1) as pool:
        for k, r in enumerate(pool.imap_unordered(partial(labelled, fn=fn), todo)):
            say(f"  [{k + 1}/{len(todo)}] {r} ({time.time() - started:.0f}s)")


def done(job: dict) -> bool:
    """Whether the job's result file holds a result of its network (:func:`same_network`)."""
    out = Path(job["out"])
    return out.exists() and same_network(json.loads(out.read_text()), job)


def same_network(saved: dict, job: dict) -> bool:
    """Whether a saved result is of the job's network: the same ``encoding`` (a searched or uniform network) and
    the same ``ratio`` (Torch-Pruning's), where both name one."""
    enc, ratio = saved.get("encoding"), saved.get("ratio")
    if job.get("encoding") is not None and enc is not None and list(map(int, enc)) != list(map(int, job["encoding"])):
        return False
    return job.get("ratio") is None or ratio is None or abs(float(ratio) - float(job["ratio"])) < 1e-12


def labelled(job: dict, fn: Callable[[dict], dict]) -> str:
    """Run one job; its label, seconds and test accuracy, for the progress line."""
    r = fn(job)
    seconds = r.get("train_seconds", r.get("finetune_seconds", 0))
    acc = f", test top-1 {r['test_acc']:.4f}" if "test_acc" in r else ""
    return f"{job['label']}: {seconds:.0f}s{acc}"


def latency_meter(table, shape, passes: int, runs_per_pass: int, max_wait_s: float | None = None) \
        -> Callable[[list], list[float]]:
    """``measure(items)``: the table's statistic of each network (modules or ONNX bytes), measured interleaved
    with the table's backend settings (waiting at most ``max_wait_s`` for a quiet machine before each)."""
    import weakref

    from hwprune.latency.fidelity import profiler_for_table
    from hwprune.profilers.onnx_graphs import export_network
    from hwprune.profilers.onnxruntime import OnnxruntimeProfiler

    exported = weakref.WeakKeyDictionary()  # module -> its ONNX bytes: a network timed again is not exported again

    def measure(items) -> list[float]:
        prof = profiler_for_table(table)
        if max_wait_s is not None:
            prof.max_wait_s = max_wait_s
        if isinstance(prof, OnnxruntimeProfiler):
            batch = (prof.batch_size,) + tuple(shape[1:])
            for m in items:
                if not isinstance(m, (bytes, bytearray)) and m not in exported:
                    exported[m] = export_network(m, batch)
            items = [m if isinstance(m, (bytes, bytearray)) else exported[m] for m in items]
        try:
            return [m.value(table.statistic) for m in prof.measure_networks(items, shape, passes=passes,
                                                                            runs_per_pass=runs_per_pass)]
        finally:
            prof.close()

    return measure


def csv_text(rows: list[dict], env: dict, columns: list[str] | None = None) -> str:
    """Rows as CSV under a first line holding the environment as JSON (``# {...}``)."""
    buf = io.StringIO()
    buf.write(f"# {json.dumps(env)}\n")
    w = csv.DictWriter(buf, fieldnames=columns or list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def user_runs(models, x, runs: int, rounds: int = 1, warmup: int = 20) -> list:
    """Each ONNX model's (bytes or a path) run times in ms, timed as a user times it: a plain onnxruntime session,
    1 thread, ``warmup`` runs, then timed ``InferenceSession.run`` calls; ``runs`` of them per model, in ``rounds``
    rounds that visit every model in turn (each round warmed up again), so that a burst of load on this shared
    machine lands on a share of several models' runs instead of on all of one model's. ``x``: the input (zeros of
    each model's input shape when None)."""
    return time_sessions(user_sessions(models, x), runs, rounds, warmup)


def user_sessions(models, x) -> list:
    """(session, feed) of each ONNX model (bytes or a path) as a user makes one: onnxruntime, 1 thread, input ``x``
    (zeros of the model's input shape when None)."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sessions = []
    for m in models:
        sess = ort.InferenceSession(m if isinstance(m, (bytes, bytearray)) else str(m), opts,
                                    providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        feed = x if x is not None else np.zeros([d if isinstance(d, int) else 1 for d in inp.shape], np.float32)
        sessions.append((sess, {inp.name: feed}))
    return sessions


def time_sessions(sessions, runs: int, rounds: int = 1, warmup: int = 20) -> list:
    """The run times (ms) of each of :func:`user_sessions`' sessions, timed as :func:`user_runs` says."""
    import numpy as np

    times: list[list[float]] = [[] for _ in sessions]
    for r in range(rounds):
        for i, (sess, feed) in enumerate(sessions):
            for _ in range(warmup):
                sess.run(None, feed)
            for _ in range(runs // rounds + (r < runs % rounds)):
                t = time.perf_counter_ns()
                sess.run(None, feed)
                times[i].append((time.perf_counter_ns() - t) / 1e6)
    return [np.asarray(t) for t in times]


def p10_median(times) -> tuple[float, float]:
    """(p10, median) of one model's run times."""
    import numpy as np

    return float(np.percentile(times, 10)), float(np.median(times))


def user_times(onnx, x, runs: int, warmup: int = 20) -> tuple[float, float]:
    """(p10, median) in ms of an ONNX model (bytes or a path) on input ``x``: :func:`user_runs`, one model, one
    round of ``runs`` timed runs after ``warmup``."""
    return p10_median(user_runs([onnx], x, runs, 1, warmup)[0])


def write_rows(path: Path, rows: list[dict], head: str) -> None:
    """``rows`` as a CSV under a ``# ...`` header line (the machine and versions), and say so; makes the folder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with Path(path).open("w", newline="") as f:
        f.write(head)
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {path}")


def read_csv(path: Path) -> list[dict]:
    """The rows of a CSV :func:`csv_text` wrote (under its ``# {environment}`` line), values as strings."""
    with path.open() as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def claim_work(work: Path, settings: dict, unclaimed: tuple[str, ...] = ()) -> None:
    """Keep finished steps under ``work`` for a rerun to resume, refusing a folder that holds a run with other
    settings (its results would mix with these). ``unclaimed`` names settings an earlier version claimed the folder
    with and no longer does (at any depth of its dicts): a folder claimed with them is still this run's."""
    import sys

    from hwprune.files.atomic import write_json

    work.mkdir(parents=True, exist_ok=True)
    path = work / "settings.json"
    if path.exists() and _without(json.loads(path.read_text()), unclaimed) != settings:
        sys.exit(f"{work} holds a run with other settings; pass another --work or delete it")
    write_json(path, settings)


def _without(d: dict, keys: tuple[str, ...]) -> dict:
    """``d`` less ``keys``, at its top level and in the dicts it holds."""
    return {k: (_without(v, keys) if isinstance(v, dict) and k not in keys else v)
            for k, v in d.items() if k not in keys} if keys else d
