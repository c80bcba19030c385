"""Run folders for long jobs: a resolved config on disk, and building a job's pieces from it.

A run folder holds ``config.json`` (every option, resolved), the checkpoints and the
results. Resuming reads the config back, so ``--resume`` needs only the folder.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist

from .checkpoint import write_json
from .errors import HwpruneError

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


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise HwpruneError("CUDA was asked for but torch sees no GPU; use --device cpu")
        if "LOCAL_RANK" in os.environ and device == "cuda":
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return torch.device(device)


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); (rank, world)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def run_train_job(job: TrainJob, out: str | Path, resume: bool = False, progress: bool | None = None,
                  log=None) -> list[dict]:
    """Train a PruningNet for ``job`` in run folder ``out``; returns the epoch history."""
    from .data import load_dataset, make_loaders
    from .meta import PruningNet
    from .models import create_model
    from .space import SearchSpace
    from .train import TrainConfig, train_pruningnet

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


def search_loaders(checkpoint: str | Path, data: str | None, batch_size: int | None = None, workers: int = 0):
    """Validation and calibration loaders for searching a PruningNet: the training run's data and split."""
    from .data import load_dataset, make_loaders

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
    from .latency import LatencyTable
    from .search import SearchConfig, save_result, search
    from .train import load_pruningnet

    cfg = config or SearchConfig()
    dev = resolve_device(device)
    init_distributed(dev)
    pnet = load_pruningnet(checkpoint).to(dev)
    lut = LatencyTable.load(table, space=pnet.space, allow_mismatch=allow_mismatch) if table else None
    loaders = search_loaders(checkpoint, data)
    out = Path(out)
    result = search(pnet, loaders.val, loaders.calib, table=lut, latency_ms=latency_ms, flops=flops, params=params,
                    config=cfg, run_dir=out, resume=resume, log=log)
    if not dist.is_initialized() or dist.get_rank() == 0:
        write_json(out / "config.json", {"checkpoint": str(checkpoint), "table": str(table) if table else None,
                                         "latency_ms": latency_ms, "flops": flops, "params": params,
                                         "data": data, "search": asdict(cfg)})
        save_result(result, out)
    return result
