"""Dropping residual branches (``drop_blocks=True``): which groups may, what the pruned network computes, and
that every model of cost (FLOPs, parameters, latency tables) and the ONNX export agree on what is gone."""
import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

import hwprune as hp
from hwprune.errors import HwpruneError, SpaceMismatchError
from hwprune.latency.kernels import kernel_slots
from hwprune.profilers.onnx_graphs import export_network
from hwprune.search.baselines import magnitude_encodings

from conftest import hook_macs
from latency_fakes import OVERHEAD_MS, FakeProfiler, fake_ms

SHAPES = {"resnet20": (1, 3, 32, 32), "mobilenet_v2_cifar": (1, 3, 32, 32)}


def _model(name, **kwargs):
    torch.manual_seed(0)
    model = hp.create_model(name, **kwargs).eval()
    for m in model.modules():  # non-trivial statistics, so that a wrong copy shows in the outputs
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def _blocks(name, model):
    """The blocks with an identity-or-projection shortcut, by module path, and the group each one drops with."""
    if name == "resnet20":
        return {f"layer{s}.{i}": f"layer{s}.{i}.conv1" for s in (1, 2, 3) for i in range(3)}
    return {n: f"{n}.conv.0.0" for n, m in model.named_modules() if getattr(m, "use_res", False)}


@pytest.mark.parametrize("name", list(SHAPES))
def test_every_block_with_a_shortcut_and_nothing_else_can_drop(name):
    model = _model(name)
    space = hp.SearchSpace.from_model(model, SHAPES[name], round_to=4, drop_blocks=True)
    droppable = {space.groups[p].name for p in space.branches}
    assert droppable == set(_blocks(name, model).values())
    assert all(g.droppable == (g.name in droppable) for g in space.groups)
    plain = hp.SearchSpace.from_model(model, SHAPES[name], round_to=4)
    assert not plain.branches and not any(g.droppable for g in plain.groups)
    # the other widths are unchanged: a droppable group gains 0 in front
    assert [g.choices[g.droppable:] for g in space.groups] == [g.choices for g in plain.groups]


def test_a_dropped_block_computes_what_the_network_without_it_computes():
    model = _model("resnet20")
    space = hp.SearchSpace.from_model(model, SHAPES["resnet20"], drop_blocks=True)
    names = [g.name for g in space.groups]
    enc = list(space.full())
    for block in ("layer1.1", "layer2.0", "layer3.2"):
        enc[names.index(f"{block}.conv1")] = 0
    pruned = space.materialize(enc, source=model).eval()
    reference = _model("resnet20")
    reference.layer1[1] = nn.Identity()  # a block's input is a ReLU's output: relu(0 + x) is x
    reference.layer3[2] = nn.Identity()
    block = reference.layer2[0]  # a projection shortcut's block without its branch: relu(downsample(x))
    reference.layer2[0] = nn.Sequential(block.downsample, nn.ReLU())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), reference(x))
    assert sum(p.numel() for p in pruned.parameters()) == space.params(enc) == \
        sum(p.numel() for p in reference.parameters())
    assert hook_macs(pruned, x[:1]) == space.flops(enc)
    assert not any(n.startswith(("layer1.1.", "layer2.0.conv", "layer3.2.")) for n, _ in pruned.named_modules())


@pytest.mark.parametrize("name", list(SHAPES))
def test_random_encodings_with_drops_match_their_costs_and_export(name):
    model = _model(name)
    space = hp.SearchSpace.from_model(model, SHAPES[name], round_to=4, drop_blocks=True)
    x = torch.randn(SHAPES[name])
    rng = np.random.default_rng(0)
    dropped_any = False
    for _ in range(6):
        enc = space.sample(rng)
        gone = sum(enc[p] == 0 for p in space.branches)
        dropped_any |= gone > 0
        pruned = space.materialize(enc, source=model).eval()
        assert pruned(x).shape == (1, 10)
        assert sum(p.numel() for p in pruned.parameters()) == space.params(enc)
        assert hook_macs(pruned, x) == space.flops(enc)
    assert dropped_any
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    per_block = 2 if name == "resnet20" else 3
    graph = onnx.load_from_string(export_network(pruned, SHAPES[name]))
    assert sum(n.op_type == "Conv" for n in graph.graph.node) == convs - per_block * gone


def test_uniform_and_magnitude_networks_never_drop_a_block():
    model = _model("resnet20")
    space = hp.SearchSpace.from_model(model, SHAPES["resnet20"], round_to=4, drop_blocks=True)
    for r in (0.01, 0.1, 0.5, 1.0):
        assert all(space.widths(space.uniform(r)) > 0)
    importance = {gi: np.r_[np.zeros(space.all_groups[gi].width - 1), 1.0] for gi in space.prunable_index}
    _, encs = magnitude_encodings(space, importance)
    assert (encs[:, sorted(space.branches)] >= 1).all()


