"""onnxruntime on the CPU execution provider, with fixed intra-op threads.

Kernels: a chunk of variants in one ONNX graph (see :mod:`.onnx_graphs`) runs in a
session with onnxruntime's profiler on; each variant's time is the sum of the
kernel times of *its* nodes in the optimized graph (``v{i}_...``), so the fused
conv (BN folded, activation, residual sum) is timed exactly as the runtime runs it,
without the session overhead or the layout reorders that a lone kernel would need
and a network mostly does not. Every run executes every variant of the chunk, so
the variants are interleaved run by run. A chunk is measured once a probe says the
machine is quiet, and a reference kernel in every chunk tells which runs it stayed
quiet in: only those count, and a chunk with too few is measured again (see
:mod:`.protocol`; another job on this 2-core machine slows everything by up to 1.5x
for seconds at a time).

Networks: exported with ``torch.onnx.export``, sessions with the same options,
timed with ``perf_counter_ns`` around ``InferenceSession.run`` on a numpy input (what a
user times; tables calibrated before this measured ``run_with_iobinding``, about 5 us
faster per call), interleaved, each timed run bracketed by probes of the reference
kernel (see :func:`.protocol.interleaved`).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import ClassVar, Sequence

import numpy as np

from .base import Profiler
from .machine import cpu_count, cpu_name, version_of
from .protocol import REFERENCE, interleaved, quiet_runs, wait_for_quiet
from .spec import KernelSpec, Measurement, summarize
from .onnx_graphs import export_network, kernel_model

__all__ = ["OnnxruntimeProfiler"]

_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}
MAX_ATTEMPTS = 3  # measurements of a chunk that another job disturbed throughout
# the weights a kernel chunk holds (KB, ``chunk_kb``): chunks were held to 8 MB (the last-level cache) before the
# setting existed, so a fingerprint names it only where it differs, and tables and stores made before stay valid.
# "auto" (the default): the weights of the widest network of the space being profiled, within CHUNK_KB_RANGE
# (:meth:`OnnxruntimeProfiler.size_chunks`): a kernel is timed with as many weights competing for the cache as the
# space's networks have at most; 8 MB where no space says (a lone measure_kernels call)
HISTORIC_CHUNK_KB = 8192
DEFAULT_CHUNK_KB = "auto"
CHUNK_KB_RANGE = (256, 8192)


@dataclass
class OnnxruntimeProfiler(Profiler):
    """Options: ``opt_level`` ('all', the runtime's default, or 'extended' / 'basic' / 'disable'); ``chunk_kb``,
    the most kernel weights (KB) timed together in one chunk ("auto", the default: the widest network's, see
    :meth:`size_chunks`): a chunk's weights come from the cache level they fit, as a network's do."""

    name: ClassVar[str] = "onnxruntime"

    consumes_onnx: ClassVar[bool] = True  # measure_networks also takes ONNX bytes (an exported file as is)

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        if device != "cpu":
            return "this backend drives the CPU execution provider only (use device 'cpu')"
        if version_of("onnxruntime") is None:
            return "the onnxruntime package is not installed (pip install onnxruntime)"
        return None

    def __post_init__(self):
        from ..errors import HwpruneError

        self.options = {"opt_level": "all", "chunk_kb": DEFAULT_CHUNK_KB, **self.options}
        if self.options["opt_level"] not in _LEVELS:
            raise HwpruneError(f"opt_level must be one of {', '.join(_LEVELS)}, got {self.options['opt_level']!r}")
        kb = self.options["chunk_kb"]
        if kb != "auto" and (isinstance(kb, bool) or not isinstance(kb, int) or kb < 1):
            raise HwpruneError(f"chunk_kb must be 'auto' or a positive whole number of KB (1024: 1 MB), got {kb!r}")
        if self.dtype != "float32":
            raise HwpruneError(f"the onnxruntime CPU backend measures float32 only, not {self.dtype}")

    def fingerprint(self) -> dict:
        fp = {"backend": self.name, "device": "cpu", "device_name": cpu_name(), "cpu_count": cpu_count(),
              "threads": self.threads, "batch": self.batch_size, "dtype": self.dtype,
              "opt_level": self.options["opt_level"], "nchwc": self.layout(), "kernel_times": "less profiler floor",
              "versions": {"onnxruntime": version_of("onnxruntime"), "onnx": version_of("onnx")}}
        if self._chunk_kb() != HISTORIC_CHUNK_KB:
            fp["chunk_kb"] = self._chunk_kb()
        return fp

    def _chunk_kb(self) -> int:
        kb = self.options["chunk_kb"]
        return HISTORIC_CHUNK_KB if kb == "auto" else kb

    def size_chunks(self, weights: int) -> None:
        """With ``chunk_kb`` "auto", hold chunks to the widest network's ``weights`` (4 bytes each, as
        :func:`.protocol.chunked` counts a chunk's) within :data:`CHUNK_KB_RANGE`. A kernel's time depends on
        how many weights compete for the cache with it: a 24->20 3x3 conv at 7x7 ran in 11.5-13.5 us in chunks
        of up to 0.6 MB of weights and 17.5-19.5 us in chunks of 2.6-10 MB (2-core Xeon, 2 MB of L2), and in
        10 us inside a resnet20 of 80 KB of weights."""
        if self.options["chunk_kb"] == "auto":
            lo, hi = CHUNK_KB_RANGE
            self.options["chunk_kb"] = int(min(hi, max(lo, -(-4 * int(weights) // 1024))))

    def chunk_limits(self) -> tuple[int, int]:
        return 256, self._chunk_kb() << 10

    def layout(self) -> dict:
        """The blocked (NCHWc) conv layout of this runtime here, read from the graph it optimizes (convs of 1 to
        128 channels, and which it blocks): ``block``, the channel block (8: AVX2, 16: AVX-512), below which a conv
        reads the plain tensor directly; ``align``, what wider inputs must be a multiple of to be read blocked;
        ``depthwise_align``, the same for depthwise convs. Empty off x86 or below the 'all' optimization level."""
        if self.options["opt_level"] != "all":
            return {}
        if "_layout" not in self.__dict__:
            self._layout = _detect_layout()
        return self._layout

    def _session(self, model_bytes: bytes, profile_prefix: str | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[self.options["opt_level"]])
        so.log_severity_level = 3  # the NCHWc transformer warns on every session otherwise
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])

    # ---- kernels ------------------------------------------------------------------------
    def measure_kernels(self, spec: KernelSpec, pairs: Sequence[tuple[int, int]]) -> list[Measurement]:
        model, feeds, prefixes = kernel_model(spec, pairs, share_inputs=True, residual_from_conv=True,
                                              reference=REFERENCE)
        blob = model.SerializeToString()
        best = None
        for attempt in range(MAX_ATTEMPTS):
            wait_for_quiet(self.probe(), self.anchors, self.max_wait_s)
            per_run, ref, notes = self._profile_once(blob, feeds, prefixes)  # us
            result = quiet_runs(per_run / 1e3, ref / 1e3, self.anchors, max(5, self.repeats // 3))
            if best is None or result[2] < best[2]:
                best = result
            if not result[1].startswith("unverified"):
                break
        times, how, state = best
        return [replace(summarize(times[:, j]), note=f"{notes[j]} ({how})", reference_ms=state)
                for j in range(len(prefixes))]

    def _profile_once(self, blob: bytes, feeds: dict, prefixes: list[str]):
        """(runs x variants kernel times in us, the reference kernel's time per run in us, what each ran)."""
        with tempfile.TemporaryDirectory(prefix="hwprune-ort-") as tmp:
            sess = self._session(blob, os.path.join(tmp, "prof"))
            binding = sess.io_binding()
            for name, value in feeds.items():
                binding.bind_cpu_input(name, value)
            for out in sess.get_outputs():
                binding.bind_output(out.name)
            for _ in range(self.warmup + self.repeats):
                sess.run_with_iobinding(binding)
            with open(sess.end_profiling()) as f:
                events = json.load(f)
        nodes, ops = defaultdict(list), {}
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                name = e["name"][: -len("_kernel_time")]
                nodes[name].append(e["dur"])  # us, one per run
                ops[name] = e.get("args", {}).get("op_name", "?") + ("/nchwc" if name.endswith("_nchwc") else "")
        by_variant: dict[str, list[str]] = defaultdict(list)
        for name in nodes:
            by_variant[name.split("_", 1)[0] + "_"].append(name)  # v12_conv_nchwc -> v12_
        def per_run(prefix: str) -> np.ndarray:  # the branch's nodes summed, one value per timed run
            names = by_variant.get(prefix, [])
            if not names:  # the runtime removed the whole branch: it costs nothing
                return np.zeros(self.repeats)
            return np.sum([nodes[k][-self.repeats:] for k in names], axis=0).astype(np.float64)

        # the profiler adds ~2 us to every node it times (measured: node_floor_us); a network pays each kernel's
        # own share only, which matters where the number of nodes changes with the widths (layout reorders)
        floor = self.node_floor_us()
        counts = np.array([len(by_variant.get(p, [])) for p in prefixes], dtype=np.float64)
        kernels = np.stack([per_run(p) for p in prefixes], axis=1)  # (runs, variants)
        kernels = np.maximum(kernels - floor * counts, 0.05 * kernels)
        notes = ["+".join(ops[k] for k in by_variant.get(p, [])) for p in prefixes]
        return kernels, per_run("ref_"), notes  # (the reference as measured: its quiet anchors predate this)

    def node_floor_us(self) -> float:
        """What onnxruntime's profiler adds to each node it times (us): a chain of 200 trivial nodes timed per node
        by the profiler, less the same chain's run time per node without it (~2 us on the shipped EPYC)."""
        if "_floor" not in self.__dict__:
            self._floor = _node_floor_us(self._session)
        return self._floor

    def probe(self):
        """A function timing one run of the reference kernel alone (ms): the machine's speed right now."""
        if getattr(self, "_probe", None) is None:
            model, feeds, _ = kernel_model(REFERENCE, [(REFERENCE.height, REFERENCE.height)])
            sess = self._session(model.SerializeToString())
            binding = sess.io_binding()
            for name, value in feeds.items():
                binding.bind_cpu_input(name, value)
            binding.bind_output(sess.get_outputs()[0].name)

            def probe() -> float:
                t = time.perf_counter_ns()
                sess.run_with_iobinding(binding)
                return (time.perf_counter_ns() - t) / 1e6

            self._probe = probe
        return self._probe

    # ---- networks -----------------------------------------------------------------------
    def measure_networks(self, models: Sequence, input_shape: tuple[int, ...], passes: int = 5,
                         runs_per_pass: int = 10, seed: int = 0, progress=None) -> list[Measurement]:
        shape = (self.batch_size,) + tuple(input_shape[1:])
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        sessions = []
        for m in models:
            sess = self._session(m if isinstance(m, (bytes, bytearray)) else export_network(m, shape))
            sessions.append((sess, {sess.get_inputs()[0].name: x}))
            if progress:
                progress(0.5)
        # ``InferenceSession.run`` with a numpy input, as users time a model: it costs a few microseconds per
        # call more than ``run_with_iobinding`` (5-6 us on the shipped EPYC), which the calibration's overhead
        # then includes, so that predictions are of the latency a user measures
        return interleaved(lambda i: sessions[i][0].run(None, sessions[i][1]), len(sessions), passes,
                           runs_per_pass, seed, progress, probe=self.probe(), anchors=self.anchors,
                           max_wait_s=self.max_wait_s)


def _blocked_widths(depthwise: bool) -> set[int]:
    """Of 1x1 convs (3x3 depthwise) reading 1..128 channels, the widths onnxruntime runs in its blocked layout."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper as h, numpy_helper as nh

    widths = range(1, 129)
    nodes, inits, outputs = [], [], []
    for c in widths:  # one conv per input width, each reading its own input
        cout, shape = (c, (c, 1, 3, 3)) if depthwise else (8, (8, c, 1, 1))
        inits.append(nh.from_array(np.zeros(shape, np.float32), f"w{c}"))
        nodes.append(h.make_node("Conv", [f"x{c}", f"w{c}"], [f"y{c}"], name=f"conv{c}", group=c if depthwise else 1,
                                 pads=[1, 1, 1, 1] if depthwise else [0, 0, 0, 0]))
        outputs.append(h.make_tensor_value_info(f"y{c}", TensorProto.FLOAT, [1, cout, 4, 4]))
    inputs = [h.make_tensor_value_info(f"x{c}", TensorProto.FLOAT, [1, c, 4, 4]) for c in widths]
    model = h.make_model(h.make_graph(nodes, "block", inputs, outputs, inits),
                         opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    with tempfile.TemporaryDirectory(prefix="hwprune-ort-") as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        so.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        graph = onnx.load(so.optimized_model_filepath).graph
    # a conv left in the plain layout keeps its input's name; a blocked one reads a reorder's output (or, below
    # the block, the plain input itself, but in the blocked op's domain)
    plain = {int(n.input[0][1:]) for n in graph.node if n.op_type == "Conv" and n.domain in ("", "ai.onnx")}
    return set(widths) - plain


def _detect_layout() -> dict:
    """See :meth:`OnnxruntimeProfiler.layout`."""
    blocked, dw = _blocked_widths(False), _blocked_widths(True)
    widths = set(range(1, 129))
    layout = {}
    for block in (4, 8, 16, 32, 64):
        for align in (1, 2, 4, 8, 16, 32, 64):
            if align <= block and blocked == {c for c in widths if c < block or c % align == 0}:
                layout = {"block": block, "align": align}
                break
        if layout:
            break
    if not layout:  # no blocked layout, or one this model of it does not describe: nothing is added
        return {}
    layout["depthwise_align"] = next((a for a in (1, 2, 4, 8, 16, 32, 64)
                                      if dw - {1} == {c for c in widths if c % a == 0} - {1}), 0)
    return layout


def _node_floor_us(session_of) -> float:
    """See :meth:`OnnxruntimeProfiler.node_floor_us`."""
    from onnx import TensorProto, helper as h

    n = 200
    nodes = [h.make_node("Neg", ["x" if i == 0 else f"t{i - 1}"], [f"t{i}"], name=f"n{i}") for i in range(n)]
    graph = h.make_graph(nodes, "floor", [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                         [h.make_tensor_value_info(f"t{n - 1}", TensorProto.FLOAT, [1, 4])])
    blob = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8).SerializeToString()
    feed = {"x": np.ones((1, 4), np.float32)}
    sess = session_of(blob)
    for _ in range(20):
        sess.run(None, feed)
    runs = []
    for _ in range(100):
        t = time.perf_counter_ns()
        sess.run(None, feed)
        runs.append(time.perf_counter_ns() - t)
    plain = float(np.percentile(runs, 10)) / 1e3 / n  # us per node, run as a network runs
    with tempfile.TemporaryDirectory(prefix="hwprune-ort-") as tmp:
        sess = session_of(blob, os.path.join(tmp, "floor"))
        for _ in range(30):
            sess.run(None, feed)
        with open(sess.end_profiling()) as f:
            durs = [e["dur"] for e in json.load(f) if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    profiled = float(np.mean(durs[-20 * n:])) if durs else plain
    return max(0.0, round(profiled - plain, 3))
