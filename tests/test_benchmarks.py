"""The comparison benchmark's own logic: the magnitude baseline it builds and how it reports."""
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import hwprune as hp

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("torch_pruning", reason="the magnitude baseline needs torch-pruning (pip install -e .[test])")
    spec = importlib.util.spec_from_file_location("accuracy_vs_latency", ROOT / "benchmarks" / "accuracy_vs_latency.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _convs(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2_cifar"])
def test_l1_prune_is_global_rounded_and_keeps_the_classifier(bench, name):
    torch.manual_seed(0)
    dense = hp.create_model(name, num_classes=10, in_channels=1).eval()
    s = bench.Settings()
    x = torch.randn(2, 1, 32, 32)
    pruned = bench.l1_prune(dense, 0.5, x[:1], s)
    widths = [c.out_channels for c in _convs(pruned)]
    dense_widths = [c.out_channels for c in _convs(dense)]
    assert pruned(x).shape == (2, 10)
    assert bench.classifier(pruned).out_features == 10
    assert all(w % s.round_to == 0 for w in widths)
    assert sum(widths) < 0.75 * sum(dense_widths)
    # a layer stops being pruned once past tp_max_ratio; its last step may overshoot a little, never to nothing
    assert all(w >= max(s.round_to, d * (1 - s.tp_max_ratio) / 2) for w, d in zip(widths, dense_widths))
    # global ranking: layers are pruned by different fractions, not one uniform ratio
    kept = {round(w / d, 2) for w, d in zip(widths, dense_widths) if d >= 16}
    assert len(kept) > 1
    assert bench.l1_prune(dense, 0.0, x[:1], s) is not dense  # ratio 0: an untouched copy


def test_l1_prune_keeps_the_largest_l1_channels(bench):
    torch.manual_seed(0)
    dense = hp.create_model("resnet20", num_classes=10, in_channels=1).eval()
    conv = dense.conv1 if hasattr(dense, "conv1") else _convs(dense)[0]
    with torch.no_grad():  # make the stem's channel 5 by far the strongest: it must survive pruning
        conv.weight[5] *= 50
    pruned = bench.l1_prune(dense, 0.6, torch.zeros(1, 1, 32, 32), bench.Settings())
    first = _convs(pruned)[0]
    norms = first.weight.abs().sum((1, 2, 3))
    assert norms.max() >= conv.weight[5].abs().sum() - 1e-4


def test_count_macs_agrees_with_the_search_space(rng):
    """The benchmark counts FLOPs of L1-pruned networks (outside any space) with count_macs."""
    from hwprune.core.macs import count_macs

    model = hp.create_model("resnet20", num_classes=10, in_channels=1).eval()
    space = hp.SearchSpace.from_model(model, (1, 1, 32, 32), round_to=4)
    for _ in range(3):
        enc = space.sample(rng)
        assert count_macs(space.materialize(enc), [torch.zeros(1, 1, 32, 32)]) == space.flops(enc)


def test_fit_ratio_finds_the_least_pruning_that_meets_the_budget(bench):
    measure_calls = []

    def measure(r):  # latency falls linearly with the ratio: 2 ms dense, 0.2 ms at 0.9
        measure_calls.append(r)
        return 2.0 - 2.0 * r

    ratio, ms, tried = bench.fit_ratio(measure, 1.0, 0.9, steps=10)
    assert ms <= 1.0 and ratio == pytest.approx(0.5, abs=0.9 / 2 ** 10 * 2)
    assert len(tried) == len(measure_calls) == 11
    with pytest.raises(hp.HwpruneError, match="over the 0.1000 ms budget"):
        bench.fit_ratio(measure, 0.1, 0.9, steps=3)


def test_summary_and_table(bench):
    rows = [{"model": "m", "method": meth, "budget_fraction": f, "budget_ms": b, "seed": seed,
             "test_acc": acc, "measured_ms": ms, "speedup": 2.0, "flops": 1e6,
             "predicted_of_budget": "" if b is None else 0.9876}
            for meth, f, b, seed, acc, ms in [
                ("dense", None, None, 0, 0.9, 1.0), ("dense", None, None, 1, 0.8, 1.2),
                ("hwprune", 0.5, 0.5, 0, 0.7, 0.5), ("hwprune", 0.5, 0.5, 1, 0.9, 0.5),
                ("hwprune", 0.5, 0.5, 2, 0.8, 0.5)]]
    summary = bench.summarise(rows)
    assert [(r["method"], r["seeds"]) for r in summary] == [("dense", 2), ("hwprune", 3)]
    assert summary[1]["test_acc_mean"] == pytest.approx(0.8)
    assert summary[1]["test_acc_std"] == pytest.approx(np.std([0.7, 0.9, 0.8], ddof=1), abs=1e-4)
    assert summary[0]["measured_ms_mean"] == pytest.approx(1.1)
    table = bench.markdown(summary)
    assert "| m | dense | dense | 0.8500 ± 0.0707 |" in table
    assert "| m | 50% (0.500 ms) | hwprune search (a) | 0.8000 ± 0.1000 |" in table
    assert table.splitlines()[3].endswith("| 98.8% |")  # the share of its budget the table says it uses
    # the previous protocol's figures beside the new ones, matched by model, method and budget
    before = [{"model": "m", "method": "hwprune", "budget_fraction": "0.5", "test_acc_mean": "0.6", "test_acc_std": "0.01"},
              {"model": "m", "method": "dense", "budget_fraction": "", "test_acc_mean": "0.5", "test_acc_std": "0"}]
    lines = bench.markdown(summary, before).splitlines()
    assert lines[2].endswith("| 0.5000 ± 0.0000 |") and lines[3].endswith("| 98.8% | 0.6000 ± 0.0100 |")


def test_l1_prune_shrinks_monotonically_with_the_ratio(bench):
    """The bisection on measured latency needs cost to fall as the ratio grows (one-step global pruning broke this)."""
    torch.manual_seed(0)
    dense = hp.create_model("mobilenet_v2_cifar", num_classes=10, in_channels=1).eval()
    s = bench.Settings()
    from hwprune.core.macs import count_macs

    x = torch.zeros(1, 1, 32, 32)
    flops = [count_macs(bench.l1_prune(dense, r, x, s), [x]) for r in (0.3, 0.6, 0.9)]
    assert flops[0] > flops[1] > flops[2]


@pytest.fixture(scope="module")
def fashion():
    pytest.importorskip("torch_pruning", reason="the L1 baseline needs torch-pruning (pip install -e .[test])")
    spec = importlib.util.spec_from_file_location("fashion_mnist", ROOT / "benchmarks" / "fashion_mnist.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_ranking_agreement(fashion):
    assert fashion.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # one discordant pair of six
    assert fashion.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert fashion.kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
    assert fashion.spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1)  # ties share their mean rank
    assert np.isnan(fashion.kendall_tau([1, 2, 3], [5, 5, 5]))  # a constant ranking agrees with nothing


def test_networks_chosen_with_another_search_size_are_chosen_again(fashion):
    s = fashion.Settings()
    said = []
    fresh = fashion.reusable({}, s, said.append)
    assert fresh == {"search": {k: getattr(s, k) for k in fashion.SEARCH_SETTINGS}, "meter": fashion.METER,
                     "space": fashion.SPACE, "seeds": fashion.SEEDS} and not said
    saved = {**fresh, "asked": {"0.3": 0.9}, "asked_rule": fashion.ASKED_RULE, "uniform": {"0.3": 1},
             "l1": {"0.3": 2}, "random": {"0.3": 3},
             "hwprune": {"0.3": 4}, "hwprune-pruningnet": {"0.3": 5}}
    assert fashion.reusable(saved, s, said.append) == saved and not said  # the same settings: all of it holds
    # the evolution's settings: searched again; random search's networks (no evolution) hold
    bigger = fashion.reusable(saved, fashion.replace(s, population=s.population + 1, bred=1.0), said.append)
    assert set(bigger) == {"search", "meter", "space", "seeds", "asked", "asked_rule", "uniform", "l1", "random"}
    assert bigger["search"]["population"] == s.population + 1
    assert f"population: {s.population} -> {s.population + 1}" in said[-1] and "keeping random search" in said[-1]
    rescored = fashion.reusable(saved, fashion.replace(s, calib_batches=s.calib_batches + 1), said.append)
    # (scored otherwise: random search's networks too)
    assert set(rescored) == {"search", "meter", "space", "seeds", "asked", "asked_rule", "uniform", "l1"}
    said.clear()
    older = {k: v for k, v in saved.items() if k != "search"}  # saved before the settings were kept: unknown
    assert set(fashion.reusable(older, s, said.append)) == {"search", "meter", "space", "seeds", "asked", "asked_rule",
                                                            "uniform", "l1"}
    assert said == ["  search settings not kept: searching again"]
    # chosen with the table asked for the budgets themselves: every network the table picked (uniform, random,
    # searched) again; L1's ratio, bisected on measured latency alone, holds
    unasked = fashion.reusable({k: v for k, v in saved.items() if k != "asked"}, s, said.append)
    assert set(unasked) == {"search", "meter", "space", "seeds", "l1"} and "every network but L1's again" in said[-1]
    # asked in one step (before the second): asked again, and so is every network the table picked
    one_step = fashion.reusable({k: v for k, v in saved.items() if k != "asked_rule"}, s, said.append)
    assert set(one_step) == {"search", "meter", "space", "seeds", "l1"} and "in one step" in said[-1]
    # chosen in the space without dropped blocks (before they could drop): their encodings code other networks
    channels = fashion.reusable({k: v for k, v in saved.items() if k != "space"}, s, said.append)
    assert set(channels) == {"search", "meter", "space", "seeds", "l1"} and "without dropped blocks" in said[-2]
    # held to the budget in ms alone (before the dense network was timed beside them), or beside the dense network
    # (before the references): nothing holds, L1 included
    unanchored = {k: v for k, v in saved.items() if k != "meter"}
    assert fashion.reusable(unanchored, s, said.append) == fresh and "in ms alone" in said[-1]
    assert fashion.reusable({**saved, "meter": "anchored"}, s, said.append) == fresh
    assert "beside the dense network, not beside reference networks" in said[-1]
    # the inherit searches started from the uniform and magnitude networks alone (before the saliency network):
    # searched again; the PruningNet's search (seeded with the uniform network alone) and every baseline hold
    unseeded = fashion.reusable({k: v for k, v in saved.items() if k != "seeds"}, s, said.append)
    assert set(unseeded) == set(saved) - {"hwprune"} and unseeded["seeds"] == fashion.SEEDS
    assert "started from uniform and magnitude, not uniform, magnitude, saliency" in said[-1]
    # saved before local_share was a setting (searched with redraws, its value now): all of it holds; searches with
    # local moves are searched again
    said.clear()
    before = {**saved, "search": {k: v for k, v in saved["search"].items() if k != "local_share"}}
    assert fashion.reusable(before, s, said.append) == saved and not said
    local = fashion.reusable(before, fashion.replace(s, local_share=0.5), said.append)
    assert "hwprune" not in local and "random" in local and "local_share: 0.0 -> 0.5" in said[-1]
    # saved before ramp was a setting (searched with the same bred share throughout): it holds without the ramp and
    # is searched again with it (random search kept)
    said.clear()
    flat = {**saved, "search": {k: v for k, v in saved["search"].items() if k != "ramp"}}
    assert fashion.reusable(flat, fashion.replace(s, ramp=False), said.append) == {
        **saved, "search": {**saved["search"], "ramp": False}} and not said
    ramped = fashion.reusable(flat, fashion.replace(s, ramp=True), said.append)
    assert "hwprune" not in ramped and "random" in ramped and "ramp: False -> True" in said[-1]


