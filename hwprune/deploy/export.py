"""Export a pruned network: one self-contained ONNX file, checked; a TensorRT engine where TensorRT exists.

``export_onnx`` writes the file atomically, runs ``onnx.checker`` on it, and runs it
in onnxruntime on the inputs given (real data, preferably) beside torch; a max
absolute difference above the tolerance is an error, not a warning. The file's
metadata carries hwprune's description of the network (space JSON, encoding,
channels), so ``hwprune verify`` can predict its latency from a table and rebuild
the dense network to compare with.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from ..files.atomic import write_atomic
from ..errors import HwpruneError
from ..profilers.runtimes import OPSET, ExportError, onnx_bytes, serialize_engine, tensorrt_unavailable_reason

__all__ = ["ExportError", "ExportReport", "onnx_bytes", "export_onnx", "read_metadata", "build_tensorrt_engine",
           "tensorrt_unavailable_reason", "OPSET"]

MAX_CHECKED = 256  # samples per check input compared between torch and onnxruntime
META_PREFIX = "hwprune."


@dataclass
class ExportReport:
    path: str
    max_abs_diff: float  # onnxruntime vs torch on the check inputs
    inputs_checked: int
    bytes: int


def export_onnx(model: nn.Module, path: str | Path, example_inputs: torch.Tensor, *, dynamic_batch: bool = False,
                metadata: dict | None = None, check_inputs: Sequence[torch.Tensor] | None = None,
                tolerance: float = 1e-4) -> ExportReport:
    """Export ``model`` to ``path`` and prove the file computes the same outputs (see the module docstring)."""
    import onnx

    model = model.eval().cpu()
    example = example_inputs if isinstance(example_inputs, torch.Tensor) else example_inputs[0]
    proto = onnx.load_from_string(onnx_bytes(model, example, dynamic_batch))
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, value if isinstance(value, str) else json.dumps(value)
    data = proto.SerializeToString()
    if len(data) > 2_000_000_000:
        raise ExportError("the model is over 2 GB, past what one ONNX file can hold")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise ExportError(f"the exported graph fails onnx.checker: {str(e).strip().splitlines()[0]}") from None
    diff, n = _parity(model, data, list(check_inputs) if check_inputs is not None else [example])
    if diff > tolerance:
        raise ExportError(f"onnxruntime's outputs differ from torch's by {diff:.3g} (> {tolerance:g}); the export "
                          f"is not faithful; look for ops the exporter translates loosely")
    write_atomic(path, lambda f: f.write(data))
    return ExportReport(str(path), diff, n, len(data))


def _parity(model: nn.Module, data: bytes, inputs: list[torch.Tensor]) -> tuple[float, int]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    batch = sess.get_inputs()[0].shape[0]
    step = batch if isinstance(batch, int) else 64  # a fixed-batch file takes inputs in its own batch size
    worst, n = 0.0, 0
    with torch.no_grad():
        for big in inputs:
            big = big[:MAX_CHECKED]
            if isinstance(batch, int):
                big = big[: len(big) // batch * batch]
            if len(big) == 0:
                continue
            want = model(big).numpy()  # torch once per input; onnxruntime in the file's batch size
            got = np.concatenate([sess.run(None, {"input": x.numpy().astype(np.float32)})[0]
                                  for x in big.split(step)])
            if got.shape != want.shape:
                raise ExportError(f"onnxruntime output shape {got.shape} differs from torch's {want.shape}")
            worst = max(worst, float(np.abs(got - want).max()))
            n += len(big)
    if n == 0:
        raise ExportError(f"no check input fits the exported batch size {batch}")
    return worst, n


def read_metadata(path: str | Path) -> dict:
    """hwprune's metadata of an exported ONNX file (empty for files hwprune did not write)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise HwpruneError(f"cannot read ONNX file {path}: {str(e).strip().splitlines()[0]}") from None
    out = {}
    for p in proto.metadata_props:
        if p.key.startswith(META_PREFIX):
            key = p.key[len(META_PREFIX):]
            try:
                out[key] = json.loads(p.value)
            except json.JSONDecodeError:
                out[key] = p.value
    return out


def build_tensorrt_engine(onnx_path: str | Path, engine_path: str | Path, fp16: bool = False,
                          workspace_mb: int = 1024, batch_range: tuple[int, int, int] | None = None) -> Path:
    """Build a serialized TensorRT engine file from an ONNX file (written atomically)."""
    reason = tensorrt_unavailable_reason()
    if reason:
        raise HwpruneError(reason)
    serialized = serialize_engine(Path(onnx_path).read_bytes(), fp16, workspace_mb, batch_range)
    write_atomic(engine_path, lambda f: f.write(bytes(serialized)))
    return Path(engine_path)
