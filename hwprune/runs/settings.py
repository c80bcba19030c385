"""The resolved settings a stage runs with, as plain dataclasses that go into ``run.json`` as they are.

Defaults live here and in the library's own configs (:class:`~hwprune.training.TrainConfig`,
:class:`~hwprune.search.SearchConfig`); the CLI reads them from these classes instead
of declaring them again.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..errors import HwpruneError, check_number

__all__ = ["PretrainJob", "TrainJob", "DataSettings", "DenseModel", "ProfileSettings", "from_dict"]


@dataclass
class DataSettings:
    """Which data a model was trained on, so that search, retrain and export load the same split."""

    data: str = "bundled"  # "bundled" (5,000 MNIST digits) or a dataset path
    image_size: int | None = None  # resize / pad images to this size
    batch_size: int = 64  # per process
    seed: int = 0  # the split and the data order
    limit: int | None = None  # a seeded random N of the training images (smoke runs), in every later stage too

    def __post_init__(self):
        _check_data(self)


def _check_data(s) -> None:
    """The data and model options every job shares, refused before any work."""
    check_number("batch_size", s.batch_size, integer=True, minimum=1, inclusive=True)
    check_number("limit", s.limit, integer=True, minimum=1, inclusive=True, optional=True)
    check_number("image_size", s.image_size, integer=True, minimum=1, inclusive=True, optional=True)
    for name in ("width_mult", "round_to", "workers"):
        if hasattr(s, name):
            check_number(name, getattr(s, name), integer=name != "width_mult", minimum=0 if name != "round_to" else 1,
                         inclusive=name == "workers" or name == "round_to", optional=True)


@dataclass
class PretrainJob:
    """``hwprune pretrain``: the dense model trained first, where the user has no weights for it."""

    model: str = "resnet20"  # zoo name, package.module:function or path/to/file.py:function
    data: str = "bundled"
    image_size: int | None = None
    width_mult: float | None = None
    batch_size: int = 64
    workers: int = 0
    limit: int | None = None
    device: str = "auto"
    # TrainConfig fields; a plain CNN learns far faster at 0.05 per 64 images than at the PruningNet's 0.01
    train: dict = field(default_factory=lambda: {"lr": 0.05, "schedule": "cosine", "eval_ratios": ()})

    def __post_init__(self):
        _check_data(self)

    def data_settings(self, seed: int) -> DataSettings:
        return DataSettings(self.data, self.image_size, self.batch_size, seed, self.limit)


@dataclass
class TrainJob:
    """``hwprune train``: a zoo model's PruningNet on a dataset."""

    model: str = "resnet20"  # zoo name, package.module:function or path/to/file.py:function
    weights: str | None = None  # the model's trained weights (state_dict); the PruningNet starts from them
    importance: str = "taylor"  # with weights: the channel order the PruningNet starts from (core/importance.py)
    data: str = "bundled"  # "bundled" or a dataset path
    image_size: int | None = None
    width_mult: float | None = None
    round_to: int | None = None
    batch_size: int = 64
    workers: int = 0
    limit: int | None = None  # use only a seeded random N of the training images (smoke runs)
    hidden: int = 32  # generator hidden units
    rank: int | str | None = "auto"  # generator output bases: "auto" is 4 with --weights, else None (the paper's)
    bn: str = "per_choice"
    sample_table: str | None = None  # a latency table of the space: random encodings come from a latency window
    sample_from: float = 0.25  # ... from this fraction of the dense network's predicted latency up to the dense one
    device: str = "auto"
    train: dict = field(default_factory=dict)  # TrainConfig fields

    def __post_init__(self):
        _check_data(self)
        check_number("sample_from", self.sample_from, maximum=1)

    def data_settings(self, seed: int) -> DataSettings:
        return DataSettings(self.data, self.image_size, self.batch_size, seed, self.limit)


@dataclass
class DenseModel:
    """The trained dense model whose importance-ordered weights candidates inherit (``--evaluator inherit``)."""

    model: str  # zoo name, package.module:function or path/to/file.py:function (absolute)
    weights: str | None = None  # its trained weights; an untrained model has nothing to inherit
    round_to: int | None = None  # widths in multiples of N
    width_mult: float | None = None  # zoo models only
    importance: str = "taylor"  # the channel order: taylor, l1, l2 or bn (hwprune.core.importance)
    # a group on a residual branch may also take width 0 (hwprune.core.branches); the CLI and quickstart set it
    # (their default), False is what a record written before it existed was searched with
    drop_blocks: bool = False


@dataclass
class ProfileSettings:
    """``hwprune profile``: how a latency table is measured (the arguments of :func:`hwprune.profile`)."""

    backend: str = "onnxruntime"  # onnxruntime, torch or tensorrt
    device: str = "cpu"  # cpu, or cuda[:N] for torch / tensorrt
    threads: int = 1  # intra-op threads (CPU backends)
    batch_size: int = 1
    dtype: str = "float32"
    statistic: str = "p10"  # which recorded statistic the table predicts
    repeats: int = 25  # timed runs per kernel chunk
    calibrate: int = 16  # networks measured end to end to fit the calibration
    calibration: str = "auto"  # auto, constant, affine or proportional
    passes: int = 5  # interleaved passes over the networks in every end-to-end measurement
    runs_per_pass: int = 10
    options: dict = field(default_factory=dict)  # backend options, e.g. {"opt_level": "basic"}
    seed: int = 0


def from_dict(cls, d: dict, where: str):
    """``cls(**d)``, refusing keys the dataclass does not have (a file from another version)."""
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise HwpruneError(f"unknown {cls.__name__} settings {sorted(unknown)} in {where}; this run was written by "
                           f"another hwprune version: run it again in a new folder")
    return cls(**d)