def test_networks_are_held_to_the_budget_beside_a_reference_of_their_size(fashion):
    """A machine 10% slower than when the budgets were set: a network at 95% of the budget measures 104.5% of its
    ms, yet beside a reference timed in the same run it reads what it did then, so it still meets the budget; and a
    disturbance that slows the big reference (the dense network's size) and not the small networks does not make
    them read fast: each is scaled by the reference nearest its own time."""
    seen = []

    def slower(items):  # latency of each item (its ms when the budgets were set) on a machine 10% slower now
        seen.append(list(items))
        return [1.1 * ms for ms in items]

    within = fashion.anchored(slower, [(1.0, 1.0), (3.0, 3.0)])  # references of 1 and 3 ms when the budgets were set
    assert within([0.95, 1.05, 2.9]) == pytest.approx([0.95, 1.05, 2.9])
    assert seen == [[1.0, 3.0, 0.95, 1.05, 2.9]]  # the references timed in the same interleaved run
    big_slowed = lambda items: [ms * (1.2 if ms >= 2 else 1.0) for ms in items]  # noqa: E731
    assert fashion.anchored(big_slowed, [(1.0, 1.0), (3.0, 3.0)])([0.9, 2.5]) == pytest.approx([0.9, 2.5])
    # beside the big reference alone (as beside the dense network), the small network read 17% fast
    assert fashion.anchored(big_slowed, [(3.0, 3.0)])([0.9])[0] == pytest.approx(0.75)
    assert fashion.held_ms(2.2, [1.1, 3.6], [1.0, 3.0]) == pytest.approx(1.8333, abs=1e-4)  # (nearest: 3.6)
    space = type("Space", (), {"materialize": staticmethod(lambda enc: enc)})()
    ms = {(1,): 0.95, (2,): 1.05}  # the fitter network is over the 1 ms budget, the other within it
    pool, said = [((2,), 0.9), ((1,), 0.8)], []
    held = fashion.fittest_within(pool, 1.0, lambda nets: within([ms[n] for n in nets]), space, 2, said.append)
    assert held == {"encoding": [1], "measured_rank": 1, "measured_ms": 0.95}
    # held to the ms alone, the slower machine would fail both and fall back to the fittest, over the budget
    alone = fashion.fittest_within(pool, 1.0, lambda nets: slower([ms[n] for n in nets]), space, 2, said.append)
    assert alone["measured_rank"] is None and "none of the first 2" in said[-1]
    # each batch is timed three times and judged by the median: one run 30% slow does not fail a network
    runs = iter([[1.3, 1.3], [0.9, 0.95], [0.92, 1.1]])
    assert fashion.fittest_within(pool, 1.0, lambda nets: next(runs), space, 2, said.append) == {
        "encoding": [2], "measured_rank": 0, "measured_ms": 0.92}


def test_references_added_later_are_timed_at_the_level_the_budgets_were_set(fashion):
    """A folder whose references were timed for one budget (a run at 50% alone), run later at 30% and 50% on a
    machine 10% slower: the 50% reference keeps its time, the 30% one is timed beside it and put at the level of
    then, and the dense latency (and so the budgets) stays; a run that needs no new reference times nothing."""
    speed = {(9,): 3.0, (5,): 1.5, (3,): 0.9}  # each encoding's ms when the budgets were set

    def slower(encs):
        timed.append(list(encs))
        return [1.1 * speed[e] for e in encs]

    timed = []
    first = fashion.with_references({}, [(5,)], lambda encs: [speed[e] for e in encs], (9,))
    assert first == {"measured_ms": 3.0, "references": [{"encoding": [5], "measured_ms": 1.5}]}
    both = fashion.with_references(first, [(3,), (5,)], slower, (9,))
    assert both["measured_ms"] == 3.0 and len(timed) == fashion.REPEATS
    assert timed[0] == [(9,), (5,), (3,)]  # the dense network, the kept reference, the new one, interleaved
    assert {tuple(r["encoding"]): r["measured_ms"] for r in both["references"]} == pytest.approx(
        {(5,): 1.5, (3,): 0.9})  # timed 0.99 ms now, 0.9 at the level of then (all again: 1.65 and 0.99)
    timed.clear()
    assert fashion.with_references(both, [(5,)], slower, (9,)) is both and not timed  # nothing new to time
    # a folder whose budgets were set before the references: its dense latency holds, its references timed now
    older = fashion.with_references({"measured_ms": 2.8}, [(5,)], slower, (9,))
    assert older == {"measured_ms": 2.8, "references": [{"encoding": [5], "measured_ms": pytest.approx(1.65)}]}


def test_the_table_is_asked_for_what_it_predicts_at_each_budget(fashion):
    """A table that over-predicts small networks more than large ones (an overhead it puts too high): each budget is
    asked of it as the median predicted / measured ratio of the networks it puts near that budget."""
    space = hp.SearchSpace.from_model(nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3)).eval(),
                                      (1, 3, 8, 8), ratios=(0.25, 0.5, 0.75, 1.0))

    class Table:  # predicted ms: 0.1 + the width index; "measured": the width index alone
        def predict_batch(self, encs):
            return 0.1 + np.asarray(encs, float).sum(axis=1)

    def measured(nets):  # widths 4, 8, 12, 16: index = width / 4 - 1
        return [float(next(m for m in n.modules() if isinstance(m, nn.Conv2d)).out_channels / 4 - 1) for n in nets]

    assert space.num_choices == [4]
    assert measured([space.materialize(e) for e in (space.full(), space.narrowest())]) == [3.0, 0.0]
    said = []
    asked = fashion.asked_budgets(space, Table(), [(0.3, 1.1), (0.5, 2.0)], measured, said.append, n=3)
    assert asked == pytest.approx({"0.3": 1.1 * 1.1 / 1.0, "0.5": 2.0 * 2.1 / 2.0}, abs=1e-5)  # (kept to 5 decimals)
    assert "asking the table for" in said[-1]
    # never as much as it puts the dense network at (3.1 ms): at most the widest random network's 2.1 ms, and said
    assert fashion.asked_budgets(space, Table(), [(0.9, 3.1)], measured, said.append, n=3) == {"0.9": 2.1}
    assert any("would let the dense network in" in line for line in said[-4:])

    class Growing:  # predicted 1, 3, 5, 7 ms where 1, 2, 3, 4 ms are measured: over-predicts more as networks grow
        def predict_batch(self, encs):
            return 2 * np.asarray(encs, float).sum(axis=1) + 1

    def measured_1(nets):
        return [m + 1 for m in measured(nets)]

    # the network measured at the 3 ms budget is predicted at 5 ms: the first step, on the networks predicted near
    # 3 ms (measured 2 ms, 1.5x), asks for 4.5 ms; the second, on those predicted near 4.5 ms (5 ms, 3 measured)
    assert fashion.asked_budgets(space, Growing(), [(0.5, 3.0)], measured_1, said.append, n=3, steps=1) == \
        pytest.approx({"0.5": 4.5})
    assert fashion.asked_budgets(space, Growing(), [(0.5, 3.0)], measured_1, said.append, n=3) == \
        pytest.approx({"0.5": 5.0})


