"""The user's own model: a zoo name, ``package.module:function`` or ``path/to/file.py:function``, and its weights.

The function is called without arguments and must return an ``nn.Module``. The model
remembers where it came from (``hwprune_spec``), so a saved search space can rebuild
it later: a zoo model by name and options, any other by importing its function again
(an absolute path for a file). Weights are read with ``weights_only=True``: a
state_dict, or a checkpoint dict holding one under ``state_dict`` or ``model``. Every
failure is one line naming the problem.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import HwpruneError
from .registry import create_model

__all__ = ["load_model", "load_weights", "rebuild_model", "absolute_spec", "ModelLoadError"]


class ModelLoadError(HwpruneError):
    """A model spec that cannot be imported or called, or weights that do not fit the model."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _import(target: str):
    if target.endswith(".py"):
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise ModelLoadError(f"model file {target} does not exist")
        name = f"hwprune_user_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[name]
            raise ModelLoadError(f"importing {target} failed: {_first_line(e)}") from None
        return module
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as e:
        raise ModelLoadError(f"cannot import {target!r} ({_first_line(e)}); is its package installed, or did you "
                             f"mean a file (path/to/file.py:function)?") from None
    except Exception as e:
        raise ModelLoadError(f"importing {target} failed: {_first_line(e)}") from None


def load_model(spec: str, *, weights: str | Path | None = None, num_classes: int | None = None,
               in_channels: int | None = None, width_mult: float | None = None) -> nn.Module:
    """The model ``spec`` names (module docstring), with ``weights`` loaded when given.

    ``num_classes``, ``in_channels`` and ``width_mult`` apply to zoo models; a function of
    the user's builds its model as it defines it.
    """
    if ":" not in spec:
        model = create_model(spec, num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)
    else:
        target, func = spec.rsplit(":", 1)
        module = _import(target)
        fn = getattr(module, func, None)
        if not callable(fn):
            raise ModelLoadError(f"{target} has no function {func!r}" + (f" ({func!r} is a {type(fn).__name__})"
                                                                           if fn is not None else ""))
        try:
            model = fn()
        except Exception as e:
            raise ModelLoadError(f"{spec}() failed: {_first_line(e)}") from None
        if not isinstance(model, nn.Module):
            raise ModelLoadError(f"{spec}() returned a {type(model).__name__}, not an nn.Module")
        where = str(Path(target).expanduser().resolve()) if target.endswith(".py") else target
        model.hwprune_spec = {"source": f"{where}:{func}"}
    if weights is not None:
        load_weights(model, weights)
    return model


def absolute_spec(spec: str) -> str:
    """``spec`` with a file path made absolute, so a run folder can rebuild the model from anywhere."""
    if ":" not in spec:
        return spec
    target, func = spec.rsplit(":", 1)
    return f"{Path(target).expanduser().resolve()}:{func}" if target.endswith(".py") else spec


def rebuild_model(spec: dict) -> nn.Module:
    """The model a saved ``hwprune_spec`` describes (structure only: no weights)."""
    if "source" in spec:
        return load_model(spec["source"])
    return create_model(spec["name"], **spec["kwargs"])


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state_dict (or a checkpoint dict holding one) into ``model``; refused in one line if it does not fit."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelLoadError(f"cannot read weights {path} safely ({_first_line(e)}); save a state_dict with "
                             f"torch.save(model.state_dict(), path)") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path} holds no state_dict (a dict of tensors, or one under 'state_dict' or 'model')")
    if all(k.startswith("module.") for k in obj):  # saved from DistributedDataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in obj]
    unexpected = [k for k in obj if k not in own]
    if missing or unexpected:
        what = f"lacks {missing[0]!r}" if missing else f"has {unexpected[0]!r}, which the model does not"
        raise ModelLoadError(f"weights {path} do not fit {type(model).__name__}: the file {what} "
                             f"({len(missing)} missing, {len(unexpected)} unexpected keys); are they of another "
                             f"architecture or input size?")
    for k, v in obj.items():
        if own[k].shape != v.shape:
            raise ModelLoadError(f"weights {path} do not fit {type(model).__name__}: {k!r} is {tuple(v.shape)} in "
                                 f"the file, {tuple(own[k].shape)} in the model")
    model.load_state_dict(obj)
    return model
