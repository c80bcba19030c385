"""Layout reorders between kernels: the rules, their agreement with the graph onnxruntime runs, and the table's
use of them."""
import os
import tempfile

import numpy as np
import pytest
import torch
import torch.nn as nn

import hwprune as hp
from hwprune.latency.layouts import edge_reorders, layout_edges

from latency_fakes import FakeProfiler, fake_ms

AVX512 = {"block": 16, "align": 4, "depthwise_align": 4}  # what onnxruntime 1.32 reports with AVX-512


class Chain(nn.Module):
    """conv -> conv -> depthwise -> conv (+ residual) -> pool -> linear, every width prunable."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 32, 3, padding=1)
        self.b = nn.Conv2d(32, 32, 3, padding=1)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.c = nn.Conv2d(32, 32, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        a = torch.relu(self.a(x))
        y = torch.relu(self.b(a))
        y = self.c(torch.relu(self.dw(y))) + a
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(y), 1), 1))


def _space():
    return hp.SearchSpace.from_model(Chain().eval(), (1, 3, 16, 16), ratios=[w / 32 for w in range(2, 33, 2)])


def _widths(space, a: int, b: int) -> dict:
    """Channel counts of every traced group: ``a`` for the stream (a, c, the residual), ``b`` for b and dw."""
    groups = {g: w for g, w in enumerate(g.width for g in space.all_groups)}
    edges = {e["name"]: e for e in layout_edges(space)}
    groups[edges["a"]["terms"][0][0]] = a
    groups[edges["b"]["terms"][0][0]] = b
    return groups


def test_reorders_follow_the_runtime_rules():
    space = _space()
    edges = {e["name"]: e for e in layout_edges(space)}
    assert set(edges) >= {"input:x", "a", "b", "dw", "c", "adaptive_avg_pool2d"}
    assert {c["kind"] for c in edges["a"]["consumers"]} == {"conv", "result"}  # b reads it, c sums it in

    def reorders(a, b):
        w = _widths(space, a, b)
        return {name: edge_reorders(e, w, AVX512) for name, e in edges.items()}

    r = reorders(32, 32)  # everything blocked: only the pooled vector goes back to plain for the linear layer
    assert r["a"] == r["b"] == r["dw"] == r["c"] == [] and r["adaptive_avg_pool2d"] == ["reorder_output"]
    r = reorders(32, 12)  # b writes 12 channels, blocked (its input has 32), read blocked by the depthwise conv
    assert r["b"] == [] and r["dw"] == ["reorder_output"]  # (12 % 4 == 0); c reads its 12 < 16 channels plain
    r = reorders(32, 18)  # 18 is no multiple of 4: b is blocked, the depthwise conv and c are not
    assert r["b"] == ["reorder_output"] and r["dw"] == []
    r = reorders(20, 16)  # a's 20 channels: blocked, read blocked by b (20 % 4 == 0), pool needs plain (20 % 16)
    assert r["a"] == [] and r["c"] == ["reorder_output"]
    r = reorders(18, 16)  # b (18 channels in) is not blocked: a is reordered to plain for it; b writes plain,
    assert r["a"] == ["reorder_output"] and r["b"] == ["reorder_input"]  # which the 16-channel dw reads blocked
    assert all(edge_reorders(e, _widths(space, 18, 12), {}) == [] for e in edges.values())  # no blocked layout


@pytest.mark.parametrize("a,b", [(32, 32), (32, 12), (32, 18), (20, 16), (18, 16), (8, 24), (24, 6)])
def test_reorders_agree_with_the_graph_onnxruntime_optimizes(a, b):
    """Count the reorder nodes in the graph onnxruntime runs for a network, against the edges' prediction under
    the layout the profiler detects here (on a CPU without blocked kernels: none of either)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from hwprune.profilers import get_profiler
    from hwprune.profilers.onnx_graphs import export_network

    layout = get_profiler("onnxruntime", "cpu", threads=1).layout()
    space = _space()
    enc = tuple(g.choices.index(w) for g, w in zip(space.groups, _group_widths(space, a, b)))
    w = space.widths(enc)
    predicted = sum(len(edge_reorders(e, w, layout)) for e in layout_edges(space))
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
        ort.InferenceSession(export_network(space.materialize(enc), (1, 3, 16, 16)), so,
                             providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    assert sum(op.startswith("Reorder") for op in ops) == predicted, (layout, ops)


def _group_widths(space, a, b):
    w = _widths(space, a, b)
    return [w[g] for g in space.prunable_index]


def test_the_table_adds_the_measured_reorders_where_layouts_change(tmp_path):
    class Blocked(FakeProfiler):
        def layout(self):
            return AVX512

        def fingerprint(self):
            return {**super().fingerprint(), "nchwc": AVX512}

    space = _space()
    table = hp.profile(space, profiler=Blocked(), cache_dir=tmp_path, calibrate=4, quiet=True)
    ops = set(table.entries.op)
    assert {"reorder_output", "reorder_input"} <= ops
    enc = tuple(g.choices.index(w) for g, w in zip(space.groups, _group_widths(space, 18, 16)))
    parts = table.breakdown(enc)
    reorder = {k: v for k, v in parts.items() if k.startswith("reorder of ")}
    assert set(reorder) == {"reorder of a", "reorder of b", "reorder of c"}  # c: for the pool (18 % 16)
    # the reorder of b is a ReorderInput of its 16 output channels at 16x16, as measured for that kernel
    from hwprune.profilers.spec import KernelSpec
    want = fake_ms(KernelSpec("reorder_input", height=16, width=16), 16, 16)
    assert reorder["reorder of b"] == pytest.approx(want, abs=1e-6)  # (tables keep times to the ns)
    assert table.predict(enc) == pytest.approx(table.overhead_ms + table.scale * sum(parts.values()))
    assert table.predict_batch(np.asarray([enc]))[0] == pytest.approx(table.predict(enc))
    # saved and loaded, the same; and a backend without a blocked layout neither measures nor adds reorders
    table.save(tmp_path / "t.csv")
    again = hp.LatencyTable.load(tmp_path / "t.csv", space, check_device=False)  # (a fake machine)
    assert again.predict(enc) == pytest.approx(table.predict(enc))
    plain = hp.profile(space, profiler=FakeProfiler(), cache_dir=tmp_path / "p", calibrate=4, quiet=True)
    assert not any(op.startswith("reorder") for op in plain.entries.op)
    assert not any(k.startswith("reorder of") for k in plain.breakdown(enc))

