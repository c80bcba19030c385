"""The pipeline's first stages over a run folder: profile a latency table, train the PruningNet, search.

Each stage is one function ``X_stage(run, ..., where=".", key="X")``: it writes its
files into ``run.path / where`` and records itself under ``key`` in the folder's
``run.json`` (:class:`~hwprune.runs.folder.RunFolder`): resolved settings, files,
timings. ``run=None`` records nothing (a table written straight into a folder of
tables, say). The CLI verbs, ``quickstart`` and the benchmarks all call these.
"""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from ..errors import HwpruneError
from ..files.atomic import check_writable, write_atomic
from ..training.distributed import init_distributed, is_main, resolve_device, world_info
from .folder import RunFolder
from .settings import DataSettings, DenseModel, PretrainJob, ProfileSettings, TrainJob, from_dict

__all__ = ["profile_stage", "pretrain_stage", "train_stage", "search_stage", "loaders_for", "checkpoint_data",
           "ordered_dense", "fidelity_paths"]

Log = Callable[[str], None] | None


def loaders_for(data: DataSettings, *, override: str | None = None, batch_size: int | None = None,
                workers: int = 0, rank: int = 0, world: int = 1):
    """Loaders over ``data`` (or the dataset ``override``), with its split, seed and training-image limit."""
    from ..data import load_dataset, make_loaders

    ds = load_dataset(override or data.data, image_size=data.image_size, seed=data.seed)
    if data.limit:
        ds = ds.limit_train(data.limit, seed=data.seed)
    return make_loaders(ds, batch_size or data.batch_size, seed=data.seed, workers=workers, rank=rank, world=world)


def dense_checkpoint(dense: DenseModel) -> dict:
    """The checkpoint ``hwprune pretrain`` wrote of a dense model (its ``meta`` says which data, split, seed and
    training-image limit it was trained on: a search that validated on other images than its validation split would
    score candidates on images it trained on); empty for the weights of a model trained elsewhere."""
    if dense.weights is None:
        return {}
    try:
        ck = torch.load(dense.weights, map_location="cpu", weights_only=True)
    except Exception:  # not a checkpoint hwprune can read: load_model says what is wrong with it
        return {}
    return ck if isinstance(ck, dict) and ck.get("format") == DENSE_FORMAT else {}


def checkpoint_data(ck: dict, path, override: str | None) -> DataSettings:
    """The data a checkpoint's network was trained on (stored in it), or ``override`` for a checkpoint without."""
    stored = (ck.get("meta") or {}).get("data")
    if stored:
        return from_dict(DataSettings, stored, str(path))
    if override is None:
        raise HwpruneError(f"{path} does not say which data it was trained on (written by an older hwprune or by "
                           f"hand); pass --data")
    return DataSettings(data=override)


def ordered_dense(dense: DenseModel, loaders):
    """The dense model (with its weights), its search space for the data's input, and its importance-ordered copy."""
    from ..core.importance import order_channels
    from ..core.space import SearchSpace
    from ..models import load_model

    if dense.weights is None:
        raise HwpruneError("the inherit evaluator needs the dense model's trained weights (--weights); an untrained "
                           "model has nothing to inherit")
    model = load_model(dense.model, weights=dense.weights, num_classes=loaders.num_classes,
                       in_channels=loaders.input_shape[0], width_mult=dense.width_mult).eval()
    space = SearchSpace.from_model(model, (1, *loaders.input_shape), round_to=dense.round_to,
                                   drop_blocks=dense.drop_blocks)
    return model, space, order_channels(space, model, dense.importance, data=loaders.calib)


def _record(run: RunFolder | None):
    return run if run is not None else _NoRun()


class _NoRun:
    """Stands in for a run folder when a stage records nothing."""

    def begin(self, *a, **k):
        pass

    def finish(self, *a, **k):
        pass


# ---- profile ------------------------------------------------------------------------------------
def fidelity_paths(out: str | Path) -> tuple[str, str]:
    """Where ``--validate`` writes a table's fidelity report and plot: beside the table."""
    stem = str(out)[:-4] if str(out).endswith(".csv") else str(out)
    return f"{stem}.fidelity.json", f"{stem}.fidelity.png"