def test_uniform_is_the_widest_width_measured_within_the_budget(fashion):
    """The uniform baseline is held to the measured budget, as L1's ratio and the searched networks are."""
    class Space:  # four uniform widths, 1-4 ms predicted
        def uniform(self, r):
            return (min(3, int(r * 4)),) * 2

        def narrowest(self):
            return (0, 0)

        def full(self):
            return (3, 3)

        def materialize(self, enc):
            return enc

    class Table:
        def predict(self, enc):
            return 1.0 + enc[0]

    def meter(slower):
        return lambda nets: [Table().predict(e) + slower for e in nets]

    said = []

    def pick(budget, slower, asked=None):
        return fashion.uniform_within(Space(), Table(), budget, meter(slower), 2, said.append, asked)

    # timed widest first from those the table puts up to 25% over the budget: the widest measured within it
    assert pick(2.5, 0.3) == {"encoding": [1, 1], "measured_rank": 1, "measured_ms": 2.3}
    assert pick(2.5, 0.6) == {"encoding": [0, 0], "measured_rank": 2, "measured_ms": 1.6}  # measured over: narrower
    assert "candidate 3 in width order" in said[-1]
    # a table that puts networks 0.6 ms high: the width it puts over the budget is timed, and meets it
    assert pick(2.5, -0.6) == {"encoding": [2, 2], "measured_rank": 0, "measured_ms": 2.4}
    assert pick(2.3, -0.8, asked=2.6) == {"encoding": [2, 2], "measured_rank": 0, "measured_ms": 2.2}
    assert pick(0.5, 0.0)["encoding"] == [0, 0]  # nothing predicted near it: the narrowest, and it says so
    assert pick(0.5, 0.0)["measured_rank"] is None and "none of the first 1 in width" in said[-1]
    # the full width is the dense network, not a uniform one, however far under the budget it measures
    assert pick(10.0, 0.0) == {"encoding": [2, 2], "measured_rank": 0, "measured_ms": 3.0}
    # a loaded machine: every width the table admits (asked 2x the budget) measures over it; each is timed and
    # the narrowest is kept, never the widest
    assert pick(3.5, 3.0, asked=7.0) == {"encoding": [0, 0], "measured_rank": None, "measured_ms": None}
    assert "none of the first 3 in width order" in said[-1] and "keeping the narrowest" in said[-1]
    assert pick(3.5, 2.0, asked=7.0) == {"encoding": [0, 0], "measured_rank": 2, "measured_ms": 3.0}  # the 3rd


def test_a_kept_fashion_run_resumes_with_other_seeds_but_not_other_training(fashion):
    claim = lambda **kw: fashion.claimed(fashion.Settings(**kw))  # noqa: E731
    assert claim(seeds=[0]) == claim(seeds=[0, 1, 2]) == claim(population=8)  # seeds add folders; searches re-run
    assert claim(finetune_epochs=4) != claim() != claim(limit=100)
    assert claim(per_model={"resnet20": {"seeds": [0]}}) == claim(per_model={"resnet20": {}})


def test_l1_ratio_bisects_measured_latency_and_keeps_its_largest_ratio_where_none_meets(fashion):
    s = fashion.Settings(tp_max_ratio=0.8, tp_steps=6)
    said, tried = [], []

    def latency(r):  # 2 ms unpruned, falling linearly to 0.4 ms at 80%
        tried.append(r)
        return 2.0 - 2.0 * r

    ratio = fashion.l1_ratio(latency, 1.0, s, said.append)
    assert 0.5 <= ratio < 0.5 + 0.8 / 2 ** 6 and latency(ratio) <= 1.0 and len(tried) == 1 + 6 + 1 and said == []
    assert fashion.l1_ratio(latency, 0.3, s, said.append) == 0.8  # even 80% measures 0.4 ms: that network, said
    assert len(said) == 1 and "0.3000 ms budget" in said[0] and "80% one" in said[0]


