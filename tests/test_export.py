"""ONNX export: checker-clean single files whose onnxruntime outputs match torch's on real images."""
import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

import hwprune as hp
from hwprune.data import load_dataset
from hwprune.deploy.export import (ExportError, build_tensorrt_engine, export_onnx, read_metadata,
                            tensorrt_unavailable_reason)

from conftest import small_input


def real_images(shape, n=8):
    """Bundled digits, normalised, resized and tiled to ``shape`` = (1, C, H, W)."""
    d = load_dataset("bundled")
    x = d.images[torch.as_tensor(d.val_idx[:n])].float() / 255
    x = (x - 0.1) / 0.3
    x = F.interpolate(x, size=shape[2:], mode="bilinear", align_corners=False)
    return x.repeat(1, shape[1], 1, 1)


@pytest.mark.parametrize("name", hp.list_models())
def test_export_parity_at_a_random_encoding(name, tmp_path):
    torch.manual_seed(0)
    model = hp.create_model(name).eval()
    space = hp.SearchSpace.from_model(model, small_input(name))
    enc = space.sample(np.random.default_rng(3))
    pruned = space.materialize(enc, source=model).eval()
    x = real_images(small_input(name))
    rep = export_onnx(pruned, tmp_path / "m.onnx", x[:1], check_inputs=[x[:4], x[4:]], dynamic_batch=True,
                      metadata={"encoding": list(enc)})
    assert rep.max_abs_diff <= 1e-4 and rep.inputs_checked == 8
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)  # self-contained
    assert read_metadata(tmp_path / "m.onnx")["encoding"] == list(enc)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert len(convs) == sum(1 for l in space.layers if l.kind == "conv")
    assert not [n for n in proto.graph.node if n.op_type == "BatchNormalization"]  # folded into the convs


def test_unfaithful_export_is_an_error(tmp_path):
    class Odd(torch.nn.Module):  # eval-mode dropout with a python-side random branch: torch != ONNX
        def forward(self, x):
            return x * float(torch.rand(()))

    with pytest.raises(ExportError, match="differ from torch's by"):
        export_onnx(Odd(), tmp_path / "odd.onnx", torch.randn(1, 3, 4, 4))
    assert not (tmp_path / "odd.onnx").exists()  # nothing half-written


def test_tensorrt_without_tensorrt_says_how_to_install(tmp_path):
    reason = tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT is installed here; the GPU test covers it")
    with pytest.raises(hp.HwpruneError, match=r"pip install 'hwprune\[tensorrt\]'|needs an NVIDIA GPU"):
        build_tensorrt_engine(tmp_path / "m.onnx", tmp_path / "m.engine")


@pytest.mark.skipif(tensorrt_unavailable_reason() is not None, reason=str(tensorrt_unavailable_reason()))
def test_tensorrt_engine_builds(tmp_path):
    model = hp.create_model("resnet20").eval()
    export_onnx(model, tmp_path / "m.onnx", torch.randn(1, 3, 32, 32))
    for fp16 in (False, True):
        path = build_tensorrt_engine(tmp_path / "m.onnx", tmp_path / f"m{fp16}.engine", fp16=fp16)
        assert path.stat().st_size > 100_000