def profile_stage(run: RunFolder | None, space, settings: ProfileSettings | None = None, *, out: str | Path,
                  cache_dir: str | Path | None = None, force: bool = False, recalibrate: str | None = None,
                  validate: int = 0, key: str = "profile", quiet: bool = False, model: str | None = None):
    """Measure (or reuse) the latency table of ``space`` at ``out``; returns (table, fidelity report or None).

    A finished table at ``out`` is reused (refused when it was measured with other
    settings) unless ``force``; ``recalibrate`` refits its calibration without
    measuring. ``validate=N`` measures N random networks against it and writes the
    report and plot beside ``out``.
    """
    from ..latency import LatencyTable, profile, validate_table
    from ..latency.calibration import recalibrate as refit

    s = settings or ProfileSettings()
    rec, out = _record(run), Path(out)
    check_writable(out, "latency table")
    rec.begin(key, "profile", {**asdict(s), "model": model or type(space.model).__name__,
                               "space": space.fingerprint, "out": str(out), "recalibrate": recalibrate})
    if out.exists() and not force:  # resume the finished job: refused if OUT is another table
        table = LatencyTable.load(out, space, expect={"backend": s.backend, "device": s.device, "threads": s.threads,
                                                      "batch": s.batch_size, "dtype": s.dtype, **s.options})
        if recalibrate:
            table = refit(table, recalibrate)  # (refused, OUT untouched, where it predicts <= 0 ms)
            table.save(out)
    else:
        table = profile(space, backend=s.backend, device=s.device, threads=s.threads, batch_size=s.batch_size,
                        dtype=s.dtype, out=out, cache_dir=cache_dir, statistic=s.statistic, repeats=s.repeats,
                        calibrate=s.calibrate, passes=s.passes, runs_per_pass=s.runs_per_pass, seed=s.seed,
                        options=s.options, quiet=quiet, calibration=recalibrate or s.calibration)
    files, report = {"table": out}, None
    if validate:
        report_path, plot_path = fidelity_paths(out)
        report = validate_table(table, space, n=validate, seed=s.seed + 1, passes=s.passes,
                                runs_per_pass=s.runs_per_pass, report=report_path, plot=plot_path, quiet=quiet)
        files.update(report=report_path, plot=plot_path)
    rec.finish(key, files, {"entries": len(table.entries), "overhead_ms": table.overhead_ms, "scale": table.scale,
                            "dense_predicted_ms": round(table.predict(space.full()), 5)})
    return table, report


def _training_setup(job):
    """A training job's device, (rank, world), resolved TrainConfig, data settings and loaders."""
    from ..training.config import TrainConfig

    device = resolve_device(job.device)
    rank, world = init_distributed(device)
    try:
        cfg = TrainConfig(**job.train)
    except TypeError as e:
        raise HwpruneError(f"bad training setting: {e}") from None
    data = job.data_settings(cfg.seed)
    return device, rank, world, cfg, data, loaders_for(data, workers=job.workers, rank=rank, world=world)


# ---- pretrain -----------------------------------------------------------------------------------
DENSE_FORMAT = "hwprune.dense/1"


