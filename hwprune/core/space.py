"""SearchSpace: the prunable channel groups of a model and the widths each may take.

An *encoding* is a tuple with one choice index per prunable group; it fixes every
layer's channel counts, hence its FLOPs, parameters, latency and weights. With
``drop_blocks=True`` a group that lies on a residual branch may also take width 0,
which removes that branch (:mod:`hwprune.core.branches`). FLOPs and
params are computed analytically from the layer shapes recorded once at trace time:
per layer, ``coef * cin * cout`` with ``cin``/``cout`` sums over the groups of the
layer's channel layout, evaluated with a few numpy products per encoding.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..errors import EncodingError, HwpruneError, SpaceMismatchError, check_encoding, check_number
from .branches import Branch, droppable_branches
from .kinds import kind_of
from .materialize import materialize
from .traced import GroupInfo, LayerInfo, TracedModel
from .tracing import trace_model

__all__ = ["SearchSpace", "ChannelGroup", "default_ratios"]

FORMAT = "hwprune.space/1"


def default_ratios(max_ratio: float = 1.0, step: float = 0.03, min_ratio: float = 0.10) -> list[float]:
    """MetaPruning's width ratios: 0.10, 0.13, ..., 1.00 (31 values); optionally beyond 1.0."""
    n = int(round((max_ratio - min_ratio) / step)) + 1
    return [round(min_ratio + i * step, 6) for i in range(n)]


@dataclass(frozen=True)
class ChannelGroup:
    """A set of channel dimensions that keep one width, and the widths it may take."""

    name: str  # the first layer producing these channels
    width: int  # original width
    choices: tuple[int, ...]  # allowed widths, ascending (0 first where the group can drop its residual branch)
    members: tuple[str, ...]  # "layer1.0.conv2:out", "layer1.0.bn2", "layer1.1.conv1:in", ...

    @property
    def droppable(self) -> bool:
        """Whether width 0 (the group's residual branch removed) is a choice."""
        return self.choices[0] == 0

    def ratio(self, choice: int) -> float:
        return self.choices[choice] / self.width


def _widths(width: int, ratios: Sequence[float], round_to: int | None) -> tuple[int, ...]:
    q = round_to or 1
    if width < q:
        return (width,)
    out = set()
    for r in ratios:
        if abs(r - 1.0) < 1e-9:
            out.add(width)
        else:
            out.add(max(q, int(r * width / q + 0.5 - 1e-9) * q))
    return tuple(sorted(out))


def _as_inputs(example_inputs) -> tuple[torch.Tensor, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)) and example_inputs and all(isinstance(v, int) for v in example_inputs):
        return (torch.randn(*example_inputs),)  # a shape such as (1, 3, 32, 32)
    if isinstance(example_inputs, (tuple, list)) and all(isinstance(v, torch.Tensor) for v in example_inputs):
        return tuple(example_inputs)
    raise HwpruneError("example_inputs must be a tensor, a tuple of tensors, or an input shape like (1, 3, 32, 32)")