def test_a_saved_space_keeps_its_drops_and_a_zero_width_elsewhere_is_refused():
    model = _model("resnet20")
    space = hp.SearchSpace.from_model(model, SHAPES["resnet20"], round_to=4, drop_blocks=True)
    again = hp.SearchSpace.from_json(space.to_json(), model)
    assert [g.choices for g in again.groups] == [g.choices for g in space.groups]
    assert again.branches.keys() == space.branches.keys()
    enc = space.sample(3)
    assert again.flops(enc) == space.flops(enc)
    saved = space.to_json().replace('"choices": [\n    4,', '"choices": [\n    0,\n    4,', 1)  # the stem's group
    with pytest.raises(SpaceMismatchError, match="'conv1' has width choice 0, but it is not on a residual branch"):
        hp.SearchSpace.from_json(saved, model)


def test_a_latency_table_counts_nothing_of_a_dropped_branch(tmp_path):
    model = _model("resnet20")
    space = hp.SearchSpace.from_model(model, SHAPES["resnet20"], round_to=8, drop_blocks=True)
    table = hp.profile(space, profiler=FakeProfiler(), cache_dir=tmp_path, calibrate=4, quiet=True)
    assert not (table.entries[["cin", "cout"]] == 0).any().any()  # nothing profiled at zero channels
    rng = np.random.default_rng(1)
    for _ in range(5):
        enc = space.sample(rng)
        pruned = space.materialize(enc, source=model).eval()
        real = hp.SearchSpace.from_model(pruned, SHAPES["resnet20"])  # the kernels the pruned network runs
        slots, _ = kernel_slots(real)
        w = real.widths(real.full())
        kernels = sum(fake_ms(s.spec, sum(int(w[g]) * k for g, k in s.cin), sum(int(w[g]) * k for g, k in s.cout))
                      for s in slots)
        # rows are stored rounded; any kernel counted or missed would cost at least 1e-3 ms (fake_ms)
        assert table.predict(enc) == pytest.approx(table.overhead_ms + table.scale * kernels, abs=2e-5)
        assert table.predict_batch([enc])[0] == pytest.approx(table.predict(enc), rel=1e-12)
    assert table.overhead_ms == pytest.approx(OVERHEAD_MS, abs=1e-5)  # its calibration networks drop blocks too


def test_a_table_learns_what_a_dropped_block_saves_beyond_its_kernels(tmp_path):
    """Where every kernel a network runs costs a fixed 2 us more inside it (dispatch, fused ops), a basic block
    (two convs) saves 4 us beyond its kernels' lookups: the calibration fits that, and predicts every network."""
    model = _model("resnet20")
    space = hp.SearchSpace.from_model(model, SHAPES["resnet20"], round_to=8, drop_blocks=True)
    table = hp.profile(space, profiler=FakeProfiler(per_kernel_ms=0.002), cache_dir=tmp_path, calibrate=8,
                       quiet=True)
    cal = table.meta["calibration"]
    assert table.block_ms == pytest.approx(0.004, abs=1e-4) and cal["block_ms"] == table.block_ms
    assert cal["loo_mape"]["constant+blocks"] < cal["loo_mape"]["constant"]
    encs = np.array([space.sample(s) for s in range(20)])
    dropped = table.dropped_batch(encs)
    assert dropped.max() > dropped.min()
    assert list(dropped) == [sum(e[p] == 0 for p in space.branches) for e in encs]
    measured = FakeProfiler(per_kernel_ms=0.002).measure_networks(
        [space.materialize(e) for e in encs], SHAPES["resnet20"])
    np.testing.assert_allclose(table.predict_batch(encs), [m.p10_ms for m in measured], atol=2e-5)
    assert [table.predict(e) for e in encs] == pytest.approx(list(table.predict_batch(encs)), abs=1e-12)
    # a space that drops nothing fits no such term
    plain = hp.SearchSpace.from_model(model, SHAPES["resnet20"], round_to=8)
    other = hp.profile(plain, profiler=FakeProfiler(per_kernel_ms=0.002), cache_dir=tmp_path, calibrate=8, quiet=True)
    assert other.block_ms == 0 and "block_ms" not in other.meta["calibration"]