def pretrain_stage(run: RunFolder, job: PretrainJob, *, where: str = ".", key: str = "pretrain",
                   resume: bool = False, progress: bool | None = None, log: Log = None) -> list[dict]:
    """Train the dense model first, into ``dense.pt`` (its state_dict under ``state_dict``: ``--weights`` reads it).

    Its validation and test accuracy, recorded in the manifest, are the reference a pruned
    network is compared with.
    """
    from ..files.checkpoint import load_checkpoint, save_checkpoint
    from ..models import load_model
    from ..training.loop import fit
    from ..training.metrics import accuracy

    folder = run.path / where
    check_writable(folder / "run.json", "run folder")
    ckpt = folder / "dense.pt"
    record = run.stage(key)
    if resume and record is not None:
        job = from_dict(PretrainJob, record["settings"]["job"], str(run.manifest_path))
    elif ckpt.exists() and not resume:
        raise HwpruneError(f"{folder} already holds a pretrained model; pass --resume to continue it or choose "
                           f"another --out")
    device, rank, world, cfg, data, loaders = _training_setup(job)
    torch.manual_seed(cfg.seed)
    model = load_model(job.model, num_classes=loaders.num_classes, in_channels=loaders.input_shape[0],
                       width_mult=job.width_mult).to(device)
    run.begin(key, "pretrain", {"job": asdict(job), "resolved_train": asdict(cfg), "world_size": world,
                                "input_shape": list(loaders.input_shape), "num_classes": loaders.num_classes})
    meta = {"data": asdict(data), "model": job.model}
    history = fit(model, loaders.train, cfg, forward=lambda m, x, step: m(x),
                  payload=lambda: {"state_dict": model.state_dict(), "meta": meta}, fmt=DENSE_FORMAT,
                  fingerprint=f"{job.model}:{list(loaders.input_shape)}:{loaders.num_classes}", checkpoint=ckpt,
                  evaluate=lambda: {"val_acc": accuracy(model, loaders.val)}, resume=resume, progress=progress,
                  log=log)
    summary = {"val_acc": accuracy(model, loaders.val),
               "test_acc": accuracy(model, loaders.test) if loaders.test is not None else None}
    if rank == 0:
        ck = load_checkpoint(ckpt, DENSE_FORMAT) if ckpt.exists() else {"format": DENSE_FORMAT, "meta": meta,
                                                                          "state_dict": model.state_dict()}
        save_checkpoint(ckpt, {**ck, **summary})
    run.finish(key, {"weights": ckpt, "history": folder / "history.csv"}, summary)
    return history


# ---- train --------------------------------------------------------------------------------------
def train_stage(run: RunFolder, job: TrainJob, *, where: str = ".", key: str = "train", resume: bool = False,
                progress: bool | None = None, log: Log = None) -> list[dict]:
    """Train a PruningNet for ``job`` into ``run.path / where``; returns the epoch history.

    With ``resume``, the settings come from the manifest (only ``epochs`` may be
    raised, to extend a run) and training continues from the last checkpoint.
    """
    from ..core.space import SearchSpace
    from ..models import load_model
    from ..supernet.pruningnet import PruningNet, default_rank
    from ..supernet.train import train_pruningnet

    folder = run.path / where
    check_writable(folder / "run.json", "run folder")
    record = run.stage(key)
    if resume and record is not None:
        epochs = job.train.get("epochs")
        job = from_dict(TrainJob, record["settings"]["job"], str(run.manifest_path))
        if epochs is not None:  # resuming may extend a run
            job.train["epochs"] = epochs
        if "sampling" not in record["settings"].get("resolved_train", {}):  # a run from before sandwich sampling
            job.train["sampling"] = "single"
    elif (folder / "pruningnet.pt").exists() and not resume:
        raise HwpruneError(f"{folder} already holds a PruningNet; pass --resume to continue it or choose another "
                           f"--out")
    device, rank, world, cfg, data, loaders = _training_setup(job)
    torch.manual_seed(cfg.seed)  # the model's initial weights are the generators' starting point
    model = load_model(job.model, weights=job.weights, num_classes=loaders.num_classes,
                       in_channels=loaders.input_shape[0], width_mult=job.width_mult)
    space = SearchSpace.from_model(model, (1, *loaders.input_shape), round_to=job.round_to)
    if job.weights:  # start from what the trained model knows, best channels first
        from ..core.importance import order_channels

        source = order_channels(space, model, job.importance, data=loaders.calib)
    else:
        source = model
    window = None
    if job.sample_table:  # random encodings from the latency range the search will explore
        from ..latency.table import LatencyTable
        from ..supernet.sampling import LatencyWindow

        window = LatencyWindow.from_fraction(LatencyTable.load(job.sample_table, space), space, job.sample_from)
        if rank == 0:
            say = log or (lambda m: print(m, file=sys.stderr, flush=True))
            say(f"sampling networks of {window.lo_ms:.4g}-{window.hi_ms:.4g} ms predicted latency "
                f"({job.sample_table})")
    gen_rank = default_rank(bool(job.weights)) if job.rank == "auto" else job.rank
    pnet = PruningNet(space, hidden=job.hidden, bn=job.bn, rank=gen_rank, source=source).to(device)
    run.begin(key, "train", {"job": asdict(job), "resolved_train": asdict(cfg), "world_size": world,
                             "num_classes": loaders.num_classes, "input_shape": list(loaders.input_shape),
                             "mean": loaders.mean, "std": loaders.std, "torch": torch.__version__})
    if rank == 0:
        write_atomic(folder / "space.json", space.to_json())
    history = train_pruningnet(pnet, loaders.train, config=cfg, val_loader=loaders.val, calib_loader=loaders.calib,
                               run_dir=folder, resume=resume, progress=progress, log=log,
                               meta={"data": asdict(data), "job": asdict(job)}, window=window)
    run.finish(key, {"checkpoint": folder / "pruningnet.pt", "history": folder / "history.csv",
                     "space": folder / "space.json"}, history[-1] if history else None)
    return history


