"""The pipeline's last stages over a run folder: retrain the chosen network, export it, verify its latency.

Same contract as :mod:`.stages`: ``X_stage(run, ..., where=".", key="X")`` writes
into ``run.path / where`` and records itself in ``run.json``; ``run=None`` records
nothing. A network's data settings travel inside its checkpoint, and a search's
PruningNet is found through the manifest of the run folder that holds its result.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import torch

from ..errors import HwpruneError, check_number
from ..files.atomic import check_writable, write_json
from ..training.distributed import init_distributed, resolve_device
from .folder import RunFolder
from .settings import DataSettings, DenseModel, from_dict
from .stages import Log, _record, checkpoint_data, loaders_for

__all__ = ["retrain_stage", "export_stage", "verify_stage", "chosen_encoding", "searched_checkpoint",
           "search_settings"]


def chosen_encoding(result: str | Path, budget: float | None = None, baseline: str | None = None
                    ) -> tuple[list[int], dict]:
    """The encoding a search chose for ``budget`` (ms; the only budget when None), or that budget's ``baseline``
    network (``"uniform"``, ``"magnitude"`` or ``"saliency"``, :mod:`hwprune.search.baselines`)."""
    from ..search.baselines import BASELINES
    from ..search.result import read_result

    if baseline is not None and baseline not in BASELINES:
        raise HwpruneError(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
    bests = read_result(result).get("best") or []
    if not bests:
        raise HwpruneError(f"{result} holds no search result")
    listed = ", ".join(str(b["budget"]["latency_ms"]) for b in bests)
    if budget is None:
        if len(bests) > 1:
            raise HwpruneError(f"{result} has {len(bests)} budgets ({listed} ms); pick one with --budget")
        best = bests[0]
    else:
        hits = [b for b in bests if b["budget"]["latency_ms"] is not None
                and abs(b["budget"]["latency_ms"] - budget) < 1e-9 * max(1.0, budget)]
        if not hits:
            raise HwpruneError(f"{result} has no budget {budget:g} ms; it has {listed}")
        best = hits[0]
    if baseline is not None:
        if not best.get(baseline):
            why = {"magnitude": " (magnitude pruning needs the dense model's weights: search with --evaluator inherit)",
                   "saliency": " (the saliency network needs the Taylor estimates of the dense model's weights: search "
                               "with --evaluator inherit and the default --importance taylor)"}.get(baseline, "")
            raise HwpruneError(f"no {baseline} network meets budget {best['budget']} in {result}{why}")
        return best[baseline]["encoding"], {**best[baseline], "budget": best["budget"]}
    return best["encoding"], best


def search_settings(result: str | Path) -> tuple[RunFolder, dict]:
    """The run folder that lists a search result and the settings of the search that wrote it."""
    found = RunFolder.holding(result)
    if found is None:
        raise HwpruneError(f"no run.json lists {result}: pass --checkpoint (the PruningNet searched)")
    run, key = found
    return run, run.settings(key)


def searched_checkpoint(result: str | Path, found: tuple[RunFolder, dict] | None = None) -> Path:
    """The PruningNet a search result came from, as the manifest of its run folder records it (``found``: what
    :func:`search_settings` already read for it)."""
    run, settings = found or search_settings(result)
    if not settings.get("checkpoint"):
        raise HwpruneError(f"{result} was searched with inherited weights, not a PruningNet; retrain it with "
                           f"--init inherit or scratch")
    path = Path(settings["checkpoint"])
    return path if path.is_absolute() or path.exists() else run.path / path


def retrain_stage(run: RunFolder, *, result: str | Path | None = None, budget: float | None = None,
                  baseline: str | None = None, checkpoint: str | Path | None = None, ratio: float | None = None,
                  init: str | None = None, teacher: str | Path | None = None, distill: bool | None = None,
                  data: str | None = None, batch_size: int | None = None, train: dict | None = None,
                  device: str = "auto", where: str = ".", key: str = "retrain", resume: bool = False,
                  progress: bool | None = None, log: Log = None):
    """Retrain an encoding: a search's choice (``result``; or its ``baseline`` network of the same budget) or a
    uniform width ``ratio`` of a PruningNet's space.

    A result searched with inherited weights is fine-tuned from them (``init`` "inherit",
    its default there) and distilled from the dense model unless ``distill=False``; one
    searched with a PruningNet starts from scratch by default (MetaPruning's protocol),
    or from its generated weights (``init="pruningnet"``). Writes ``model.pt`` (weights,
    encoding, accuracies, the data settings and budget) and ``history.csv``.
    """
    from ..deploy.retrain import load_pruned, retrain
    from ..files.checkpoint import load_checkpoint
    from ..supernet.train import PNET_FORMAT, pruningnet_from_payload
    from ..training.config import TrainConfig
    from .stages import ordered_dense

    folder = run.path / where
    check_number("batch_size", batch_size, integer=True, minimum=1, inclusive=True, optional=True)
    check_writable(folder / "model.pt", "run folder")
    if (folder / "model.pt").exists() and not resume:
        raise HwpruneError(f"{folder} already holds a retrained model; pass --resume to continue it or choose "
                           f"another --out")
    if result is not None:  # a file that is not a result, or a budget it lacks: said before the manifest is read
        enc, chosen = chosen_encoding(result, budget, baseline)
    found = search_settings(result) if result is not None and checkpoint is None else None
    searched = found[1] if found else {}
    dense_spec = searched.get("dense") if searched.get("evaluator") == "inherit" else None
    if result is not None:
        if dense_spec is None:
            checkpoint = checkpoint or searched_checkpoint(result, found)
    elif checkpoint is None or ratio is None:
        raise HwpruneError("give --result (a search's result.json) or --checkpoint with --uniform RATIO")
    init = init or ("inherit" if dense_spec else "scratch")
    dev = resolve_device(device)
    init_distributed(dev)
    pnet = dense = ordered = None
    if dense_spec is not None:
        data_settings = from_dict(DataSettings, searched["data"], "the search's run.json")
        loaders = loaders_for(data_settings, override=data, batch_size=batch_size)
        spec = from_dict(DenseModel, dense_spec, "the search's run.json")
        if baseline == "magnitude":  # the magnitude network keeps the channels its criterion ranks best
            spec = replace(spec, importance=chosen.get("metric", "l1"))
        dense, space, ordered = ordered_dense(spec, loaders)
        if init == "pruningnet":
            raise HwpruneError(f"{result} was searched with inherited weights: there is no PruningNet to start from; "
                               f"use --init inherit or scratch")
    else:
        if init == "inherit":
            raise HwpruneError("--init inherit needs a search made with --evaluator inherit (the dense model's "
                               "weights); this one used a PruningNet")
        ck = load_checkpoint(checkpoint, PNET_FORMAT)
        pnet = pruningnet_from_payload(ck, path=checkpoint).to(dev)
        data_settings = checkpoint_data(ck, checkpoint, data)
        del ck
        space = pnet.space
        loaders = loaders_for(data_settings, override=data, batch_size=batch_size)
    if result is None:
        enc, chosen = list(space.uniform(ratio)), {"ratio": ratio}
    if teacher:
        teacher_model = load_pruned(teacher)[0]
    elif dense is not None and distill is not False:
        teacher_model = dense  # fine-tuning distils the dense model's knowledge by default
    else:
        teacher_model = None
    cfg = TrainConfig(**{"seed": data_settings.seed, **(train or {})})
    used = DataSettings(data or data_settings.data, data_settings.image_size, batch_size or data_settings.batch_size,
                        data_settings.seed, data_settings.limit)
    teacher_name = str(teacher) if teacher else ("the dense model" if teacher_model is not None else None)
    run.begin(key, "retrain", {"result": str(result) if result else None, "budget": budget,
                               "baseline": baseline,
                               "checkpoint": str(checkpoint) if checkpoint else None,
                               "dense": asdict(spec) if dense_spec is not None else None,
                               "ratio": ratio, "init": init, "teacher": teacher_name, "encoding": list(enc),
                               "chosen": chosen, "data": asdict(used), "train": asdict(cfg)})
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    model, history = retrain(space, enc, loaders.train, config=cfg, init=init, pnet=pnet, source=ordered,
                             teacher=teacher_model, val_loader=loaders.val, test_loader=loaders.test, device=dev,
                             run_dir=folder, resume=resume, progress=progress,
                             log=lambda s: say(f"{key}: {s}"),  # which network a line is about
                             meta={"data": asdict(used), "budget": chosen.get("budget")})
    ck = load_checkpoint(folder / "model.pt")
    run.finish(key, {"model": folder / "model.pt", "history": folder / "history.csv"},
               {k: ck.get(k) for k in ("val_acc", "test_acc")})
    return model, history


def export_stage(run: RunFolder | None, *, checkpoint: str | Path, out: str | Path, fmt: str = "onnx",
                 dynamic_batch: bool = False, fp16: bool = False, batch_size: int = 1, data: str | None = None,
                 workspace_mb: int = 1024, force: bool = False, key: str = "export") -> dict:
    """Export a retrained model checkpoint to ONNX (checked on real inputs) and, for ``tensorrt``, an engine.
    An existing file at ``out`` is replaced only with ``force``."""
    from ..deploy.export import build_tensorrt_engine, export_onnx, tensorrt_unavailable_reason
    from ..deploy.retrain import load_pruned

    if fmt not in ("onnx", "tensorrt"):
        raise HwpruneError(f"format must be onnx or tensorrt, got {fmt!r}")
    if fmt == "tensorrt" and tensorrt_unavailable_reason():
        raise HwpruneError(tensorrt_unavailable_reason())
    rec = _record(run)
    check_number("batch_size", batch_size, integer=True, minimum=1, inclusive=True)
    check_writable(out, "exported model")
    targets = [Path(out) if Path(out).suffix == ".onnx" else Path(out).with_suffix(".onnx")]
    if fmt == "tensorrt":
        targets.append(Path(out).with_suffix(".engine"))
    if not force and any(t.exists() for t in targets):
        raise HwpruneError(f"{next(t for t in targets if t.exists())} exists; pass --force to replace it or "
                           f"choose another --out")
    model, info = load_pruned(checkpoint)
    space = info["space_obj"]
    shape = (batch_size, *space.input_shapes[0][1:])
    stored = (info.get("meta") or {}).get("data")
    settings = from_dict(DataSettings, stored, str(checkpoint)) if stored else (DataSettings(data) if data else None)
    rec.begin(key, "export", {"checkpoint": str(checkpoint), "out": str(out), "format": fmt,
                              "dynamic_batch": dynamic_batch, "fp16": fp16, "batch_size": batch_size,
                              "data": asdict(settings) if settings else None})
    if settings is not None:  # real inputs for the parity check
        loaders = loaders_for(settings, override=data)
        check = [x for _, (x, _) in zip(range(2), loaders.val)]
    else:
        check = [torch.randn(8, *shape[1:])]
    out = Path(out)
    onnx_path = out if out.suffix == ".onnx" else out.with_suffix(".onnx")
    budget = (info.get("meta") or {}).get("budget") or {}
    meta = {"space": info["space"], "encoding": info["encoding"], "channels": info["channels"],
            "input_shape": list(shape), "val_acc": info.get("val_acc"), "test_acc": info.get("test_acc"),
            "budget_ms": budget.get("latency_ms")}  # the latency budget it was searched for: verify's default
    rep = export_onnx(model, onnx_path, torch.zeros(shape), dynamic_batch=dynamic_batch, metadata=meta,
                      check_inputs=check)
    summary = {"onnx": str(onnx_path), "max_abs_diff": rep.max_abs_diff, "inputs_checked": rep.inputs_checked,
               "bytes": rep.bytes, "real_inputs": settings is not None}
    files = {"onnx": onnx_path}
    if fmt == "tensorrt":
        engine = out.with_suffix(".engine")
        build_tensorrt_engine(onnx_path, engine, fp16=fp16, workspace_mb=workspace_mb,
                              batch_range=(1, batch_size, max(batch_size, 64)) if dynamic_batch else None)
        summary["engine"] = str(engine)
        files["engine"] = engine
    rec.finish(key, files, summary)
    return summary


def verify_stage(run: RunFolder | None, *, models: Sequence[str | Path], table, latency_ms: float | None = None,
                 tolerance: float | None = None, dense: bool = True, passes: int = 5, runs_per_pass: int = 10,
                 source_model=None, key: str = "verify", timings: int = 2) -> list:
    """Measure exported files of one space on ``table``'s backend, interleaved with one dense network, against
    their predictions and ``latency_ms``; with a run folder the reports go to ``<key>.json`` there."""
    from ..deploy.verify import DEFAULT_TOLERANCE, verify_many

    tol = DEFAULT_TOLERANCE if tolerance is None else tolerance
    rec = _record(run)
    rec.begin(key, "verify", {"models": [str(m) for m in models], "table_backend": table.backend,
                              "table_space": table.meta.get("space", {}).get("fingerprint"), "latency_ms": latency_ms,
                              "tolerance": tol, "dense": dense, "passes": passes, "runs_per_pass": runs_per_pass,
                              "timings": timings})
    reports = verify_many(models, table, latency_ms=latency_ms, tolerance=tol, dense=dense, passes=passes,
                          runs_per_pass=runs_per_pass, model=source_model, timings=timings)
    files = {}
    if run is not None:
        files["report"] = write_json(run.path / f"{key}.json", {"reports": [r.to_dict() for r in reports]})
    rec.finish(key, files, {Path(r.model).name: {"measured_ms": r.measured_ms, "predicted_ms": r.predicted_ms,
                                                 "overshoot": r.overshoot, "within_budget": r.within_budget}
                            for r in reports})
    return reports
