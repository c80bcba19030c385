"""The deployable end: retrain, verify's verdicts, and the quickstart end to end (fast settings)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import hwprune as hp
from hwprune.training import TrainConfig
from hwprune.supernet.pruningnet import PruningNet
from hwprune.runs.quickstart import FAST, quickstart
from hwprune.search.baselines import SLACK
from hwprune.deploy.retrain import load_pruned, retrain
from hwprune.training.distill import distillation_loss


@pytest.fixture(scope="module")
def qs(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "run"
    said = []
    figures = quickstart(out, FAST, progress=False, log=said.append)
    return out, {**figures, "said": said}


def test_quickstart_fast_end_to_end(qs):
    out, f = qs
    for name in ("report.md", "report.json", "latency_table.csv", "search/result.json", "search/pareto.png",
                 "searched.onnx", "uniform.onnx", "magnitude.onnx", "finetune_searched/model.pt",
                 "pretrain/dense.pt"):
        assert (out / name).exists(), name
    assert set(f["networks"]) == {"searched", "uniform", "magnitude"} and f["evaluator"] == "inherit"
    cal = hp.LatencyTable.load(out / "latency_table.csv").meta["calibration"]  # said: how far to trust the table
    assert f"calibration ({cal['model']}): {cal['loo_mape'][cal['model']]:.1%} mean error" in "\n".join(f["said"])
    steps = FAST.tune_steps  # the smoke run's own (fewer than the library's: it checks the stages, not accuracy)
    assert f["tune_steps"] == steps and f"tuned {steps} distillation steps" in (out / "report.md").read_text()
    # the smoke run's dense network saw `limit` training images, and so does the search (whose data the fine-tunes read)
    run = json.loads((out / "run.json").read_text())["stages"]
    assert run["pretrain"]["settings"]["job"]["limit"] == FAST.limit == run["search"]["settings"]["data"]["limit"]
    assert 0 <= f["dense"]["test_acc"] <= 1  # the reference every pruned network is compared with
    # every pruned network fine-tuned from its inherited weights the same way, distilled from the dense model
    for name in f["networks"]:
        s = run[f"finetune_{name}"]["settings"]
        assert s["init"] == "inherit" and s["teacher"] == "the dense model" and s["encoding"] == \
            f["networks"][name]["encoding"]
        # the magnitude network keeps the channels L1 ranks best; the others inherit the default (Taylor) order
        assert s["dense"]["importance"] == ("l1" if name == "magnitude" else "taylor")
    assert len({json.dumps(run[f"finetune_{n}"]["settings"]["train"]) for n in f["networks"]}) == 1
    best = json.loads((out / "search" / "result.json").read_text())["best"][0]
    for name, r in f["networks"].items():
        # the searched network meets what the table was asked for after it steered by measurement (possibly more than
        # the budget: a table that over-predicts is asked for more); the baselines, held to the budget as measured,
        # what the table puts within SLACK x it (on paper, where none measured within)
        asked = (best.get("steered") or {}).get("asked_ms", f["budget_ms"]) if name == "searched" else \
            SLACK * f["budget_ms"] if best[name].get("measured_within") else f["budget_ms"]
        assert r["predicted_ms"] <= max(asked, f["budget_ms"]) + 1e-4
        # the table predicts the real network as it predicts the dense one timed beside it: measured over predicted
        # alone failed once with 4 processes on 2 cores, where every network, the dense one too, ran slower
        ratio = (r["measured_ms"] / r["predicted_ms"]) / (r["dense_measured_ms"] / f["dense_predicted_ms"])
        assert 0.5 < ratio < 2.0
        # the speed-up is the dense network's time over this one's, timed side by side (not a threshold on it: it
        # once asked for over 1.2x and a 2-core machine measured 1.09x; the next machine may be another CPU)
        assert r["speedup"] == pytest.approx(r["dense_measured_ms"] / r["measured_ms"], rel=2e-3)
        assert r["onnx_max_abs_diff"] <= 1e-4 and 0 <= r["test_acc"] <= 1
    # the smoke run's budget comes from the space's reachable range, never from a timing
    lo, hi = f["narrowest_predicted_ms"], f["dense_predicted_ms"]
    assert abs(f["budget_ms"] - (lo + FAST.budget_fraction * (hi - lo))) < 1e-4 and lo < f["budget_ms"] < hi
    assert len({r["dense_measured_ms"] for r in f["networks"].values()}) == 1  # one dense measurement for all
    for r in f["networks"].values():
        assert r["overshoot"] == pytest.approx(r["measured_ms"] / f["budget_ms"] - 1, abs=1e-3)
        assert r["within_budget"] == (r["measured_ms"] <= f["budget_ms"])  # tolerance 0 unless asked for
    report = (out / "report.md").read_text()
    assert "| searched (hwprune) |" in report and "| uniform width |" in report and "pareto.png" in report
    assert "| L1 magnitude (global) |" in report and "| dense (unpruned) |" in report
    assert "**Smoke run**" in report and "tolerance 0%" in report
    # the search timed its fittest here and kept the fittest measured within the budget, and the report says so
    assert run["search"]["settings"]["measure_top"] == FAST.measure_top == f["measured"]["top"] > 0
    assert 1 <= best["measured_checked"] <= 3 * FAST.measure_top  # (up to 3 rounds of them until one fits)
    assert f["measured"]["rank"] == best.get("measured_rank") and "fittest timed here" in report
    assert f["measured"]["filled"] == (best.get("filled") or {}).get("steps")  # (the fill's widths, as measured)
    assert ("toward the budget" in report) == bool(f["measured"]["filled"] and best.get("measured_within"))
    assert best["measured_within"] is False or best["measured_ms"] <= f["budget_ms"] + 1e-4
    # the uniform and L1 networks were held to the budget as measured too, and the report says how all three were
    held = f["measured"]["baselines"]
    assert held == {k: best[k]["measured_within"] for k in ("uniform", "magnitude")}  # (set for both: timed)
    from hwprune.cli.search import _held

    for k, within in held.items():
        assert within is False or best[k]["measured_ms"] <= f["budget_ms"] + 1e-4
        # (`hwprune search` prints what each was measured at, where it was held)
        assert _held(best[k]) == ("" if within is False else f" (measured {best[k]['measured_ms']:.3f} ms)")
    said = "as measured here when each was picked" if best["measured_within"] is not False and all(held.values()) \
        else "the searched one as measured here" if best["measured_within"] is not False else "on the same table"
    assert said in report
    assert "% over" in report or "% under" in report


def test_verify_exit_status_on_budgets(qs):
    out, f = qs
    r = f["networks"]["searched"]
    base = [sys.executable, "-m", "hwprune.cli", "verify", "--model", str(out / "searched.onnx"), "--table",
            str(out / "latency_table.csv"), "--passes", "2", "--no-dense"]
    ok = subprocess.run(base + ["--latency-ms", str(3 * r["measured_ms"]), "--json"], capture_output=True,
                        text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr
    rep = json.loads(ok.stdout)
    assert rep["within_budget"] is True and rep["predicted_ms"] == pytest.approx(r["predicted_ms"], rel=1e-3)
    over = subprocess.run(base + ["--latency-ms", str(0.3 * r["measured_ms"])], capture_output=True, text=True,
                          timeout=600)
    assert over.returncode == 3 and "OVER BUDGET" in over.stdout
    own = subprocess.run(base + ["--json"], capture_output=True, text=True, timeout=600)  # no --latency-ms
    rep = json.loads(own.stdout)  # the budget the network was searched for, stored in the file by export
    assert rep["budget_ms"] == pytest.approx(f["budget_ms"]) and own.returncode == (0 if rep["within_budget"] else 3)
    missing = subprocess.run(base[:5] + [str(out / "nope.onnx")] + base[6:], capture_output=True, text=True)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_retrain_from_pruningnet_starts_at_the_generated_network(tmp_path):
    from hwprune.data import load_dataset, make_loaders

    torch.manual_seed(0)
    space = hp.SearchSpace.from_model(hp.create_model("resnet20", in_channels=1), (1, 1, 32, 32))
    pnet = PruningNet(space, hidden=8).eval()
    enc = space.sample(np.random.default_rng(0))
    loaders = make_loaders(load_dataset("bundled").limit_train(128), 64)
    model, hist = retrain(space, enc, loaders.train, config=TrainConfig(epochs=0), init="pruningnet", pnet=pnet,
                          run_dir=tmp_path / "r0")
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert hist == [] and (model(x) - pnet(x, enc)).abs().max() <= 1e-5
    model, hist = retrain(space, enc, loaders.train, config=TrainConfig(epochs=2), val_loader=loaders.val,
                          run_dir=tmp_path / "r2")
    assert len(hist) == 2 and "val_acc" in hist[-1]
    loaded, info = load_pruned(tmp_path / "r2" / "model.pt")
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert info["encoding"] == list(enc) and info["val_acc"] == pytest.approx(hist[-1]["val_acc"])


def test_distillation_loss():
    teacher = torch.nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    same = distillation_loss(teacher, alpha=1.0)(teacher(x).detach(), y, x)
    assert same.abs() < 1e-6  # matching the teacher exactly costs nothing
    other = distillation_loss(teacher, alpha=1.0)(torch.zeros(8, 3), y, x)
    assert other > 0.01