# ---- search -------------------------------------------------------------------------------------
def search_stage(run: RunFolder, *, checkpoint: str | Path | None = None, dense: DenseModel | None = None,
                 table: str | Path | None = None, latency_ms: list[float] | None = None,
                 latency_fraction: list[float] | None = None, flops: float | None = None, params: float | None = None,
                 data: str | None = None, config=None, device: str = "auto", allow_mismatch: bool = False,
                 where: str = ".", key: str = "search", resume: bool = False, measure_top: int = 0, tune_steps: int | None = None,
                 rerank: tuple[int, ...] = (0, 0), log: Log = None):
    """Search under budgets; writes result.json, history.csv, pareto.png into the folder.

    Candidates are scored with a trained PruningNet (``checkpoint``) or, with ``dense``, with
    the importance-ordered weights of the trained dense model, sliced and tuned for
    ``tune_steps`` distillation steps (the inherit evaluator; default
    :data:`~hwprune.supernet.evaluate.TUNE_STEPS`; ``data`` then names the dataset, bundled by
    default; a dense model ``hwprune pretrain`` trained brings its split, seed and training-image limit, which the
    fine-tunes of the result then use too). ``latency_fraction``:
    budgets as fractions of the dense network's latency predicted by the table (0.5:
    half), for commands that work on any machine. ``measure_top``: time that many of the fittest
    candidates of each latency budget here, on the table's backend, and keep the fittest one
    measured within the budget (:func:`hwprune.search.measured.meet_measured`). ``rerank``: (top, steps[, draws]),
    with the inherit evaluator: score the ``top`` fittest of each budget again, tuned ``steps`` steps each (each score
    the mean of ``draws`` draws of tuning batches, default 1), and keep the best by that score
    (:func:`hwprune.search.rerank.rerank`; before ``measure_top``, which then steps down in its order).
    ``config.steer_after``: after that many generations, time the fittest here and ask the table for what it
    predicts for them at the budget as measured (:attr:`SearchConfig.steer_after`). A folder that holds a finished
    search is refused without ``resume`` (it would be overwritten).
    """
    from ..files.checkpoint import load_checkpoint
    from ..latency import LatencyTable
    from ..search import SearchConfig, save_result, search
    from ..supernet.evaluate import TUNE_STEPS, InheritEvaluator, PruningNetEvaluator
    from ..supernet.train import PNET_FORMAT, pruningnet_from_payload

    cfg = config or SearchConfig()
    folder = run.path / where
    check_writable(folder / "run.json", "run folder")
    if rerank[0] and dense is None:
        raise HwpruneError("rerank tunes inherited weights longer: it needs the inherit evaluator (dense=...)")
    if (checkpoint is None) == (dense is None):
        raise HwpruneError("score candidates with a PruningNet (--checkpoint) or with the dense model's inherited "
                           "weights (--evaluator inherit --model ... --weights ...), one of the two")
    if not resume and (run.done(key) or (folder / "result.json").exists()):
        raise HwpruneError(f"{folder} already holds a finished search; pass --resume to reuse it or choose another "
                           f"--out")
    dev = resolve_device(device)
    init_distributed(dev)
    if checkpoint is not None:
        ck = load_checkpoint(checkpoint, PNET_FORMAT)
        scorer = PruningNetEvaluator(pruningnet_from_payload(ck, path=checkpoint).to(dev))
        data_settings = checkpoint_data(ck, checkpoint, data)
        del ck
        loaders = loaders_for(data_settings, override=data)
    else:
        data_settings = checkpoint_data(dense_checkpoint(dense), dense.weights, data or "bundled")
        loaders = loaders_for(data_settings, override=data)
        _, space, ordered = ordered_dense(dense, loaders)
        scorer = InheritEvaluator(space, ordered.to(dev), tune_steps=TUNE_STEPS if tune_steps is None else tune_steps)
    lut = LatencyTable.load(table, space=scorer.space, allow_mismatch=allow_mismatch) if table else None
    if latency_fraction:
        if lut is None:
            raise HwpruneError("a latency budget needs a latency table: pass --table")
        full = lut.predict(scorer.space.full())
        latency_ms = list(latency_ms or []) + [round(f * full, 5) for f in latency_fraction]
    run.begin(key, "search", {"evaluator": scorer.name, "tune_steps": getattr(scorer, "tune_steps", None),
                              "checkpoint": str(checkpoint) if checkpoint else None,
                              "dense": asdict(dense) if dense else None, "table": str(table) if table else None,
                              "latency_ms": latency_ms, "latency_fraction": latency_fraction, "flops": flops,
                              "params": params, "data": asdict(data_settings), "data_override": data,
                              "search": asdict(cfg), "measure_top": measure_top, "rerank": list(rerank)})
    measure = None
    if cfg.steer_after and lut is not None and latency_ms:
        from ..search.measured import table_meter

        measure = table_meter(scorer.space, lut)
    result = search(scorer, loaders.val, loaders.calib, table=lut, latency_ms=latency_ms, flops=flops, params=params,
                    config=cfg, run_dir=folder, resume=resume, log=log, measure=measure)
    if rerank[0]:
        from ..search.rerank import fresh_batches
        from ..search.rerank import rerank as score_again

        # on validation batches the search did not pick its fittest on
        score_again(result, InheritEvaluator(scorer.space, scorer.model, tune_steps=rerank[1],
                                             tune_lr=scorer.tune_lr), loaders.val,
                    loaders.calib, top=rerank[0], calib_batches=cfg.calib_batches, **fresh_batches(cfg.val_batches),
                    draws=rerank[2] if len(rerank) > 2 else 1, workers=cfg.workers, log=log or (lambda m: None))
    if measure_top and lut is not None and latency_ms and is_main():
        from ..search.evaluator import CandidateEvaluator
        from ..search.measured import meet_measured

        # the uniform and magnitude networks held to the measured budget too (scored on the main process alone:
        # under torchrun the other ranks have gone on)
        held = CandidateEvaluator(scorer, lut, loaders.val, loaders.calib, cfg) if world_info()[1] == 1 else None
        meet_measured(result, scorer.space, lut, top=measure_top, log=log or (lambda m: None), baselines=held)
    if is_main():
        save_result(result, folder)
    files = {name: folder / f for name, f in (("result", "result.json"), ("history", "history.csv"),
                                              ("pareto", "pareto.png"), ("state", "search_state.json"))}
    run.finish(key, files, {
        "evaluated": result.stats["evaluated"], "candidates_per_s": result.stats["candidates_per_s"],
        "best": [{"budget": b["budget"], "fitness": b["fitness"], "latency_ms": b["latency_ms"],
                  "measured_ms": b.get("measured_ms")} for b in result.best]})
    return result