def test_a_fine_tune_from_the_teachers_kept_outputs_is_the_fine_tune_from_the_teacher(fashion, tmp_path):
    """The dense network's outputs, computed once per seed, stand in for it in every fine-tune of that seed: the
    same weights to the bit, every batch found; a batch it never saw is computed by the teacher."""
    from dataclasses import asdict

    q = fashion.Settings(**fashion.QUICK)
    sd = asdict(q)
    dense_job = {"kind": "dense", "model": "resnet20", "seed": 0, "settings": sd, "out": str(tmp_path / "d" /
                                                                                           "result.json")}
    fashion.finetune_job(dense_job)
    dense_path = tmp_path / "d" / "model.pt"
    space = fashion.blocks_space(fashion.setup("resnet20", q)[0], q)
    enc = [max(0, c // 2) for c in space.num_choices]
    jobs = [{"kind": "finetune", "model": "resnet20", "seed": 1, "settings": sd, "dense": str(dense_path),
             "encoding": enc, "ratio": None, "out": str(tmp_path / k / "result.json")} for k in ("plain", "kept")]
    teachers = fashion.teacher_jobs("resnet20", q, dense_path, [1], jobs[1:])
    assert "teacher_outputs" not in jobs[0] and jobs[1]["teacher_outputs"].endswith("_s1.pt")
    made = fashion.finetune_job(teachers[0])
    batches = q.finetune_epochs * len(fashion.setup("resnet20", q, 1)[1].train)
    assert made["batches"] == batches > 0
    plain, kept = (fashion.finetune_job(j) for j in jobs)
    assert plain["test_acc"] == kept["test_acc"] and plain["val_acc"] == kept["val_acc"]
    a, b = (hp.load_pruned(tmp_path / k / "model.pt")[0].state_dict() for k in ("plain", "kept"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # every batch of the seed's epochs is found, the teacher's output as a fine-tune runs it (channels last on the
    # CPU); another batch is the teacher's own output
    from hwprune.training.memory_format import channels_last

    dense, _ = hp.load_pruned(dense_path)
    teacher = fashion.teacher_for(jobs[1], dense).eval()
    _, loaders = fashion.setup("resnet20", q, 1)
    with torch.no_grad():
        for epoch in range(q.finetune_epochs):
            loaders.train.sampler.set_epoch(epoch)
            loaders.train.dataset.set_epoch(epoch)
            for x, _ in loaders.train:
                with channels_last(dense):
                    assert torch.equal(teacher(x), dense.eval()(x))
        assert teacher.hits == batches and teacher.misses == 0
        x = torch.randn(4, *loaders.input_shape)
        assert torch.equal(teacher(x), dense(x)) and teacher.misses == 1
    # a job whose outputs were never made distils from the dense network itself
    assert fashion.teacher_for({**jobs[1], "teacher_outputs": str(tmp_path / "none.pt")}, dense) is dense
    # other training settings: other outputs
    assert fashion.teacher_jobs("resnet20", fashion.replace(q, finetune_epochs=2), dense_path, [1], [])[0]["out"] != \
        teachers[0]["out"]


def test_fashion_mnist_runs_the_compared_methods_by_default_and_the_ablations_on_request(fashion):
    """The default run has every method the comparison needs (one PruningNet); --ablations adds the rest, in the same
    work folder (which methods run is not a setting the folder is claimed with)."""
    from dataclasses import replace

    s = fashion.Settings()
    assert fashion.methods(s) == ("uniform", "l1", "random", "hwprune", "hwprune-pruningnet")
    more = replace(s, **fashion.ABLATIONS)
    assert fashion.methods(more) == fashion.methods(s)[:4] + ("hwprune-channels", "hwprune-rerank",
                                                              "hwprune-inherit-bn", "hwprune-pruningnet",
                                                              "hwprune-pruningnet-single")
    assert more.pnet_tau_only and fashion.claimed(more) == fashion.claimed(s)
    # how many candidates are scored again, and how long, is hwprune-rerank's own (chosen.json keeps it)
    assert fashion.claimed(replace(s, rerank_top=4, rerank_steps=100, rerank_baselines=False)) == fashion.claimed(s)
    # so is how hwprune's network is picked from its search (--pick-top, --pick-draws): picked again, not searched
    assert fashion.claimed(replace(s, pick_top=4, pick_draws=3, fill=False)) == fashion.claimed(s)
    # kept picks hold by default but for the fill (picks from before it were unfilled: picked again, filled)
    assert {k: getattr(s, k) for k in fashion.PICK_SETTINGS} == {**fashion.PICK_BEFORE, "fill": True}
    assert "hwprune-rerank" not in fashion.methods(replace(more, rerank_top=0))
    # --val-batches / --rerank-top / --rerank-steps: for every model, over mobilenet_v2_cifar's own settings too
    given = fashion.overridden(s, val_batches=6, rerank_steps=None)
    assert {m: given.for_model(m).val_batches for m in ("resnet20", "mobilenet_v2_cifar")} == \
        {"resnet20": 6, "mobilenet_v2_cifar": 6}
    assert s.for_model("mobilenet_v2_cifar").val_batches == 4 and given.rerank_steps == s.rerank_steps
    # --finetune-epochs: the same, and a folder of the other length is another run's (its fine-tunes differ)
    longer = fashion.overridden(s, finetune_epochs=6)
    assert {longer.for_model(m).finetune_epochs for m in ("resnet20", "mobilenet_v2_cifar")} == {6}
    assert s.for_model("mobilenet_v2_cifar").finetune_epochs == 2 and fashion.claimed(longer) != fashion.claimed(s)
    assert "hwprune-rerank" not in fashion.methods(more.for_model("mobilenet_v2_cifar"))
    assert "hwprune-channels" not in fashion.methods(more.for_model("mobilenet_v2_cifar"))
    assert fashion.claimed(replace(s, channels=True)) == fashion.claimed(s)  # a method switch: the folder resumes
    assert fashion.claimed(replace(s, finetune_epochs=4)) != fashion.claimed(s)  # how a method runs still counts


def test_a_work_folder_claimed_with_settings_no_longer_claimed_is_still_the_runs(fashion, tmp_path):
    """A folder claimed before the method lists stopped counting resumes; one with another real setting is refused,
    and a fresh claim records the settings as they are now."""
    import json
    from dataclasses import asdict

    common = _bench_module("bench_common")
    s = fashion.Settings()
    old = {**asdict(s), "per_model": {m: dict(o) for m, o in s.per_model.items()}}  # what the claim held before
    for k in ("models", "only", "tau_models", "seeds", "tau_block_candidates",
              *fashion.SEARCH_SETTINGS, *fashion.RERANK_SETTINGS, *fashion.PICK_SETTINGS):
        old.pop(k)
        for o in old["per_model"].values():
            o.pop(k, None)
    assert "pnet_methods" in old and "pnet_methods" in old["per_model"]["mobilenet_v2_cifar"]
    (tmp_path / "settings.json").write_text(json.dumps(old))
    common.claim_work(tmp_path, fashion.claimed(s), unclaimed=fashion.METHOD_LISTS)
    assert json.loads((tmp_path / "settings.json").read_text()) == fashion.claimed(s)
    (tmp_path / "settings.json").write_text(json.dumps({**old, "finetune_epochs": 9}))
    with pytest.raises(SystemExit, match="other settings"):
        common.claim_work(tmp_path, fashion.claimed(s), unclaimed=fashion.METHOD_LISTS)


def test_fashion_mnist_quick_run_writes_every_method_at_every_budget(fashion, tmp_path):
    """--quick on the bundled data: the CSVs' shape and invariants (not their accuracies, which mean nothing)."""
    import csv as csvmod

    out = tmp_path / "out"
    out.mkdir()  # an earlier run of another model: its rows stay
    earlier = [c for c in fashion.COLUMNS if c != "held_ms"]  # (written before the column was)
    (out / "fashion_mnist_quick.csv").write_text(",".join(earlier) + "\n" + "kept_net,bundled,dense,,,0,0.5,0.5,"
                                                 "1.0,1.0,1.0,,100,10,,1.0\n")
    (out / "fashion_mnist_quick_tau.csv").write_text(",".join(fashion.TAU_COLUMNS) + "\nkept_net,inherit,16,0.5,0.6,True\n")
    (out / "fashion_mnist_quick.env.json").write_text(json.dumps({"settings": {"models": ["kept_net"]}, "seconds": 7}))
    fashion.main(["--quick", "--workers", "1", "--work", str(tmp_path / "work"), "--out", str(out)])
    # each model's part of the time: the kept rows' from the run that wrote them, this run's own
    env = json.loads((out / "fashion_mnist_quick.env.json").read_text())
    assert set(env["model_seconds"]) == {"kept_net", "resnet20"} and env["model_seconds"]["kept_net"] == 7
    assert isinstance(env["model_seconds"]["resnet20"], int)  # (this run's own record: whole seconds, not carried)
    read = lambda name: list(csvmod.DictReader(  # noqa: E731
        line for line in (out / name).read_text().splitlines() if not line.startswith("#")))
    rows, tau = read("fashion_mnist_quick.csv"), read("fashion_mnist_quick_tau.csv")
    assert rows[0]["model"] == tau[0]["model"] == "kept_net"
    rows, tau = rows[1:], tau[1:]
    assert list(rows[0]) == fashion.COLUMNS and list(tau[0]) == fashion.TAU_COLUMNS
    q = fashion.Settings(**fashion.QUICK)
    pruned = [r for r in rows if r["method"] != "dense"]
    then = json.loads((tmp_path / "work" / "quick" / "resnet20" / "dense_latency.json").read_text())
    dense_then = then["measured_ms"]  # when the budgets were set; the references' then, and in the final timing
    refs_then = [r["measured_ms"] for r in then["references"]]
    refs_now = json.loads((tmp_path / "work" / "quick" / "resnet20" / "measured.json").read_text())["references"]
    assert len(refs_then) == len(refs_now) == len(q.fractions) and float(rows[0]["held_ms"]) == round(dense_then, 4)
    assert [r["method"] for r in rows].count("dense") == 1
    methods = fashion.methods(q)
    assert methods == ("uniform", "l1", "random", "hwprune", "hwprune-channels", "hwprune-rerank",
                       "hwprune-inherit-bn", "hwprune-pruningnet")
    assert {(r["method"], r["seed"]) for r in pruned} == {(m, str(s)) for m in methods for s in q.seeds}
    assert len(pruned) == len(methods) * len(q.seeds) * len(q.fractions)
    # the table was asked for what it predicts at each budget: a positive level near the budget, kept for a rerun
    chosen = json.loads((tmp_path / "work" / "quick" / "resnet20" / "chosen.json").read_text())
    asked = {float(f): ms for f, ms in chosen["asked"].items()}
    assert all("steered" in chosen[m][str(f)] for m in methods if m.startswith("hwprune") for f in q.fractions)
    assert sorted(asked) == sorted(q.fractions) and all(ms > 0 for ms in asked.values())
    for r in pruned:
        assert 0 <= float(r["test_acc"]) <= 1 and float(r["measured_ms"]) > 0 and r["within_budget"] in ("True", "False")
        # chosen by the table: predicted within what it was asked for at this budget (the CSV rounds to 0.1 us);
        # uniform widths are timed from those it puts up to UNIFORM_SLACK x over it, and the first measured within wins
        # a search asks for what it predicts for its fittest at the budget as measured, after steer_after generations
        slack = fashion.UNIFORM_SLACK if r["method"] == "uniform" else 1.0
        steered = chosen[r["method"]][r["budget_fraction"]].get("steered") if r["method"] != "l1" else None
        if steered:
            assert steered["generation"] == q.steer_after and steered["measured"] <= q.measure_top
            assert steered["asked_before_ms"] == pytest.approx(asked[float(r["budget_fraction"])])
        if r["method"] != "l1":
            limit = steered["asked_ms"] if steered else asked[float(r["budget_fraction"])]
            assert float(r["predicted_ms"]) <= slack * limit + 1e-4
        assert float(r["flops"]) < float(rows[0]["flops"])  # every pruned network is smaller than the dense one
        # held to its budget as the reference nearest it, then over now in this run, scales it
        now = float(r["measured_ms"])
        k = min(range(len(refs_now)), key=lambda i: abs(np.log(refs_now[i] / now)))
        at_budget_time = now * refs_then[k] / refs_now[k]
        assert float(r["held_ms"]) == pytest.approx(at_budget_time, abs=2e-4)  # (the CSV rounds to 0.1 us)
        if abs(at_budget_time - float(r["budget_ms"])) > 1e-3:  # (not where the CSV's rounding decides)
            assert r["within_budget"] == str(at_budget_time <= float(r["budget_ms"]))
    # one network per method and budget: every seed fine-tunes the same encoding, of the default search's space
    # (where a residual block may be dropped); the baselines and hwprune-channels keep every block
    space = fashion.blocks_space(fashion.setup("resnet20", q)[0], q)
    for m in methods:
        assert len({r["flops"] for r in pruned if r["method"] == m}) == 1
        if m == "l1":
            continue
        enc = chosen[m][str(q.fractions[0])]["encoding"]
        assert json.loads((tmp_path / "work" / "quick" / "resnet20" / f"{m}_{q.fractions[0]}_s{q.seeds[0]}" /
                           "result.json").read_text())["encoding"] == enc
        assert float(next(r["flops"] for r in pruned if r["method"] == m)) == space.flops(enc)
        if m in ("uniform", "hwprune-channels", "hwprune-pruningnet"):
            assert all(enc[p] for p in space.branches)
    # every PruningNet variant is scored on the tau networks that keep their blocks, searched or not; the inherit
    # evaluators of the default space on those that drop some too
    assert sorted(t["evaluator"] for t in tau) == ["channels", "inherit", "inherit-bn", "pruningnet",
                                                   "pruningnet-single"]
    assert [t["default"] for t in tau].count("True") == 1
    assert {t["evaluator"]: int(t["candidates"]) for t in tau} == {
        "inherit": q.tau_candidates + q.tau_block_candidates, "inherit-bn": q.tau_candidates + q.tau_block_candidates,
        "channels": q.tau_candidates, "pruningnet": q.tau_candidates, "pruningnet-single": q.tau_candidates}
    dropped = [json.loads((tmp_path / "work" / "quick" / "resnet20" / f"tau_blocks_{k}" / "result.json").read_text())[
        "encoding"] for k in range(q.tau_block_candidates)]
    assert all(any(e[p] == 0 for p in space.branches) for e in dropped)
    assert (tmp_path / "out" / "fashion_mnist_quick.png").stat().st_size > 0
    # the summary shows each method's latency as a share of the dense network's, both when the budgets were set
    searched = [float(r["held_ms"]) for r in pruned if r["method"] == "hwprune"]
    assert f"| {np.mean(searched) / float(rows[0]['held_ms']):.1%} |" in (out / "fashion_mnist_quick.md").read_text()
    # the baselines say how they were chosen; one chosen the old way (no rule: by the table alone) is chosen again
    assert all(c["rule"] == fashion.UNIFORM_RULE for c in chosen["uniform"].values())
    assert all(c["repeats"] == fashion.REPEATS for c in chosen["l1"].values())
    old = {f: {k: v for k, v in c.items() if k != "rule"} for f, c in chosen["uniform"].items()}
    (tmp_path / "work" / "quick" / "resnet20" / "chosen.json").write_text(json.dumps({**chosen, "uniform": old}))
    # a run of some methods alone, in the same work folder: their rows, no others, no tau
    fashion.main(["--quick", "--workers", "1", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "some"),
                  "--methods", "uniform", "hwprune", "--no-tau"])
    some = list(csvmod.DictReader(line for line in (tmp_path / "some" / "fashion_mnist_quick.csv").read_text()
                                  .splitlines() if not line.startswith("#")))
    assert sorted({r["method"] for r in some}) == ["dense", "hwprune", "uniform"]
    again = json.loads((tmp_path / "work" / "quick" / "resnet20" / "chosen.json").read_text())
    assert all(c["rule"] == fashion.UNIFORM_RULE for c in again["uniform"].values())
    assert again["hwprune"] == chosen["hwprune"]  # (searched networks are kept: only uniform's rule changed)
    assert {(r["method"], r["seed"], r["test_acc"]) for r in some if r["method"] == "hwprune"} <= {
        (r["method"], r["seed"], r["test_acc"]) for r in rows}
    assert (tmp_path / "some" / "fashion_mnist_quick_tau.csv").read_text().splitlines()[-1].startswith("model,")
    with pytest.raises(SystemExit):
        fashion.main(["--quick", "--methods", "uniform", "magic"])
    # in that folder: each pick scored again as the search scores, and a search with one mutation and one crossover
    # per generation (the rest random), on the table alone under what the default search asked after steering
    import pandas as pd

    f = str(q.fractions[0])
    _bench_module("search_exploration").main(["--quick", "--work", str(tmp_path / "work" / "quick" / "resnet20"),
                                              "--fraction", f, "--mutations", "1", "--workers", "1", "--out",
                                              str(tmp_path / "explore")])
    explored = pd.read_csv(tmp_path / "explore" / "search_exploration_quick.csv", comment="#")
    assert list(explored.network[:4]) == ["uniform", "random", "hwprune", "hwprune-pruningnet"]
    assert explored.fitness.between(0, 1).all() and len(explored) == 5
    assert list(explored.flops[:4]) == [space.flops(again[m][f]["encoding"]) for m in explored.network[:4]]
    assert explored.predicted_ms.iloc[4] <= again["hwprune"][f]["steered"]["asked_ms"] + 1e-4


@pytest.mark.slow  # (2-3 min on 2 cores: two benchmarks' quick runs, in `pytest -m slow`)
def test_within_budget_quick_run_scores_networks_of_one_budget(fashion, tmp_path):
    """--quick: per budget the random networks lie within 92-100% of it (predicted), the widest uniform one under it
    comes after them (--saliency: then the latency-saliency network, under it too), and every score has its tau row
    (not the taus themselves, which mean nothing here)."""
    import pandas as pd

    wb = _bench_module("within_budget")
    wb.main(["--quick", "--workers", "1", "--saliency", "--work", str(tmp_path / "work"), "--out", str(tmp_path)])
    rows = pd.read_csv(tmp_path / "within_budget_quick.csv", comment="#")
    tau = pd.read_csv(tmp_path / "within_budget_quick_tau.csv", comment="#")
    scores = ["macs", *(f"inherit-{k}" for k in wb.STEPS), f"inherit-20x{wb.DRAWS}"]
    assert list(rows.columns) == wb.COLUMNS + scores and len(rows) == 5  # 3 random, the uniform one, the saliency one
    assert rows["uniform"].tolist() == [False, False, False, True, False]
    assert rows["source"].tolist() == ["random"] * 3 + ["uniform", "saliency"] and not rows["picked"].any()
    sal = rows.iloc[4]
    assert sal["predicted_ms"] <= sal["budget_ms"] + 1e-4 and sal["encoding"] not in rows["encoding"][:4].tolist()
    random = rows[rows["source"] == "random"]
    assert ((random["predicted_ms"] <= random["budget_ms"] + 1e-4)
            & (random["predicted_ms"] >= 0.92 * random["budget_ms"] - 1e-4)).all()
    assert random["flops"].is_monotonic_increasing and (rows["macs"] == rows["flops"]).all()
    assert rows[scores[1:]].apply(lambda c: c.between(0, 1)).all().all()
    assert list(wb._Rotated(range(5), 7)) == [2, 3, 4, 0, 1]  # another draw of the batches: the same pass, rotated
    assert sorted(tau["score"]) == sorted(scores) and (tau["candidates"] == 5).all()


def test_within_budget_takes_each_budgets_fittest_searched_networks_and_the_one_chosen(tmp_path):
    """--search-top: of the state whose budget is the one fashion_mnist.py asked for, the K fittest networks evaluated
    for that budget (each once), and the chosen one (the fittest measured within it) even where it ranks lower."""
    wb = _bench_module("within_budget")
    work = tmp_path / "resnet20"
    hist = [{"budget": b, "encoding": e, "fitness": f, "latency_ms": 0.1}
            for b, e, f in [(0, [1, 1], 0.5), (0, [2, 2], 0.9), (1, [3, 3], 0.99), (0, [1, 1], 0.5), (0, [0, 4], 0.7),
                            (0, [4, 0], 0.6)]]
    for k, (name, asked) in enumerate((("hwprune_search_old", [0.5, 0.2]), ("hwprune_search_new", [0.2, 0.3]))):
        (work / name).mkdir(parents=True)
        (work / name / "search_state.json").write_text(json.dumps(
            {"budgets": [{"latency_ms": a} for a in asked], "history": hist}))
        os.utime(work / name / "search_state.json", (1e9 + k, 1e9 + k))  # the newest state is read first
    (work / "chosen.json").write_text(json.dumps({"asked": {"0.3": 0.2}, "hwprune": {"0.3": {"encoding": [1, 1]}}}))
    picks = wb.search_picks(work, [(0.3, 0.21)], 2)
    # budget 0 of the newest state is the asked 0.2 ms: its networks, fittest first, then the chosen one
    assert [(p["encoding"], p["picked"]) for p in picks] == [([2, 2], False), ([0, 4], False), ([1, 1], True)]
    assert all(p["source"] == "search" and p["fraction"] == 0.3 for p in picks)
    (work / "chosen.json").write_text(json.dumps({"asked": {"0.5": 0.4}, "hwprune": {"0.5": {"encoding": [1, 1]}}}))
    with pytest.raises(SystemExit, match="no search state"):
        wb.search_picks(work, [(0.5, 0.3)], 2)
    (work / "chosen.json").write_text("{}")
    with pytest.raises(SystemExit, match="no hwprune search chosen"):
        wb.search_picks(work, [(0.3, 0.21)], 2)


@pytest.mark.slow  # (2-3 min on 2 cores: two benchmarks' quick runs, in `pytest -m slow`)
def test_search_variance_quick_run_fine_tunes_each_search_seeds_winner(fashion, tmp_path):
    """--quick: one winner per search seed and pick (the default, filled, and the same search's without the fill),
    each within the budget as measured (and as the steered search last asked the table), fine-tuned with every seed
    (once where both picks chose one network), and the summary spreads the winners' means and the fill's move (not
    the accuracies, which mean nothing here)."""
    import pandas as pd

    sv = _bench_module("search_variance")
    sv.main(["--quick", "--workers", "1", "--work", str(tmp_path / "work"), "--out", str(tmp_path)])
    # the default's searches ramp their bred share and fill their winners: kept and written apart from others
    assert fashion.Settings().ramp and fashion.Settings().fill
    assert not (tmp_path / "search_variance_quick.csv").exists()
    assert not (tmp_path / "search_variance_quick_ramp.csv").exists()
    folder = tmp_path / "work" / "quick" / "resnet20" / "search_variance_ramp_fill"
    rows = pd.read_csv(tmp_path / "search_variance_quick_ramp_fill.csv", comment="#")
    q = fashion.Settings(**fashion.QUICK)
    assert list(rows.columns) == sv.COLUMNS and len(rows) == 2 * 2 * len(q.seeds)  # search seeds 0, 1; two picks
    assert sorted(zip(rows["search_seed"], rows["pick"], rows["seed"])) == \
        [(k, p, t) for k in (0, 1) for p in ("default", "no-fill") for t in q.seeds]
    assert rows["fitness"].between(0, 1).all() and (rows.loc[rows["pick"] == "no-fill", "filled"] == 0).all()
    for _, r in rows.iterrows():  # (a steered search's winner, filled to its ask, may be predicted over the budget)
        if r["measured_ms"] == r["measured_ms"]:  # (NaN: none of the fittest measured within it)
            assert r["measured_ms"] <= r["budget_ms"] + 1e-4
        state = json.loads((folder / f"{r['budget_fraction']}_search{r['search_seed']}" /
                            "search_state.json").read_text())
        asked = (state["evolutions"][0]["steered"] or {}).get("asked_ms", r["budget_ms"])
        assert r["predicted_ms"] <= asked + 1e-4
    for _, got in rows.groupby(["search_seed", "pick"]):  # one network per search and pick, each seed
        assert got["encoding"].nunique() == 1 and got["fitness"].nunique() == 1
    for (k, t), got in rows.groupby(["search_seed", "seed"]):  # a network both picks chose: fine-tuned once
        if got["encoding"].nunique() == 1:
            assert got["test_acc"].nunique() == 1 and not (folder / f"{q.fractions[0]}_search{k}" /
                                                           f"no-fill_s{t}").exists()
        else:
            assert (folder / f"{q.fractions[0]}_search{k}" / f"no-fill_s{t}" / "result.json").exists()
    text = (tmp_path / "search_variance_quick_ramp_fill.md").read_text()
    for pick, got in rows.groupby("pick"):
        means = got.groupby("search_seed")["test_acc"].mean()
        assert f"({pick}): winners' means {means.min():.4f}-{means.max():.4f}" in text and "over 2 searches" in text
    means = rows.groupby(["pick", "search_seed"])["test_acc"].mean()
    moved = 100 * (means["default"] - means["no-fill"])
    assert f"the fill moved the same searches' picks by {moved.mean():+.2f} points" in text
    # a rerun resumes: the searches and fine-tunes are kept, and give the same rows; another model's rows written
    # there before (each run is of one model) are kept
    other = rows.iloc[:1].assign(model="mobilenet_v2_cifar")
    pd.concat([other, rows]).to_csv(tmp_path / "search_variance_quick_ramp_fill.csv", index=False)
    sv.main(["--quick", "--workers", "1", "--work", str(tmp_path / "work"), "--out", str(tmp_path)])
    again = pd.read_csv(tmp_path / "search_variance_quick_ramp_fill.csv", comment="#")
    assert again.iloc[1:].reset_index(drop=True).equals(rows) and again.iloc[0]["model"] == "mobilenet_v2_cifar"
    text = (tmp_path / "search_variance_quick_ramp_fill.md").read_text()
    acc = other.iloc[0]["test_acc"]  # (its one pick: the summary names none)
    assert f"mobilenet_v2_cifar 50%: winners' means {acc:.4f}-{acc:.4f}" in text


def _bench_module(name):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_generated_families_are_reproducible_and_pruned_with_parity():
    """The fidelity suite's networks: the same seed gives the same network, every family traces into a space
    whose full encoding is the network itself, and seeds give different networks."""
    from conftest import check_parity

    nf = _bench_module("net_families")
    for family in nf.FAMILIES:
        (m1, s1, d1), (m2, _, d2), (_, _, d3) = nf.make(family, 4), nf.make(family, 4), nf.make(family, 5)
        assert d1 == d2 and all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
        assert d1 != d3 or family == "residual"  # (few residual draws; the descriptions may repeat)
        space = hp.SearchSpace.from_model(m1, s1, ratios=(0.25, 0.5, 1.0))
        check_parity(m1, space, torch.randn(*s1), samples=2)
    with pytest.raises(ValueError, match="family must be one of"):
        nf.make("vgg", 0)


def test_user_runs_times_every_model_runs_times_over_its_rounds():
    """The user's timing loop: ``runs`` times per model however they split into rounds (7 over 3 rounds: 3+2+2),
    each a real duration; p10 never above the median."""
    pytest.importorskip("onnxruntime")
    from hwprune.profilers.onnx_graphs import export_network

    common = _bench_module("bench_common")
    models = [export_network(nn.Conv2d(3, c, 3, padding=1).eval(), (1, 3, 8, 8)) for c in (4, 8)]
    for rounds in (1, 3):
        times = common.user_runs(models, None, 7, rounds=rounds, warmup=1)
        assert [len(t) for t in times] == [7, 7]
        assert all((t > 0).all() and np.isfinite(t).all() for t in times)
    p10, median = common.user_times(models[0], np.zeros((1, 3, 8, 8), np.float32), 9, warmup=1)
    assert 0 < p10 <= median


def test_fidelity_families_quick_run_writes_one_row_per_network_and_statistic(tmp_path):
    """--families --quick: the CSVs' shape and invariants (the errors themselves depend on the machine)."""
    import pandas as pd

    pytest.importorskip("onnxruntime")
    ff, nf = _bench_module("fidelity_families"), _bench_module("net_families")
    ff.run(tmp_path, [0], 4, quick=True)
    rows = pd.read_csv(tmp_path / "latency_fidelity_families_quick.csv", comment="#")
    points = pd.read_csv(tmp_path / "latency_fidelity_families_quick_points.csv", comment="#")
    assert (tmp_path / "latency_fidelity_families_quick.png").stat().st_size > 0
    assert sorted(zip(rows.network, rows.statistic)) == sorted((f"{f}-0", s) for f in nf.FAMILIES
                                                               for s in ("p10", "median", "p10 vs median"))
    assert (rows.n == 4).all() and len(points) == 4 * len(rows) and (rows.run == 1).all() and (points.run == 1).all()
    assert not (tmp_path / "latency_fidelity_families_quick_expectation.csv").exists()  # one run: nothing over runs
    assert ((rows.within_10pct >= 0) & (rows.within_10pct <= 1) & (rows.mape >= 0)).all()
    assert (points[["predicted_ms", "measured_ms", "retest_ms", "reprofiled_ms"]] > 0).all().all()
    assert (rows.tables_apart > 0).all()  # profiled again from nothing, not served from the first table's store
    # the machine's speed beside each timing, one per network (the same on its three rows)
    assert (rows[["probe_profile_ms", "probe_first_ms", "probe_retest_ms"]] > 0).all().all()
    assert (rows.groupby("network").probe_first_ms.nunique() == 1).all()
    # agreement up to the rounding of the CSVs (points to 1e-5 ms, which is a sizeable share of a 16x16 network's
    # few microseconds; rows to 1e-4)
    tol = lambda a, b: 5e-5 + (0.5e-5 / b * (1 + a / b)).mean() + 1e-9  # noqa: E731
    for (net, stat), g in points.groupby(["network", "statistic"]):  # the row's bias is its points' mean error
        row = rows[(rows.network == net) & (rows.statistic == stat)].iloc[0]
        assert row.bias == pytest.approx((g.predicted_ms / g.measured_ms - 1).mean(),
                                         abs=tol(g.predicted_ms, g.measured_ms))
        # the table profiled again, from another kernel store: its own error, and how far the two tables are apart
        assert row.reprofiled_bias == pytest.approx((g.reprofiled_ms / g.measured_ms - 1).mean(),
                                                    abs=tol(g.reprofiled_ms, g.measured_ms))
        assert row.tables_apart == pytest.approx((g.reprofiled_ms / g.predicted_ms - 1).abs().mean(),
                                                 abs=tol(g.reprofiled_ms, g.predicted_ms))
        assert g.encoding.nunique() >= 2  # the full and the narrowest network at least


def test_fidelity_families_expectation_reads_every_table_of_every_run():
    """--suite-runs: per network and statistic, the bias over both tables of each run (the first and the one
    profiled again), the share of runs whose first table met the 3% bar, and the goal read on the means."""
    ff = _bench_module("fidelity_families")

    def row(run, net, stat, bias, again, within, rho, retest, apart):
        return {"run": run, "network": net, "statistic": stat, "bias": bias, "reprofiled_bias": again,
                "within_10pct": within, "spearman": rho, "retest_bias": retest, "tables_apart": apart}

    rows = [row(1, "a", "p10", 0.01, 0.05, 1.0, 0.99, -0.02, 0.04), row(1, "a", "median", 0.04, 0.035, 1.0, 0.99,
                                                                        0.01, 0.01),
            row(2, "a", "p10", -0.04, 0.02, 0.9, 0.975, 0.04, 0.06), row(2, "a", "median", 0.05, 0.03, 1.0, 0.99,
                                                                         0.0, 0.02)]
    p10, median = ff.expectation(rows)
    assert (p10["network"], p10["statistic"], p10["runs"], p10["tables"]) == ("a", "p10", 2, 4)
    assert p10["bias_mean"] == pytest.approx(0.01) and (p10["bias_min"], p10["bias_max"]) == (-0.04, 0.05)
    assert p10["bias_std"] == pytest.approx(np.std([0.01, 0.05, -0.04, 0.02], ddof=1), abs=1e-4)
    assert p10["runs_bias_within_bar"] == 0.5  # run 1's table at +1%, run 2's at -4%
    assert (p10["within_10pct_mean"], p10["within_10pct_min"]) == (0.95, 0.9)
    assert (p10["spearman_mean"], p10["spearman_min"]) == (pytest.approx(0.9825), 0.975)
    assert p10["retest_abs_bias_mean"] == pytest.approx(0.03) and p10["tables_apart_mean"] == pytest.approx(0.05)
    assert p10["meets"]  # each run missed something (-4%; 90% within 10%), the means meet the goal
    assert median["bias_mean"] == pytest.approx(0.03875, abs=1e-4) and median["runs_bias_within_bar"] == 0.0
    assert not median["meets"]  # every table over by 3-5%: a bias the predictor has, not one run's


def test_fidelity_families_suite_runs_reads_each_row_over_the_runs(tmp_path):
    """--suite-runs 2 end to end, one family: both runs' rows kept, and the expectation file is their summary."""
    import pandas as pd

    pytest.importorskip("onnxruntime")
    ff = _bench_module("fidelity_families")
    ff.run(tmp_path, [0], 4, quick=True, only=["plain"], suite_runs=2)
    rows = pd.read_csv(tmp_path / "latency_fidelity_families_quick.csv", comment="#")
    summary = pd.read_csv(tmp_path / "latency_fidelity_families_quick_expectation.csv", comment="#")
    assert sorted(rows.run.unique()) == [1, 2] and len(rows) == 2 * 3  # three statistics a run
    assert (tmp_path / "latency_fidelity_families_quick_expectation.png").stat().st_size > 0
    assert list(summary.statistic) == ["p10", "median", "p10 vs median"]
    assert (summary.runs == 2).all() and (summary.tables == 4).all()
    for _, row in summary.iterrows():
        g = rows[rows.statistic == row.statistic]
        both = pd.concat([g.bias, g.reprofiled_bias])
        assert row.bias_mean == pytest.approx(both.mean(), abs=1e-4)
        assert (row.bias_min, row.bias_max) == (pytest.approx(both.min()), pytest.approx(both.max()))
        assert row.spearman_min == pytest.approx(g.spearman.min())


def test_machine_drift_levels_and_window_gaps():
    """A sweep's level is its networks' geometric mean over their own medians; two back-to-back windows differ by
    the ratio of their mean levels."""
    md = _bench_module("machine_drift")
    assert md.sweep_levels(np.array([[1.0, 2.0], [2.0, 4.0], [1.0, 2.0]])).tolist() == pytest.approx([1.0, 2.0, 1.0])
    # each network over its own median (2 and 2): one twice as slow and one twice as fast is the machine as usual
    assert md.sweep_levels(np.array([[1.0, 4.0], [4.0, 1.0], [2.0, 2.0]])).tolist() == pytest.approx([1.0] * 3)
    t = np.arange(6.0)
    n, mean_gap, p90_gap = md.window_gaps(t, np.array([1.0, 1.0, 1.1, 1.1, 1.045, 1.045]), 2.0)
    assert (n, mean_gap, p90_gap) == (3, pytest.approx(0.075), pytest.approx(0.095))
    # a last window the run did not fill is left out (its one sweep at 5.0 would be a 378% gap)
    assert md.window_gaps(np.arange(7.0), np.array([1.0, 1.0, 1.1, 1.1, 1.045, 1.045, 5.0]), 2.0) == (
        3, pytest.approx(0.075), pytest.approx(0.095))
    assert np.isnan(md.window_gaps(t, np.ones(6), 10.0)[1])  # not one full window: nothing to compare
    # windows with no sweep in them break the chain: only neighbours that both hold a sweep are compared
    n, gap, _ = md.window_gaps(np.array([0.0, 0.5, 4.0, 4.5]), np.array([1.0, 1.0, 2.0, 2.0]), 1.0)
    assert n == 6 and np.isnan(gap)  # the last sweep, at 4.5 s, ends a mean sweep (1.5 s) later
    assert md.autocorrelation(t, np.array([1.0, 2.0, 1.0, 2.0, 1.0, 2.0]), 2.0) == pytest.approx(1.0)
    assert md.autocorrelation(t, np.array([1.0, 2.0, 1.0, 2.0, 1.0, 2.0]), 1.0) == pytest.approx(-1.0)


def test_machine_drift_quick_run_writes_a_row_per_sweep(tmp_path):
    import pandas as pd

    pytest.importorskip("onnxruntime")
    md = _bench_module("machine_drift")
    md.main(["--quick", "--out", str(tmp_path), "--net", "plain-0"])
    sweeps = pd.read_csv(tmp_path / "machine_drift_quick.csv", comment="#")
    summary = pd.read_csv(tmp_path / "machine_drift_quick_summary.csv", comment="#")
    # a row per sweep, however many this machine managed in 3 s (the header counts them)
    head = (tmp_path / "machine_drift_quick.csv").read_text().splitlines()[0]
    assert f"{len(sweeps)} sweeps in 3 s" in head and "plain-0: 2 networks" in head
    # the columns, rows in the order the sweeps ran, and every sweep's level and reference reading filled in (a
    # positive number: no blank or zero row), whatever this machine's speed
    assert list(sweeps.columns) == ["seconds", "level", "reference_ms"]
    assert (np.diff(sweeps["seconds"].to_numpy()) >= 0).all()
    assert (sweeps[["level", "reference_ms"]].to_numpy() > 0).all()
    assert list(summary.measure) == ["back-to-back 1 s windows", "autocorrelation at 1 s"]
    assert (tmp_path / "machine_drift_quick.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="FAMILY-SEED"):
        md.main(["--quick", "--out", str(tmp_path), "--net", "nope-1"])


def test_session_placement_quick_run_times_each_session_in_fresh_processes(tmp_path):
    import pandas as pd

    pytest.importorskip("onnxruntime")
    sp = _bench_module("session_placement")
    sp.main(["--quick", "--out", str(tmp_path)])
    rows = pd.read_csv(tmp_path / "session_placement_quick.csv", comment="#")
    assert list(rows.process) == [0, 1] and rows.network.nunique() == 1  # one network, two fresh processes
    assert (rows[[f"{s}_ms" for s in sp.SESSIONS]] > 0).all().all()
    with pytest.raises(SystemExit):
        sp.main(["--processes", "0", "--out", str(tmp_path)])
    # a fresh process that fails says so in one line, with its own last word
    with pytest.raises(SystemExit, match="timing missing failed: .*(NO_SUCHFILE|[Nn]o such file|Load model)"):
        sp.run_child("missing", tmp_path / "missing.onnx", tmp_path / "missing.onnx", 5)


def test_network_timing_quick_run_times_every_network_three_ways(tmp_path):
    """--quick: a row per network (widest and narrowest of each space) with each protocol's p10 and median, and the
    ratios the summary quotes are of those p10s (the ratios themselves depend on the machine)."""
    import pandas as pd

    pytest.importorskip("onnxruntime")
    nt = _bench_module("network_timing")
    nt.main(["--quick", "--out", str(tmp_path)])
    rows = pd.read_csv(tmp_path / "network_timing_quick.csv", comment="#")
    assert list(rows.network) == ["vgg6 widest", "vgg6 narrowest", "plain-1 widest", "plain-1 narrowest"]
    for p in nt.PROTOCOLS:
        assert (rows[f"{p}_p10_ms"] > 0).all() and (rows[f"{p}_p10_ms"] <= rows[f"{p}_median_ms"] + 1e-5).all()
    for p in nt.PROTOCOLS[1:]:
        assert rows[f"{p}_over_user_p10"].to_numpy() == pytest.approx(
            (rows[f"{p}_p10_ms"] / rows.user_p10_ms).to_numpy(), abs=1e-3)


def test_chunk_budget_arms_are_a_weight_budget_and_a_variant_count():
    import argparse

    cb = _bench_module("chunk_budget")
    assert cb._arm("8192:256") == (8192, 256) and cb._arm("auto:32") == ("auto", 32)
    for bad in ("8192", "8192:", "0:32", "1k:32", "8192:-1", "auto", "auto:", "AUTO:32"):
        with pytest.raises(argparse.ArgumentTypeError, match="KB:VARIANTS"):
            cb._arm(bad)


@pytest.mark.slow  # (30 s: two profilings from nothing)
def test_chunk_budget_quick_run_profiles_under_each_arm(tmp_path):
    """--quick: a row per arm (weight budget and variants), each profiled from nothing under its own chunk limits,
    scored on the same networks (the errors themselves depend on the machine)."""
    import pandas as pd

    pytest.importorskip("onnxruntime")
    cb = _bench_module("chunk_budget")
    cb.main(["--quick", "--arms", "4096:256", "128:16", "--out", str(tmp_path)])
    rows = pd.read_csv(tmp_path / "chunk_budget_quick.csv", comment="#")
    assert list(rows.budget_kb) == [4096, 128] and list(rows.variants) == [256, 16] and (rows.networks == 6).all()
    assert ((rows.mape >= 0) & (rows.within_10pct >= 0) & (rows.within_10pct <= 1)).all()
    assert (rows[["narrow_ratio", "wide_ratio"]] > 0).all().all()  # (profile_seconds: a timing, not asserted)
    assert (rows[["probe_profile_ms", "probe_user_ms"]] > 0).all().all() and rows.probe_user_ms.nunique() == 1


def test_a_saved_result_of_another_network_is_not_reused(tmp_path):
    """A rerun that chose another network for a job (a new table moves the tau candidates and the winners) must
    fine-tune it, not report the old network's accuracy under the new one's name."""
    import json

    common = _bench_module("bench_common")
    saved = {"same": {"encoding": [1, 2]}, "moved": {"encoding": [1, 2]},  # searched or uniform networks
             "same_ratio": {"ratio": 0.5}, "new_ratio": {"ratio": 0.5}}  # Torch-Pruning's, bisected again
    for name, result in saved.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps({**result, "test_acc": 0.5}))
        (tmp_path / name / "model.pt").write_text("old")
    ran = []
    jobs = [{"label": n, "encoding": e, "ratio": r, "out": str(tmp_path / n / "result.json")}
            for n, e, r in (("same", [1, 2], None), ("moved", [3, 4], None), ("new", [5, 6], None),
                            ("same_ratio", None, 0.5), ("new_ratio", None, 0.45))]
    common.run_pool(jobs, 1, lambda m: None, lambda j: ran.append(j["label"]) or {"test_acc": 0.0})
    assert ran == ["moved", "new", "new_ratio"]
    for name in ("same", "same_ratio"):
        assert (tmp_path / name / "model.pt").exists()
    for name in ("moved", "new_ratio"):
        assert not (tmp_path / name / "model.pt").exists()


@pytest.mark.slow  # (~2 min on 2 cores: fashion_mnist.py --quick for two methods, then this)
def test_taylor_batches_quick_run_fine_tunes_each_network_from_each_order(fashion, tmp_path):
    """taylor_batches.py --quick in a finished fashion_mnist.py --quick folder: a row per network, number of batches
    and seed; at the benchmark's number of batches the result is its own fine-tune of that network."""
    import pandas as pd

    work = tmp_path / "work"
    fashion.main(["--quick", "--workers", "1", "--work", str(work), "--out", str(tmp_path / "fm"),
                  "--methods", "uniform", "hwprune", "--no-tau"])
    tb = _bench_module("taylor_batches")
    tb.main(["--quick", "--workers", "1", "--work", str(work), "--out", str(tmp_path / "tb"), "--batches", "8", "1"])
    rows = pd.read_csv(tmp_path / "tb" / "taylor_batches_quick.csv", comment="#")
    q = fashion.Settings(**fashion.QUICK)
    assert len(rows) == 2 * len(q.fractions) * 2 * len(q.seeds) and set(rows.batches) == {8, 1}
    assert rows.overlap.between(0, 1).all() and (rows.groupby(["method", "batches"]).overlap.nunique() == 1).all()
    theirs = pd.read_csv(tmp_path / "fm" / "fashion_mnist_quick.csv", comment="#")
    theirs = theirs[theirs.method != "dense"].set_index(["method", "seed"]).test_acc.sort_index()
    mine = rows[rows.batches == q.taylor_batches].set_index(["method", "seed"]).test_acc.sort_index()
    assert mine.round(4).tolist() == theirs.round(4).tolist()
    with pytest.raises(SystemExit, match="chosen.json has no network"):
        tb.main(["--quick", "--work", str(work), "--out", str(tmp_path / "tb"), "--methods", "random"])


def test_l1_widths_reads_a_torch_pruning_network_as_an_encoding(fashion):
    """L1's network as an encoding of the space: materialized, it has the pruned network's widths, layer by layer."""
    import torch

    lw = _bench_module("l1_widths")
    s = fashion.Settings(**fashion.QUICK)
    space, loaders = fashion.setup("resnet20", s)
    dense = space.materialize(space.full()).eval()
    pruned = lw.avl.l1_prune(dense, 0.5, torch.zeros(1, *loaders.input_shape), s)
    enc, widths = lw.encoding_of(space, pruned)
    assert enc != space.full() and enc != space.narrowest()
    assert [g.choices[c] for g, c in zip(space.groups, enc)] == widths  # (round_to 4: every width is a choice)
    convs = lambda m: [c.out_channels for c in m.modules() if isinstance(c, torch.nn.Conv2d)]  # noqa: E731
    assert convs(space.materialize(enc)) == convs(pruned)


@pytest.mark.slow  # (~3 min on 2 cores: fashion_mnist.py --quick for L1 and hwprune, then this)
def test_l1_widths_quick_run_fine_tunes_each_arm_beside_the_benchmarks_own(fashion, tmp_path):
    import pandas as pd

    work = tmp_path / "work"
    fashion.main(["--quick", "--workers", "1", "--work", str(work), "--out", str(tmp_path / "fm"),
                  "--methods", "l1", "hwprune", "--no-tau"])
    lw = _bench_module("l1_widths")
    lw.main(["--quick", "--workers", "1", "--work", str(work), "--out", str(tmp_path / "lw"), "--fraction", "0.5",
             "--tune-steps", "0", "3"])
    rows = pd.read_csv(tmp_path / "lw" / "l1_widths_quick.csv", comment="#")
    q = fashion.Settings(**fashion.QUICK)
    arms = list(dict.fromkeys(zip(rows.arm, rows.order)))
    assert arms == [("l1 widths", "taylor"), ("l1 widths", "l1"), ("hwprune", "l1"),
                    ("l1 (fashion_mnist.py)", "l1 (Torch-Pruning's own)"), ("hwprune (fashion_mnist.py)", "taylor")]
    assert len(rows) == len(arms) * len(q.seeds) and rows.test_acc.between(0, 1).all()
    assert rows[rows.arm == "l1 widths"].encoding.nunique() == 1  # one network, two orders
    assert rows[rows.arm.str.startswith("hwprune")].encoding.nunique() == 1
    searched = rows[~rows.arm.str.contains("fashion_mnist")]
    assert searched.fitness.between(0, 1).all()
    assert list(rows.columns) == lw.COLUMNS + ["fitness_0", "fitness_3"]  # scored longer: the Taylor-order rows only
    taylor = rows.order == "taylor"
    assert rows[taylor][["fitness_0", "fitness_3"]].apply(lambda c: c.between(0, 1)).all().all()
    assert rows[~taylor][["fitness_0", "fitness_3"]].isna().all().all()
    theirs = pd.read_csv(tmp_path / "fm" / "fashion_mnist_quick.csv", comment="#")
    for method in ("l1", "hwprune"):  # the benchmark's own fine-tunes, as it reported them
        mine = rows[rows.arm == f"{method} (fashion_mnist.py)"].sort_values("seed").test_acc.round(4).tolist()
        assert mine == theirs[theirs.method == method].sort_values("seed").test_acc.round(4).tolist()
    with pytest.raises(SystemExit, match="no L1 and hwprune networks at 0.3"):
        lw.main(["--quick", "--work", str(work), "--out", str(tmp_path / "lw"), "--fraction", "0.3"])


def test_pick_scores_reads_each_runs_picks_once_and_scores_them_past_the_searchs_batches(fashion, tmp_path):
    """pick_scores.py: every method's pick per budget with its mean fine-tuned accuracy over seeds, a network two
    runs picked alike once (under the first run), methods without rows left out; its scores other than the
    search's own start after the search's validation batches."""
    import csv as csvmod

    ps = _bench_module("pick_scores")
    runs = []
    for label, hw, acc in [("a", [1, 2], (0.5, 0.7)), ("b", [3, 4], (0.9, 0.8))]:
        (tmp_path / label / "m").mkdir(parents=True)
        (tmp_path / label / "m" / "chosen.json").write_text(json.dumps({
            "uniform": {"0.5": {"encoding": [2, 2]}}, "hwprune": {"0.5": {"encoding": hw}},
            "random": {"0.5": {"encoding": [0, 1]}}}))  # (no random rows: not fine-tuned, left out)
        rows = [{"model": "m", "method": m, "budget_fraction": "0.5", "seed": s, "test_acc": a, "val_acc": a}
                for m, a0 in [("uniform", 0.6 if label == "a" else 0.1), ("hwprune", acc[0])]
                for s, a in enumerate([a0, a0 + 0.1] if m == "uniform" else acc)]
        rows.append({"model": "other", "method": "hwprune", "budget_fraction": "0.5", "seed": 0, "test_acc": 0,
                     "val_acc": 0})
        with (tmp_path / f"{label}.csv").open("w", newline="") as f:
            w = csvmod.DictWriter(f, list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        runs.append((label, str(tmp_path / label), str(tmp_path / f"{label}.csv")))
    got = ps.picks("m", runs)["0.5"]
    assert {k: (v["run"], v["method"], v["seeds"], v["test_acc"]) for k, v in got.items()} == {
        (2, 2): ("a", "uniform", 2, 0.65), (1, 2): ("a", "hwprune", 2, 0.6), (3, 4): ("b", "hwprune", 2, 0.85)}
    s = fashion.Settings().for_model("mobilenet_v2_cifar")
    scores = ps.scores_of(s)
    assert scores["search"] == (s.tune_steps, 0, s.val_batches)
    assert all(start >= s.val_batches for name, (_, start, _) in scores.items() if name != "search")


@pytest.mark.slow  # (~2 min on 2 cores: every verb of the GPU script on the CPU at toy sizes)
def test_the_gpu_pipeline_script_runs_every_verb_and_summarises_them(tmp_path):
    """benchmarks/gpu_pipeline.sh in its CPU smoke mode: every step ran (TensorRT's export says why it cannot where
    TensorRT is absent), the summary has the table's fidelity, the fine-tuned accuracies and both verdicts, and the
    searched and uniform networks were verified against the budget the script computed."""
    import subprocess

    from hwprune.deploy.export import tensorrt_unavailable_reason

    env = dict(os.environ, DEVICE="cpu", SIZE="32", ROUND_TO="128", BATCH="2", EPOCHS="1", FINETUNE="1",
               LIMIT="256", VALIDATE="3", POPULATION="8", GENERATIONS="1", TUNE_STEPS="1",
               WORK=str(tmp_path / "work"), RESULTS=str(tmp_path / "results"), HWPRUNE_MAX_WAIT_S="0")
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_pipeline.sh")], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    steps = {s["step"]: s["exit"] for s in summary["steps"]}
    assert list(steps) == ["profile", "pretrain", "search", "finetune", "finetune_uniform", "export_searched",
                           "export_uniform", "export_tensorrt", "verify_searched", "verify_uniform"]
    trt_exit = 1 if tensorrt_unavailable_reason() else 0
    assert all(v == 0 for k, v in steps.items() if not k.startswith(("export_tensorrt", "verify_")))
    assert steps["export_tensorrt"] == trt_exit
    assert summary["fidelity"]["n"] == 3 and 0 <= summary["fidelity"]["lut"]["within_10pct"] <= 1
    for net in ("searched", "uniform"):
        report = summary[net]["verify"]["reports"][0]
        assert report["budget_ms"] == pytest.approx(summary["budget_ms"], rel=1e-6)
        assert report["backend"]["batch"] == 2  # measured at the table's batch (BATCH)
        assert report["within_budget"] == (report["measured_ms"] <= report["budget_ms"])
        assert steps[f"verify_{net}"] == (0 if report["within_budget"] else 3)  # verify's exit status says it too
        assert 0 <= summary[net]["run"]["stages"]["retrain"]["summary"]["test_acc"] <= 1
    assert summary["dense"]["run"]["stages"]["pretrain"]["summary"]["test_acc"] >= 0
    for name in ("table.csv", "table.fidelity.json", "search_result.json", "log.txt", "environment.json"):
        assert (tmp_path / "results" / name).is_file()
    # the same WORK again is refused (its steps would refuse their folders and verify the old files)
    again = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_pipeline.sh")], env=env, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 2 and "holds an earlier run" in again.stderr
    # a step that fails makes the script fail, naming it (here every step runs out of its 1 s)
    env.update(WORK=str(tmp_path / "work2"), RESULTS=str(tmp_path / "results2"), STEP_TIMEOUT="1")
    failing = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_pipeline.sh")], env=env, capture_output=True,
                             text=True, timeout=300)
    assert failing.returncode == 1 and "failed: profile, pretrain, search" in failing.stdout + failing.stderr