def test_one_table_serves_the_space_with_and_without_dropped_blocks(tmp_path):
    """A dropped block has no kernel to measure, so a table profiled either way holds the same rows: loaded, searched
    or validated for the other space it predicts every network as that space's own table does."""
    model = _model("resnet20")
    blocks = hp.SearchSpace.from_model(model, SHAPES["resnet20"], round_to=8, drop_blocks=True)
    plain = hp.SearchSpace.from_model(model, SHAPES["resnet20"], round_to=8)
    made = {}
    for name, space in (("blocks", blocks), ("plain", plain)):
        made[name] = hp.profile(space, profiler=FakeProfiler(), cache_dir=tmp_path / "k", calibrate=4, quiet=True,
                                out=tmp_path / f"{name}.csv")
    for name, space, other in (("plain", blocks, "blocks"), ("blocks", plain, "plain")):
        table = hp.LatencyTable.load(tmp_path / f"{name}.csv", space, check_device=False)  # not refused
        assert [list(c) for c in table.meta["space"]["choices"]] == [list(g.choices) for g in space.groups]
        encs = np.array([space.sample(s) for s in range(12)] + [space.full(), space.narrowest()])
        # the same kernels: the two tables differ only in their calibration (fitted on other networks)
        expect = made[other].kernel_sum_batch(encs)
        np.testing.assert_allclose(table.kernel_sum_batch(encs), expect, atol=1e-9)
        np.testing.assert_allclose(table.predict_batch(encs), table.overhead_ms + table.scale * expect, atol=1e-9)
        assert table.block_ms == 0 or space.drop_blocks  # a per-block saving only where blocks drop
    # a table passed in Python is bound where it is used (here a PruningNet's sampling window; the search: the CLI
    # test below)
    window = hp.supernet.sampling.LatencyWindow.from_fraction(made["plain"], blocks, 0.5)
    assert window.hi_ms == pytest.approx(made["plain"].predict(plain.full()))
    assert any(c[0] == 0 for c in window.table.meta["space"]["choices"])
    other = hp.SearchSpace.from_model(model, SHAPES["resnet20"], round_to=4)
    with pytest.raises(hp.HwpruneError, match="width choices of group"):  # other widths stay refused
        hp.LatencyTable.load(tmp_path / "plain.csv", other, check_device=False)


def test_calibration_networks_drop_every_number_of_blocks_and_a_cost_per_block_is_fitted():
    """A table is calibrated on networks that drop from none to all of the blocks, so what a dropped block costs
    beyond its kernels is fitted, not extrapolated; where kernels cost less inside a network than alone (a negative
    saving per block) and the widest network lies off the line, the constant model with that cost is chosen over an
    affine one whose slope the widest network sets."""
    from hwprune.latency.calibration import fit_calibration
    from hwprune.latency.profiling import calibration_encodings

    model = _model("resnet20")
    space = hp.SearchSpace.from_model(model, SHAPES["resnet20"], round_to=8, drop_blocks=True)
    encs = calibration_encodings(space, 16, seed=0)
    dropped = [sum(e[p] == 0 for p in space.branches) for e in encs]
    assert len(set(encs)) == 16 and 0 in dropped and len(space.branches) in dropped and len(set(dropped)) >= 5
    plain = hp.SearchSpace.from_model(model, SHAPES["resnet20"], round_to=8)
    assert calibration_encodings(plain, 16, 0) == [tuple(e) for e in [plain.full(), plain.uniform(0.5)] + [
        plain.sample(r) for r in [np.random.default_rng(0)] for _ in range(14)]]  # (unchanged without blocks)
    assert space.widths(space.narrowest(keep_blocks=True)).tolist() == plain.widths(plain.narrowest()).tolist()
    # mobilenet_v2_cifar on a 2-core Xeon: measured = lookups - 0.27 ms + 12 us per dropped block, the widest +0.2
    rng = np.random.default_rng(0)
    sums = np.concatenate([[2.2], rng.uniform(0.5, 1.6, 15)])
    drops = np.concatenate([[0], rng.integers(0, 11, 15)])
    measured = sums - 0.27 + 0.012 * drops + rng.normal(0, 0.01, 16)
    measured[0] += 0.2
    cal = fit_calibration(measured, sums, dropped=drops)
    assert cal["model"] == "constant" and cal["block_ms"] == pytest.approx(-0.012, abs=0.005)
    assert fit_calibration(measured, sums)["model"] == "affine"  # (what the same networks chose without the term)
    assert cal["loo_mape"]["constant+blocks"] < min(cal["loo_mape"]["affine+blocks"], cal["loo_mape"]["affine"])


def test_a_pruningnet_refuses_a_space_that_drops_blocks():
    space = hp.SearchSpace.from_model(_model("resnet20"), SHAPES["resnet20"], round_to=8, drop_blocks=True)
    with pytest.raises(HwpruneError, match="cannot drop residual branches; build the space without drop_blocks"):
        hp.PruningNet(space)


def _cli(*args):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "hwprune.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)