class SearchSpace:
    """Prunable channel groups of a model; see the module docstring."""

    def __init__(self, model: nn.Module, traced: TracedModel, ratios: Sequence[float], round_to: int | None,
                 ignored_layers: Sequence[str], choices: dict[str, Sequence[int]] | None = None,
                 drop_blocks: bool = False):
        self.model = model  # the template: structure and (unused) weights of the original
        self.traced = traced
        self.ratios = tuple(float(r) for r in ratios)
        self.round_to = round_to
        self.ignored_layers = tuple(ignored_layers)
        self.input_shapes = traced.input_shapes
        self.all_groups: list[GroupInfo] = traced.groups
        self.prunable_index = [i for i, g in enumerate(traced.groups) if g.fixed_reason is None]
        self.groups: list[ChannelGroup] = []
        for i in self.prunable_index:
            g = traced.groups[i]
            widths = tuple(choices[g.name]) if choices and g.name in choices else _widths(g.width, ratios, round_to)
            self.groups.append(ChannelGroup(g.name, g.width, widths, tuple(g.members)))
        zero = drop_blocks or any(g.choices[0] == 0 for g in self.groups)
        found = droppable_branches(traced) if zero else {}
        # the branch each droppable group removes at width 0, by position in the encoding
        self.branches: dict[int, Branch] = {}
        for pos, i in enumerate(self.prunable_index):
            g = self.groups[pos]
            if i in found and (drop_blocks or g.choices[0] == 0):
                self.branches[pos] = found[i]
                if g.choices[0] != 0:
                    self.groups[pos] = ChannelGroup(g.name, g.width, (0,) + g.choices, g.members)
            elif g.choices[0] == 0:
                raise SpaceMismatchError(f"group {g.name!r} has width choice 0, but it is not on a residual branch "
                                         f"that can be dropped; this space was saved for another model or edited: "
                                         f"build it again from the model")
        self.layers: list[LayerInfo] = traced.layers
        self.fingerprint = _fingerprint(traced)
        self._build_tables()

    @property
    def drop_blocks(self) -> bool:
        """Whether some group may drop its residual block (width 0)."""
        return bool(self.branches)

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def from_model(cls, model: nn.Module, example_inputs, ratios: Sequence[float] | None = None,
                   round_to: int | None = None, ignored_layers: Iterable | None = None,
                   max_ratio: float = 1.0, drop_blocks: bool = False) -> "SearchSpace":
        """Trace ``model`` on ``example_inputs`` (tensor(s) or a shape) and build its search space.

        ``ratios``: width ratios of the original (default 0.10, 0.13, ..., ``max_ratio``);
        ``round_to``: make every width a multiple of N; ``ignored_layers``: modules (or
        their names) kept whole: their channels are fixed and they are not traced into;
        ``drop_blocks``: a group inside a residual branch may also take width 0, removing the branch.
        """
        if round_to is not None and round_to < 1:
            raise HwpruneError(f"round_to must be a positive integer, got {round_to}")
        ratios = list(ratios) if ratios is not None else default_ratios(max_ratio)
        if not ratios or min(ratios) <= 0:
            raise HwpruneError(f"width ratios must be positive, got {ratios}")
        inputs = _as_inputs(example_inputs)
        traced = trace_model(model, inputs, ignored_layers)
        names = sorted(_ignored_names(model, ignored_layers))
        return cls(model, traced, ratios, round_to, names, drop_blocks=drop_blocks)

    def to_json(self) -> str:
        """The space as JSON: fingerprint, input shape, ratios and every group's widths."""
        return json.dumps({
            "format": FORMAT, "fingerprint": self.fingerprint, "model": type(self.model).__name__,
            "model_spec": getattr(self.model, "hwprune_spec", None),  # zoo name and kwargs, or file.py:function
            "input_shapes": [list(s) for s in self.input_shapes], "ratios": list(self.ratios),
            "round_to": self.round_to, "ignored_layers": list(self.ignored_layers),
            "groups": [{"name": g.name, "width": g.width, "choices": list(g.choices), "members": list(g.members)}
                       for g in self.groups],
        }, indent=1)

    @classmethod
    def from_json(cls, data: str | dict, model: nn.Module | None = None) -> "SearchSpace":
        """Rebuild a saved space for ``model``; refused when the model's structure differs.

        Without ``model``, a zoo model is rebuilt from the space's ``model_spec``.
        """
        d = json.loads(data) if isinstance(data, str) else data
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise SpaceMismatchError(f"not a hwprune search space (expected format {FORMAT!r})")
        if model is None:
            from ..models import rebuild_model

            spec = d.get("model_spec")
            if not spec:
                raise SpaceMismatchError(f"this space is of a model hwprune cannot rebuild ({d.get('model')}, built "
                                         f"in Python); pass that model to rebuild it")
            model = rebuild_model(spec)
        inputs = tuple(torch.randn(*s) for s in d["input_shapes"])
        try:
            traced = trace_model(model, inputs, d.get("ignored_layers") or None)
        except HwpruneError as e:
            raise SpaceMismatchError(f"the saved space does not fit {type(model).__name__}: {e}") from None
        if _fingerprint(traced) != d["fingerprint"]:
            raise SpaceMismatchError(f"the saved space is for another model ({d.get('model')}): "
                                     f"{_first_difference(traced, d)}")
        choices = {g["name"]: g["choices"] for g in d["groups"]}
        space = cls(model, traced, d["ratios"], d.get("round_to"), d.get("ignored_layers", []), choices)
        for g in space.groups:
            if not all(1 <= c for c in g.choices[g.droppable:]):
                raise SpaceMismatchError(f"group {g.name!r} has a non-positive width choice in the saved space")
        return space

    # ---- encodings ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.groups)

    @property
    def num_choices(self) -> list[int]:
        return [len(g.choices) for g in self.groups]

    def full(self) -> tuple[int, ...]:
        """The original widths."""
        return tuple(g.choices.index(g.width) if g.width in g.choices else len(g.choices) - 1
                     for g in self.groups)

    def narrowest(self, keep_blocks: bool = False) -> tuple[int, ...]:
        """Every group at its narrowest width; with ``keep_blocks`` its narrowest width above 0 (the narrowest
        network that drops no residual block, as narrow as a uniform or magnitude network can be)."""
        return tuple(int(keep_blocks and g.choices[0] == 0) for g in self.groups)

    def uniform(self, ratio: float) -> tuple[int, ...]:
        """Every group at the choice nearest ``ratio`` of its original width (never a dropped branch)."""
        check_number("ratio", ratio)
        return tuple(int(np.argmin([abs(c - ratio * g.width) if c else np.inf for c in g.choices]))
                     for g in self.groups)

    def sample(self, rng: np.random.Generator | int | None = None) -> tuple[int, ...]:
        """A random encoding, each group's choice uniform (MetaPruning's structure sampling)."""
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return tuple(int(rng.integers(n)) for n in self.num_choices)

    def check(self, enc: Sequence[int]) -> tuple[int, ...]:
        """Validate an encoding; raise :class:`EncodingError` naming the bad group."""
        return check_encoding(enc, self.num_choices, names=[g.name for g in self.groups])

    def widths(self, enc: Sequence[int]) -> np.ndarray:
        """Width of every traced group (fixed ones included) under ``enc``."""
        enc = self.check(enc)
        w = self._base.copy()
        w[self._prunable] = self._choice_table[np.arange(len(enc)), enc]
        return w

    def channels(self, enc: Sequence[int]) -> dict[str, int]:
        """Channel count of each prunable group, by group name."""
        w = self.widths(enc)
        return {g.name: int(w[i]) for g, i in zip(self.groups, self.prunable_index)}

    def layer_channels(self, enc: Sequence[int]) -> dict[str, tuple[int, int]]:
        """(in, out) channels of every conv and linear layer under ``enc``."""
        cin, cout = self._cin @ self.widths(enc), self._cout @ self.widths(enc)
        return {layer.name: (int(a), int(b)) for layer, a, b in zip(self.layers, cin, cout) if kind_of(layer).weighted}

    # ---- cost ---------------------------------------------------------------------------------
    def flops(self, enc: Sequence[int]) -> int:
        """Multiply-accumulates of all conv and linear layers (the MetaPruning convention)."""
        return int(self.flops_batch(np.asarray([self.check(enc)]))[0])

    def params(self, enc: Sequence[int]) -> int:
        """Number of parameters of the materialized model."""
        return int(self.params_batch(np.asarray([self.check(enc)]))[0])

    def flops_batch(self, encs: np.ndarray) -> np.ndarray:
        """FLOPs of many encodings at once: ``encs`` is (N, groups) of choice indices."""
        cin, cout = self._layer_widths(encs)
        return (cin * cout * self._flop_coef).sum(1) + self.traced.const_flops

    def params_batch(self, encs: np.ndarray) -> np.ndarray:
        cin, cout = self._layer_widths(encs)
        return (cin * cout * self._param_coef + cout * self._param_lin).sum(1) + self.traced.const_params

    def _layer_widths(self, encs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        encs = np.asarray(encs, dtype=np.int64)
        if encs.ndim != 2 or encs.shape[1] != len(self.groups):
            raise EncodingError(f"expected encodings of shape (N, {len(self.groups)}), got {encs.shape}")
        if (encs < 0).any() or (encs >= self._n_choices).any():
            bad = int(np.argwhere((encs < 0) | (encs >= self._n_choices))[0][1])
            raise EncodingError(f"choice out of range for group {self.groups[bad].name!r} "
                                f"(0..{self._n_choices[bad] - 1})")
        w = np.broadcast_to(self._base, (len(encs), len(self._base))).copy()  # (N, G)
        w[:, self._prunable] = self._choice_table[np.arange(len(self.groups)), encs]
        cin = w @ self._cin.T  # (N, L)
        cout = w @ self._cout.T
        cin = np.where(self._unit_in, 1, cin)  # depthwise convs see one input channel per filter
        if self.branches:  # the layers of a dropped branch cost nothing, those the group does not reach included
            gone = (encs[:, self._drop_pos] == 0).astype(np.int64) @ self._drop_layers > 0  # (N, L)
            cin, cout = np.where(gone, 0, cin), np.where(gone, 0, cout)
        return cin, cout

    def _build_tables(self) -> None:
        G, L = len(self.all_groups), len(self.layers)
        self._base = np.array([g.width for g in self.all_groups], dtype=np.int64)
        self._prunable = np.array(self.prunable_index, dtype=np.int64)
        self._n_choices = np.array(self.num_choices, dtype=np.int64)
        table = np.zeros((len(self.groups), max(self.num_choices, default=1)), dtype=np.int64)
        for i, g in enumerate(self.groups):
            table[i, : len(g.choices)] = g.choices
        self._choice_table = table
        self._cin = np.zeros((L, G), dtype=np.int64)
        self._cout = np.zeros((L, G), dtype=np.int64)
        self._unit_in = np.zeros(L, dtype=bool)
        self._flop_coef = np.zeros(L)  # MACs per (cin * cout)
        self._param_coef = np.zeros(L)  # weights per (cin * cout)
        self._param_lin = np.zeros(L)  # params per output channel (bias, BN affine)
        for i, layer in enumerate(self.layers):
            for seg in layer.in_layout:
                self._cin[i, seg.group] += seg.mult
            for seg in layer.out_layout:
                self._cout[i, seg.group] += seg.mult
            self._unit_in[i], self._flop_coef[i], self._param_coef[i], self._param_lin[i] = \
                kind_of(layer).costs(layer)
        self._drop_pos = np.array(sorted(self.branches), dtype=np.int64)
        names = {l.name: i for i, l in enumerate(self.layers)}
        self._drop_layers = np.zeros((len(self._drop_pos), L), dtype=np.int64)
        for d, pos in enumerate(self._drop_pos):
            for name in self.branches[int(pos)].layers:
                self._drop_layers[d, names[name]] = 1

    # ---- output -------------------------------------------------------------------------------
    def materialize(self, enc: Sequence[int], source: nn.Module | None = None) -> nn.Module:
        """A plain ``nn.Module`` with the encoding's real channel counts; see :mod:`hwprune.core.materialize`."""
        widths = self.widths(enc)
        dropped = [b for pos, b in self.branches.items() if widths[self.prunable_index[pos]] == 0]
        return materialize(self.layers, widths, self.model, source, self.traced, dropped)

    def describe(self, enc: Sequence[int] | None = None) -> list[dict]:
        """One row per prunable group: name, original width, choices and (given ``enc``) the width."""
        w = self.widths(enc) if enc is not None else None
        return [{"group": g.name, "width": g.width, "choices": len(g.choices), "min": g.choices[0],
                 "max": g.choices[-1], "members": len(g.members),
                 **({"chosen": int(w[i])} if w is not None else {})}
                for g, i in zip(self.groups, self.prunable_index)]

    def fixed_groups(self) -> list[tuple[str, int, str]]:
        """(name, width, reason) of every group that is not pruned."""
        return [(g.name, g.width, g.fixed_reason) for g in self.all_groups if g.fixed_reason]

    def __repr__(self) -> str:
        return (f"SearchSpace({type(self.model).__name__}, {len(self.groups)} prunable groups, "
                f"{len(self.layers)} layers, fingerprint={self.fingerprint})")


def _ignored_names(model: nn.Module, ignored) -> set[str]:
    names = {m: n for n, m in model.named_modules()}
    return {names.get(x, "?") if isinstance(x, nn.Module) else str(x) for x in ignored or ()}


def _structure(traced: TracedModel) -> dict:
    return {
        "inputs": [list(s[1:]) for s in traced.input_shapes],  # batch size is not structure
        "groups": [[g.name, g.width, g.fixed_reason is None] for g in traced.groups],
        "layers": [[l.name, l.kind, [[s.group, s.size, s.mult] for s in l.in_layout],
                    [[s.group, s.size, s.mult] for s in l.out_layout], l.depthwise, l.groups, l.kernel,
                    l.out_spatial, l.bias] for l in traced.layers],
        "const": [traced.const_params, traced.const_flops],
    }


def _fingerprint(traced: TracedModel) -> str:
    blob = json.dumps(_structure(traced), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _first_difference(traced: TracedModel, saved: dict) -> str:
    if [list(s[1:]) for s in traced.input_shapes] != [s[1:] for s in saved["input_shapes"]]:
        return f"input shapes {saved['input_shapes']} were saved"
    mine = [(g.name, g.width) for g in traced.groups if g.fixed_reason is None]
    theirs = [(g["name"], g["width"]) for g in saved["groups"]]
    for a, b in zip(mine, theirs):
        if a != b:
            return f"group {b[0]!r} (width {b[1]}) in the saved space, {a[0]!r} (width {a[1]}) in this model"
    if len(mine) != len(theirs):
        return f"the saved space has {len(theirs)} prunable groups, this model {len(mine)}"
    return "the layer shapes differ (same groups, other kernels, strides or input size)"

