"""ONNX graphs for profiling: many kernel variants side by side, and whole networks.

Building the kernel graphs with ``onnx.helper`` takes milliseconds where exporting
torch modules takes a quarter of a second each. One graph holds a whole chunk of
variants of one :class:`KernelSpec` (independent branches, every node and tensor of
variant ``i`` named ``v{i}_...``), so one session measures them all, interleaved run
by run, and a backend's per-node profile attributes each node to its variant
whatever the backend fuses or renames.

The graph is written the way ``torch.onnx.export`` writes the deployed network
(Conv with the BatchNorm folded into its bias, Clip for ReLU6, Gemm for Linear), so
the runtime applies the same fusions to the variant as to the real layer.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .spec import KernelSpec

__all__ = ["kernel_model", "branches_model", "export_network", "OPSET", "IR_VERSION"]

OPSET = 17
IR_VERSION = 8  # what onnxruntime >= 1.15 and TensorRT 10 both accept for opset 17

_POOL = None  # a shared pool of random weights: values do not change dense float timing


def _weights(n: int, scale: float = 0.1) -> np.ndarray:
    global _POOL
    if _POOL is None or _POOL.size < n:
        _POOL = (np.random.default_rng(0).standard_normal(max(n, 1 << 22), dtype=np.float32) * scale)
    return _POOL[:n]


def _act(h, x: str, act: str, out: str, prefix: str, inits: list) -> list:
    """Nodes computing activation ``act`` of tensor ``x`` into ``out``, as torch exports it."""
    from onnx import numpy_helper as nh

    if act == "relu":
        return [h.make_node("Relu", [x], [out], name=f"{prefix}relu")]
    if act == "relu6":
        lo, hi = f"{prefix}zero", f"{prefix}six"
        inits += [nh.from_array(np.array(0, np.float32), lo), nh.from_array(np.array(6, np.float32), hi)]
        return [h.make_node("Clip", [x, lo, hi], [out], name=f"{prefix}clip")]
    if act == "hardswish":
        return [h.make_node("HardSwish", [x], [out], name=f"{prefix}hswish")]
    if act == "hardsigmoid":
        return [h.make_node("HardSigmoid", [x], [out], name=f"{prefix}hsig", alpha=1 / 6, beta=0.5)]
    if act == "sigmoid":
        return [h.make_node("Sigmoid", [x], [out], name=f"{prefix}sig")]
    if act == "tanh":
        return [h.make_node("Tanh", [x], [out], name=f"{prefix}tanh")]
    if act == "leaky_relu":
        return [h.make_node("LeakyRelu", [x], [out], name=f"{prefix}lrelu", alpha=0.01)]
    if act == "silu":
        return [h.make_node("Sigmoid", [x], [f"{prefix}sg"], name=f"{prefix}sig"),
                h.make_node("Mul", [x, f"{prefix}sg"], [out], name=f"{prefix}mul")]
    if act == "gelu":  # opset 17 has no Gelu: torch writes the erf form
        c = {f"{prefix}rs2": 2 ** -0.5, f"{prefix}one": 1.0, f"{prefix}half": 0.5}
        inits += [nh.from_array(np.array(v, np.float32), k) for k, v in c.items()]
        return [h.make_node("Mul", [x, f"{prefix}rs2"], [f"{prefix}a"], name=f"{prefix}m1"),
                h.make_node("Erf", [f"{prefix}a"], [f"{prefix}b"], name=f"{prefix}erf"),
                h.make_node("Add", [f"{prefix}b", f"{prefix}one"], [f"{prefix}c"], name=f"{prefix}a1"),
                h.make_node("Mul", [x, f"{prefix}c"], [f"{prefix}d"], name=f"{prefix}m2"),
                h.make_node("Mul", [f"{prefix}d", f"{prefix}half"], [out], name=f"{prefix}m3")]
    raise ValueError(f"activation {act!r} has no ONNX form here")


def kernel_model(spec: KernelSpec, pairs: Sequence[tuple[int, int]], share_inputs: bool = True,
                 residual_from_conv: bool = True, reference: KernelSpec | None = None, fresh_inputs: bool = True):
    """An ONNX model with one branch per (cin, cout) of ``spec``; returns (model, feeds, prefixes).

    ``share_inputs``: variants with the same input shape read one graph input
    (onnxruntime); otherwise each has its own (TensorRT would merge parallel layers
    reading one tensor). ``residual_from_conv``: the tensor a fused residual add reads
    comes from a tiny 1-channel 1x1 conv, so it arrives in the layout the runtime gives
    conv outputs (as in the real network) instead of a graph input's plain layout.
    ``reference``: an extra branch ``ref_`` (at its own (cin, cout) = its ``height``
    channels) whose time tells how fast the machine was during each run.
    ``fresh_inputs``: each branch reads a tensor written just before it (a ReLU of
    the graph input, not timed), as a layer in a network reads its producer's output
    from cache; a graph input last touched a hundred variants ago comes from DRAM,
    which made memory-bound kernels (depthwise convs) up to 30% slower than in the network.
    """
    branches = [(spec, cin, cout, f"v{i}_") for i, (cin, cout) in enumerate(pairs)]
    if reference is not None:
        branches.append((reference, reference.height, reference.height, "ref_"))
    model, feeds = branches_model(branches, share_inputs, residual_from_conv, fresh_inputs)
    return model, feeds, [p for *_, p in branches if p != "ref_"]


def branches_model(branches, share_inputs: bool, residual_from_conv: bool, fresh_inputs: bool = True):
    """(model, feeds) with one independent branch per (spec, cin, cout, prefix)."""
    from onnx import TensorProto, helper as h, numpy_helper as nh

    nodes, inits, inputs, outputs, feeds = [], [], [], [], {}
    rng = np.random.default_rng(1)

    def graph_input(name: str, shape: tuple[int, ...]) -> str:
        if name not in feeds:
            inputs.append(h.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
            feeds[name] = rng.standard_normal(shape, dtype=np.float32)
        return name

    for spec, cin, cout, p in branches:
        if spec.dtype != "float32":
            raise ValueError(f"ONNX kernel graphs are built in float32; {spec.dtype} is not supported")
        b = spec.batch
        oh, ow = spec.out_size
        in_shape = (b, cin) if spec.op == "linear" else (b, cin, spec.height, spec.width)
        if spec.op.startswith("reorder_"):  # the runtime reorders whole groups of 4 channels
            in_shape = (b, -(-cin // 4) * 4, spec.height, spec.width)
        if spec.op == "concat":  # two pieces, concatenated into cin channels
            in_shape, rest = (b, max(1, cin // 2), spec.height, spec.width), cin - max(1, cin // 2)
        x = graph_input("in_" + "x".join(map(str, in_shape)) if share_inputs else f"{p}in", in_shape)
        if fresh_inputs:  # named r..., not v...: its time is not the variant's
            nodes.append(h.make_node("Relu", [x], [f"r{p}fresh"], name=f"r{p}fresh"))
            x = f"r{p}fresh"
        y = f"{p}y"
        out_shape = (b, cout) if spec.op == "linear" else (b, cout, oh, ow)
        # every tensor and node of the branch starts with p, so profiles attribute it to this variant
        if spec.op in ("conv2d", "linear"):
            w, bias = f"{p}w", f"{p}b"
            if spec.op == "conv2d":
                g = spec.groups_for(cin)
                wshape = (cout, cin // g) + tuple(spec.kernel)
                inits.append(nh.from_array(_weights(int(np.prod(wshape))).reshape(wshape), w))
                node = h.make_node("Conv", [x, w, bias], [f"{p}conv"], name=f"{p}conv", group=g,
                                   kernel_shape=list(spec.kernel), strides=list(spec.stride),
                                   pads=list(spec.padding) * 2, dilations=list(spec.dilation))
            else:
                inits.append(nh.from_array(_weights(cout * cin).reshape(cout, cin), w))
                node = h.make_node("Gemm", [x, w, bias], [f"{p}conv"], name=f"{p}gemm", transB=1)
            # a folded BatchNorm (or the layer's own bias) is a bias; the runtime folds BN the same way
            inits.append(nh.from_array(_weights(cout), bias))
            nodes.append(node)
            t = f"{p}conv"
            if spec.activation != "none":
                nodes += _act(h, t, spec.activation, f"{p}act", f"{p}a_", inits)
                t = f"{p}act"
            if spec.residual:
                r = _residual(h, nh, spec, p, cout, out_shape, residual_from_conv, graph_input, nodes, inits)
                nodes.append(h.make_node("Add", [t, r], [f"{p}sum"], name=f"{p}add"))
                t = f"{p}sum"
                if spec.residual_activation != "none":
                    nodes += _act(h, t, spec.residual_activation, f"{p}ract", f"{p}r_", inits)
                    t = f"{p}ract"
        elif spec.op == "batchnorm2d":
            names = [f"{p}{n}" for n in ("scale", "bias", "mean", "var")]
            for n in names:
                inits.append(nh.from_array(np.abs(_weights(cin)) + 0.5, n))
            nodes.append(h.make_node("BatchNormalization", [x] + names, [f"{p}bn"], name=f"{p}bn"))
            if spec.activation != "none":
                nodes += _act(h, f"{p}bn", spec.activation, f"{p}act", f"{p}a_", inits)
        elif spec.op == "add":
            other = graph_input(f"{p}other", in_shape)
            nodes.append(h.make_node("Add", [x, other], [f"{p}sum"], name=f"{p}add"))
            if spec.activation != "none":
                nodes += _act(h, f"{p}sum", spec.activation, f"{p}act", f"{p}a_", inits)
        elif spec.op in ("reorder_output", "reorder_input"):  # onnxruntime's layout copies (see latency.layouts)
            nchwc = "com.microsoft.nchwc"
            if spec.op == "reorder_output":  # from the blocked layout, made (untimed) from the input
                nodes.append(h.make_node("ReorderInput", [x], [f"r{p}blocked"], name=f"r{p}blocked", domain=nchwc))
                nodes.append(h.make_node("ReorderOutput", [f"r{p}blocked"], [y], name=f"{p}reorder", domain=nchwc,
                                         channels=cin))
            else:
                nodes.append(h.make_node("ReorderInput", [x], [y], name=f"{p}reorder", domain=nchwc))
                out_shape = (b, None, spec.height, spec.width)  # channels padded to the runtime's block
        elif spec.op == "scale":  # x * s, s one value per channel (as squeeze-excitation multiplies)
            s = graph_input(f"{p}s", (b, cin, 1, 1))
            nodes.append(h.make_node("Mul", [x, s], [y], name=f"{p}mul"))
        elif spec.op == "concat":
            pieces = [x]
            if rest:  # the second piece, also written just before it is read
                other = graph_input(f"{p}other", (b, rest, spec.height, spec.width))
                nodes.append(h.make_node("Relu", [other], [f"r{p}other"], name=f"r{p}other"))
                pieces.append(f"r{p}other")
            nodes.append(h.make_node("Concat", pieces, [y], name=f"{p}cat", axis=1))
        elif spec.op == "activation":
            nodes += _act(h, x, spec.activation, f"{p}act", f"{p}a_", inits)
        elif spec.op in ("maxpool2d", "avgpool2d"):
            kw = dict(kernel_shape=list(spec.kernel), strides=list(spec.stride), pads=list(spec.padding) * 2)
            if spec.op == "maxpool2d":
                nodes.append(h.make_node("MaxPool", [x], [y], name=f"{p}pool", dilations=list(spec.dilation), **kw))
            else:
                nodes.append(h.make_node("AveragePool", [x], [y], name=f"{p}pool", count_include_pad=1, **kw))
        elif spec.op in ("global_avgpool2d", "global_maxpool2d"):
            op = "GlobalAveragePool" if spec.op == "global_avgpool2d" else "GlobalMaxPool"
            nodes.append(h.make_node(op, [x], [y], name=f"{p}pool"))
        else:
            raise ValueError(f"no ONNX kernel for op {spec.op!r}")
        nodes[-1].output[0] = y  # the branch's last tensor is the graph output (no Identity to time)
        outputs.append(h.make_tensor_value_info(y, TensorProto.FLOAT, list(out_shape)))
    graph = h.make_graph(nodes, "hwprune_kernels", inputs, outputs, inits)
    opsets = [h.make_opsetid("", OPSET)]
    if any(n.domain == "com.microsoft.nchwc" for n in nodes):
        opsets.append(h.make_opsetid("com.microsoft.nchwc", 1))
    model = h.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION, producer_name="hwprune")
    return model, feeds


def _residual(h, nh, spec, p, cout, out_shape, from_conv, graph_input, nodes, inits) -> str:
    if not from_conv or spec.op == "linear":
        return graph_input(f"{p}res_in", out_shape)
    one = graph_input(f"one_{spec.batch}x{out_shape[2]}x{out_shape[3]}", (spec.batch, 1) + tuple(out_shape[2:]))
    w = f"r{p}w"  # named r..., not v...: its time is not the variant's
    inits.append(nh.from_array(_weights(cout).reshape(cout, 1, 1, 1), w))
    nodes.append(h.make_node("Conv", [one, w], [f"r{p}res"], name=f"r{p}conv", kernel_shape=[1, 1]))
    return f"r{p}res"


def export_network(model, input_shape: tuple[int, ...]) -> bytes:
    """``model`` (an ``nn.Module``) as ONNX bytes, exported as ``hwprune export`` exports it."""
    import torch

    from .runtimes import onnx_bytes

    return onnx_bytes(model.eval(), torch.randn(*input_shape), opset=OPSET)