def test_a_network_without_blocks_is_saved_reloaded_and_exported_as_it_computes(tmp_path):
    """retrain's checkpoint of an encoding that drops blocks reloads to the same network, and `hwprune export`
    writes it without those blocks' convs, computing what it computes."""
    from hwprune.data import load_dataset, make_loaders

    model = _model("resnet20", in_channels=1)  # the bundled digits' one channel
    space = hp.SearchSpace.from_model(model, (1, 1, 32, 32), round_to=8, drop_blocks=True)
    names = [g.name for g in space.groups]
    enc = list(space.uniform(0.5))
    for block in ("layer1.0", "layer1.2", "layer3.1"):
        enc[names.index(f"{block}.conv1")] = 0
    loaders = make_loaders(load_dataset("bundled").limit_train(64), 32, eval_batch_size=64)
    trained, _ = hp.retrain(space, enc, loaders.train, config=hp.TrainConfig(epochs=1, eval_ratios=()),
                            init="inherit", source=model, run_dir=tmp_path / "r", progress=False, log=lambda m: None)
    loaded, info = hp.load_pruned(tmp_path / "r" / "model.pt")
    assert info["encoding"] == enc
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained.eval()(x))
    r = _cli("export", "--checkpoint", tmp_path / "r" / "model.pt", "--out", tmp_path / "m.onnx", "--json")
    assert r.returncode == 0, r.stderr
    graph = onnx.load(tmp_path / "m.onnx")
    assert sum(n.op_type == "Conv" for n in graph.graph.node) == 21 - 2 * 3


@pytest.mark.slow  # (32 s: two searches and a retrain)
def test_the_cli_searches_with_dropped_blocks_by_default_and_a_channels_table_serves_it(tmp_path):
    """`hwprune search --evaluator inherit` searches the space with width-0 choices unless told --keep-blocks, under a
    table profiled for channels only, and retrain builds its winner."""
    torch.save(_model("resnet20", in_channels=1).state_dict(), tmp_path / "w.pt")
    model = hp.create_model("resnet20", in_channels=1)
    space = hp.SearchSpace.from_model(model, (1, 1, 32, 32), round_to=8, drop_blocks=True)
    plain = hp.SearchSpace.from_model(model, (1, 1, 32, 32), round_to=8)
    hp.profile(plain, profiler=FakeProfiler(), cache_dir=tmp_path / "k", calibrate=2, quiet=True,
               out=tmp_path / "plain.csv")
    search = ["search", "--evaluator", "inherit", "--model", "resnet20", "--weights", tmp_path / "w.pt", "--round-to",
              "8", "--table", tmp_path / "plain.csv", "--allow-mismatch", "--latency-fraction", "0.5", "--flops",
              "8M", "--parents", "2", "--calib-batches", "1", "--val-batches", "1", "--device", "cpu", "--quiet"]
    # (--allow-mismatch: the fake backend's table names another machine)
    r = _cli(*search, "--population", "6", "--mutations", "3", "--crossovers", "3", "--generations", "2",
             "--tune-steps", "1", "--out", tmp_path / "s")
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "s" / "result.json").read_text())
    table = hp.LatencyTable.load(tmp_path / "plain.csv", space, check_device=False)
    best = result["best"][0]
    assert best["flops"] <= 8e6 and best["latency_ms"] == pytest.approx(table.predict(best["encoding"]), abs=1e-4)
    stage = json.loads((tmp_path / "s" / "run.json").read_text())["stages"]["search"]
    assert stage["settings"]["dense"]["drop_blocks"] is True  # what retrain rebuilds the space with
    r = _cli("retrain", "--result", tmp_path / "s" / "result.json", "--epochs", "0", "--device", "cpu", "--quiet",
             "--out", tmp_path / "r")
    assert r.returncode == 0, r.stderr
    pruned, info = hp.load_pruned(tmp_path / "r" / "model.pt")
    assert hook_macs(pruned, torch.zeros(1, 1, 32, 32)) == space.flops(info["encoding"]) == best["flops"]
    r = _cli(*search, "--keep-blocks", "--population", "4", "--mutations", "2", "--crossovers", "2", "--generations",
             "1", "--tune-steps", "0", "--fill-rule", "saliency", "--out", tmp_path / "k2")
    assert r.returncode == 0, r.stderr
    stage = json.loads((tmp_path / "k2" / "run.json").read_text())["stages"]["search"]
    assert stage["settings"]["dense"]["drop_blocks"] is False
    assert stage["settings"]["search"]["fill_rule"] == "saliency"  # (the inherit evaluator has the saliency it needs)


def test_info_shows_which_groups_may_drop_their_block():
    r = _cli("info", "--model", "resnet20", "--round-to", "8")  # (the default)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines() if line.startswith(("conv1", "layer"))]
    assert sorted(row[0] for row in rows if row[3].startswith("0..")) == sorted(_blocks("resnet20", None).values())
    assert "width 0: the group's residual block removed (9 blocks may be dropped)" in r.stdout
    assert "width 0" not in _cli("info", "--model", "resnet20", "--round-to", "8", "--keep-blocks").stdout
