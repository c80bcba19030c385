"""Run folders for long jobs: a resolved config on disk, and building a job's pieces from it.

A run folder holds ``config.json`` (every option, resolved), the checkpoints and the
results. Resuming reads the config back, so ``--resume`` needs only the folder.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from ..files.atomic import write_json
from ..errors import HwpruneError
from ..training.distributed import init_distributed, is_main, resolve_device

__all__ = ["TrainJob", "run_train_job", "resolve_device", "init_distributed"]


@dataclass
class TrainJob:
    model: str = "resnet20"  # zoo name
    data: str = "bundled"  # "bundled" or a dataset path
    image_size: int | None = None
    width_mult: float | None = None
    round_to: int | None = None
    batch_size: int = 64
    workers: int = 0
    limit: int | None = None  # use only the first N training images (smoke runs)
    hidden: int = 32  # generator hidden units
    rank: int | None = None  # low-rank generator output (None: the paper's full output layer)
    bn: str = "per_choice"
    device: str = "auto"
    train: dict = field(default_factory=dict)  # TrainConfig fields

    @classmethod
    def from_dict(cls, d: dict) -> "TrainJob":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise HwpruneError(f"unknown job settings {sorted(unknown)} in config.json")
        return cls(**d)


def run_train_job(job: TrainJob, out: str | Path, resume: bool = False, progress: bool | None = None,
                  log=None) -> list[dict]:
    """Train a PruningNet for ``job`` in run folder ``out``; returns the epoch history."""
    from ..data import load_dataset, make_loaders
    from ..supernet.pruningnet import PruningNet
    from ..models import create_model
    from ..core.space import SearchSpace
    from ..supernet.train import TrainConfig, train_pruningnet

    out = Path(out)
    cfg_path = out / "config.json"
    if resume and cfg_path.exists():
        saved = json.loads(cfg_path.read_text())
        epochs = job.train.get("epochs")
        job = TrainJob.from_dict(saved["job"])
        if epochs is not None:  # resuming may extend a run
            job.train["epochs"] = epochs
    elif (out / "pruningnet.pt").exists() and not resume:
        raise HwpruneError(f"{out} already holds a PruningNet; pass --resume to continue it or choose another --out")
    device = resolve_device(job.device)
    rank, world = init_distributed(device)
    try:
        cfg = TrainConfig(**job.train)
    except TypeError as e:
        raise HwpruneError(f"bad training setting: {e}") from None
    data = load_dataset(job.data, image_size=job.image_size, seed=cfg.seed)
    if job.limit:
        data = data.limit_train(job.limit, seed=cfg.seed)
    loaders = make_loaders(data, job.batch_size, seed=cfg.seed, workers=job.workers, rank=rank, world=world)
    torch.manual_seed(cfg.seed)  # the model's initial weights are the generators' starting point
    model = create_model(job.model, num_classes=data.num_classes, in_channels=data.input_shape[0],
                         width_mult=job.width_mult)
    space = SearchSpace.from_model(model, (1, *data.input_shape), round_to=job.round_to)
    pnet = PruningNet(space, hidden=job.hidden, bn=job.bn, rank=job.rank).to(device)
    if rank == 0:
        write_json(cfg_path, {"job": asdict(job), "resolved_train": asdict(cfg), "world_size": world,
                              "num_classes": data.num_classes, "input_shape": list(data.input_shape),
                              "mean": loaders.mean, "std": loaders.std, "torch": torch.__version__})
        (out / "space.json").write_text(space.to_json())
    return train_pruningnet(pnet, loaders.train, config=cfg, val_loader=loaders.val, calib_loader=loaders.calib,
                            run_dir=out, resume=resume, progress=progress, log=log)


def training_settings(checkpoint: str | Path) -> dict | None:
    """The ``config.json`` of the training run a PruningNet checkpoint came from, if it sits beside it."""
    path = Path(checkpoint).parent / "config.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_loaders(checkpoint: str | Path, data: str | None, batch_size: int | None = None, workers: int = 0):
    """Loaders over the data and split a PruningNet was trained on (its run folder's config.json)."""
    from ..data import load_dataset, make_loaders

    saved = training_settings(checkpoint)
    job = TrainJob.from_dict(saved["job"]) if saved else TrainJob()
    seed = (saved or {}).get("resolved_train", {}).get("seed", 0)
    if data is None and saved is None:
        raise HwpruneError(f"no config.json beside {checkpoint}: pass --data (the dataset it was trained on)")
    ds = load_dataset(data or job.data, image_size=job.image_size, seed=seed)
    return make_loaders(ds, batch_size or job.batch_size, seed=seed, workers=workers)


def run_search_job(checkpoint: str | Path, out: str | Path, table: str | Path | None = None,
                   latency_ms: list[float] | None = None, flops: float | None = None, params: float | None = None,
                   data: str | None = None, config=None, device: str = "auto", resume: bool = False,
                   allow_mismatch: bool = False, log=None):
    """Search a trained PruningNet under budgets; writes result.json, history.csv, pareto.png into ``out``."""
    from ..latency import LatencyTable
    from ..search import SearchConfig, save_result, search
    from ..supernet.train import load_pruningnet

    cfg = config or SearchConfig()
    dev = resolve_device(device)
    init_distributed(dev)
    pnet = load_pruningnet(checkpoint).to(dev)
    lut = LatencyTable.load(table, space=pnet.space, allow_mismatch=allow_mismatch) if table else None
    loaders = run_loaders(checkpoint, data)
    out = Path(out)
    result = search(pnet, loaders.val, loaders.calib, table=lut, latency_ms=latency_ms, flops=flops, params=params,
                    config=cfg, run_dir=out, resume=resume, log=log)
    if is_main():
        write_json(out / "config.json", {"checkpoint": str(checkpoint), "table": str(table) if table else None,
                                         "latency_ms": latency_ms, "flops": flops, "params": params,
                                         "data": data, "search": asdict(cfg)})
        save_result(result, out)
    return result


def chosen_encoding(result: str | Path, budget: float | None = None, uniform: bool = False) -> tuple[list[int], dict]:
    """The encoding a search chose for ``budget`` (ms; the only budget when None), or that budget's uniform baseline."""
    res = json.loads(Path(result).read_text())
    bests = res.get("best") or []
    if not bests:
        raise HwpruneError(f"{result} holds no search result")
    if budget is None:
        if len(bests) > 1:
            raise HwpruneError(f"{result} has {len(bests)} budgets "
                               f"({', '.join(str(b['budget']['latency_ms']) for b in bests)} ms); pick one with --budget")
        best = bests[0]
    else:
        hits = [b for b in bests if b["budget"]["latency_ms"] is not None
                and abs(b["budget"]["latency_ms"] - budget) < 1e-9 * max(1.0, budget)]
        if not hits:
            raise HwpruneError(f"{result} has no budget {budget:g} ms; it has "
                               f"{', '.join(str(b['budget']['latency_ms']) for b in bests)}")
        best = hits[0]
    if uniform:
        if not best.get("uniform"):
            raise HwpruneError(f"no uniform-width network meets budget {best['budget']} in {result}")
        return best["uniform"]["encoding"], best["uniform"]
    return best["encoding"], best


def run_retrain_job(out: str | Path, *, result: str | Path | None = None, budget: float | None = None,
                    uniform_baseline: bool = False, checkpoint: str | Path | None = None,
                    ratio: float | None = None, init: str = "scratch", teacher: str | Path | None = None,
                    data: str | None = None, batch_size: int | None = None, train: dict | None = None,
                    device: str = "auto", resume: bool = False, progress: bool | None = None, log=None):
    """Retrain an encoding: a search's choice (``result``) or a uniform width ``ratio`` of a PruningNet's space."""
    from ..training.config import TrainConfig
    from ..deploy.retrain import load_pruned, retrain
    from ..supernet.train import load_pruningnet

    out = Path(out)
    if result is not None:
        enc, chosen = chosen_encoding(result, budget, uniform_baseline)
        search_cfg = json.loads((Path(result).parent / "config.json").read_text()) \
            if (Path(result).parent / "config.json").exists() else {}
        checkpoint = checkpoint or search_cfg.get("checkpoint")
        if checkpoint is None:
            raise HwpruneError(f"no config.json beside {result}: pass --checkpoint (the PruningNet searched)")
    elif checkpoint is None or ratio is None:
        raise HwpruneError("give --result (a search's result.json) or --checkpoint with --uniform RATIO")
    dev = resolve_device(device)
    init_distributed(dev)
    pnet = load_pruningnet(checkpoint).to(dev)
    if result is None:
        enc, chosen = list(pnet.space.uniform(ratio)), {"ratio": ratio}
    teacher_model = load_pruned(teacher)[0] if teacher else None
    saved = training_settings(checkpoint) or {}
    train = dict(train or {})
    cfg = TrainConfig(**{"seed": saved.get("resolved_train", {}).get("seed", 0), **train})
    loaders = run_loaders(checkpoint, data, batch_size)
    write_json(out / "config.json", {"result": str(result) if result else None, "budget": budget,
                                     "uniform_baseline": uniform_baseline, "checkpoint": str(checkpoint),
                                     "ratio": ratio, "init": init, "teacher": str(teacher) if teacher else None,
                                     "encoding": list(enc), "chosen": chosen, "train": asdict(cfg)})
    model, history = retrain(pnet.space, enc, loaders.train, config=cfg, init=init, pnet=pnet, teacher=teacher_model,
                             val_loader=loaders.val, test_loader=loaders.test, run_dir=out, resume=resume,
                             progress=progress, log=log)
    return model, history


def model_loaders(model_checkpoint: str | Path, data: str | None = None):
    """Loaders of the data a retrained model came from (its run folder -> the PruningNet's run folder)."""
    cfg_path = Path(model_checkpoint).parent / "config.json"
    pnet_ckpt = json.loads(cfg_path.read_text()).get("checkpoint") if cfg_path.exists() else None
    if pnet_ckpt is None and data is None:
        return None
    return run_loaders(pnet_ckpt or model_checkpoint, data)


def run_export_job(checkpoint: str | Path, out: str | Path, fmt: str = "onnx", dynamic_batch: bool = False,
                   fp16: bool = False, batch_size: int = 1, data: str | None = None, workspace_mb: int = 1024) -> dict:
    """Export a retrained model checkpoint to ONNX (checked on real inputs) and, for ``tensorrt``, an engine."""
    from ..deploy.export import build_tensorrt_engine, export_onnx, tensorrt_unavailable_reason
    from ..deploy.retrain import load_pruned

    if fmt not in ("onnx", "tensorrt"):
        raise HwpruneError(f"format must be onnx or tensorrt, got {fmt!r}")
    if fmt == "tensorrt" and tensorrt_unavailable_reason():
        raise HwpruneError(tensorrt_unavailable_reason())
    model, info = load_pruned(checkpoint)
    space = info["space_obj"]
    shape = (batch_size, *space.input_shapes[0][1:])
    loaders = model_loaders(checkpoint, data)
    if loaders is not None:  # real inputs for the parity check
        check = [x for _, (x, _) in zip(range(2), loaders.val)]
    else:
        check = [torch.randn(8, *shape[1:])]
    out = Path(out)
    onnx_path = out if out.suffix == ".onnx" else out.with_suffix(".onnx")
    meta = {"space": info["space"], "encoding": info["encoding"], "channels": info["channels"],
            "input_shape": list(shape), "val_acc": info.get("val_acc"), "test_acc": info.get("test_acc")}
    rep = export_onnx(model, onnx_path, torch.zeros(shape), dynamic_batch=dynamic_batch, metadata=meta,
                      check_inputs=check)
    result = {"onnx": str(onnx_path), "max_abs_diff": rep.max_abs_diff, "inputs_checked": rep.inputs_checked,
              "bytes": rep.bytes, "real_inputs": loaders is not None}
    if fmt == "tensorrt":
        engine = out.with_suffix(".engine")
        build_tensorrt_engine(onnx_path, engine, fp16=fp16, workspace_mb=workspace_mb,
                              batch_range=(1, batch_size, max(batch_size, 64)) if dynamic_batch else None)
        result["engine"] = str(engine)
    return result
