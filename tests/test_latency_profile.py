"""A tiny real profile with onnxruntime, the CLI over it, and its fidelity check."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import hwprune as hp
from hwprune.cli import main
from hwprune.latency.calibration import SUSPECT_LOO_MAPE
from hwprune.profilers import get_profiler

RATIOS = [0.25, 0.49, 1.0]  # three widths per group keeps the real run to seconds


@pytest.fixture(scope="module")
def small_space():
    return hp.SearchSpace.from_model(hp.create_model("resnet20").eval(), (1, 3, 32, 32), ratios=RATIOS)


@pytest.fixture(scope="module")
def real_table(small_space, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("profile")
    prof = get_profiler("onnxruntime", "cpu", threads=1, repeats=12, max_wait_s=1)  # tests share the machine
    return hp.profile(small_space, profiler=prof, cache_dir=tmp / "kernels", out=tmp / "t.csv", calibrate=4,
                      passes=2, runs_per_pass=5, quiet=True), tmp


def test_tiny_real_profile_measures_every_width_and_predicts_its_networks(real_table, small_space):
    table, tmp = real_table
    p = table.meta["profiling"]
    assert p["measured"] == len(table.entries) > 50 and p["reused"] == 0  # its speed: benchmarks/profile_tables.py
    assert table.backend["backend"] == "onnxruntime" and table.backend["threads"] == 1
    # kernels were timed in chunks holding as many weights as the widest network has (KB, within 256 KB-8 MB)
    widest_kb = -(-int(small_space.params(small_space.full())) * 4 // 1024)
    assert table.backend["chunk_kb"] == min(8192, max(256, widest_kb)) and widest_kb > 256
    assert table.backend["versions"]["onnxruntime"] and table.meta["anchors"]["kernel_ref_ms"] > 0
    assert (table.entries.p10_ms > 0).all() and (table.entries.p10_ms <= table.entries.p90_ms).all()
    nets = table.meta["calibration"]["networks"]  # the overhead was fitted on them: a loose but real check
    errors = sorted(abs(table.predict(n["encoding"]) / n["measured_ms"] - 1) for n in nets)
    assert errors[len(errors) // 2] < 0.15, errors  # the median one (the machine is shared: no max)
    assert table.predict(small_space.full()) > 2 * table.predict(small_space.uniform(0.25))
    again = hp.LatencyTable.load(tmp / "t.csv", small_space)  # this machine, this space: accepted
    assert again.predict(small_space.full()) == pytest.approx(table.predict(small_space.full()))


def test_cli_profile_validate_and_refusal(real_table, tmp_path):
    _, tmp = real_table
    out = tmp_path / "r20.csv"
    args = ["profile", "--model", "resnet20", "--input-shape", "1,3,32,32", "--threads", "1", "-o", str(out),
            "--width-mult", "0.25", "--cache-dir", str(tmp / "kernels"), "--calibrate", "3", "--repeats", "10",
            "--passes", "2", "--quiet"]  # a quarter-width resnet20: a few hundred kernels
    r = CliRunner().invoke(main, args + ["--validate", "3", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["entries"] == d["profiling"]["measured"] + d["profiling"]["reused"] > 100
    f = d["fidelity"]
    # a 3-network smoke check on a shared machine; the accuracy figures come from benchmarks/latency_fidelity.py
    assert f["n"] == 3 and 0 <= f["lut"]["within_10pct"] <= 1
    assert d["calibration"]["loo_mape"] == hp.LatencyTable.load(out).meta["calibration"]["loo_mape"]
    assert set(f["retest"]) == {"within_10pct", "mape", "spearman"}
    reach = d["reach"]  # (resnet20's space may drop blocks: the narrowest of all drops them)
    assert reach["blocks_ms"] < reach["channels_ms"] < reach["dense_ms"]
    # the share is rounded to 4 places from the unrounded latencies, the latencies to 5 places: on a quarter-width
    # network (a few hundredths of a ms) their rounding moves the ratio by more than the share's own
    c, dn = reach["channels_ms"], reach["dense_ms"]
    assert reach["channels_share"] == pytest.approx(c / dn, abs=5e-5 + 5e-6 * (1 / dn + c / dn ** 2) + 1e-9)
    report = json.loads((tmp_path / "r20.fidelity.json").read_text())
    assert len(report["measured_ms"]) == len(report["lut_ms"]) == len(report["flops_ms"]) == 3
    # the summary is of the networks in the report, whose times are rounded (no threshold on it: how close they are
    # depends on how busy the machine is)
    lut, measured = np.asarray(report["lut_ms"]), np.asarray(report["measured_ms"])
    err = np.abs(lut / measured - 1)
    # (the times rounded to 5 places move each error by up to 5e-6 * (1/m + l/m^2): 3e-4 at a few hundredths of a ms)
    rounding = (5e-6 * (1 / measured + lut / measured ** 2)).mean()
    assert f["lut"]["mape"] == pytest.approx(err.mean(), rel=1e-3, abs=1e-4 + rounding)
    assert (tmp_path / "r20.fidelity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same command on the finished table reuses it; other settings are refused in one line
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "entries" in r.output
    before = hp.LatencyTable.load(out)
    r = CliRunner().invoke(main, args + ["--calibration", "affine"])  # refit the finished table: nothing measured
    assert r.exit_code == 0 and "scale" in r.output
    refit = hp.LatencyTable.load(out)
    cal = before.meta["calibration"]  # 3 networks: no slope. A constant, or where that predicted <= 0 ms for the
    # narrowest network twice (tiny kernels that cost a share more alone than in a network), a share of the kernels
    if "fallback" in cal:
        assert cal["model"] == "proportional" and before.overhead_ms == 0.0
    else:
        assert cal["model"] == "constant" and before.scale == 1.0
    assert refit.meta["calibration"]["model"] == "affine"
    loo = refit.meta["calibration"]["loo_mape"]["affine"]  # said, with what to do where it is suspect
    assert f"calibration (affine): {loo:.1%} mean error on each of its 3 networks" in r.output
    assert ("profile again when it is quiet" in r.output) == (loo > SUSPECT_LOO_MAPE)
    assert [n["measured_ms"] for n in refit.meta["calibration"]["networks"]] == \
        [n["measured_ms"] for n in before.meta["calibration"]["networks"]]
    assert (refit.entries.values == before.entries.values).all()
    r = CliRunner().invoke(main, args[:6] + ["2"] + args[7:])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "threads=1, not 2" in r.output
    # the chunk budget it was measured with is a setting too: "auto" held this quarter-width resnet20's chunks to
    # its widest network's weights, here under the least budget (256 KB)
    assert hp.LatencyTable.load(out).backend["chunk_kb"] == 256
    assert CliRunner().invoke(main, args + ["--chunk-kb", "256"]).exit_code == 0
    r = CliRunner().invoke(main, args + ["--chunk-kb", "1024"])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "chunk_kb=256, not 1024" in r.output


def test_reach_is_what_the_table_predicts_for_the_dense_and_the_narrowest_networks(real_table, small_space):
    """The dense network, the narrowest keeping every block, and in a space that may drop blocks the narrowest of all;
    where channels alone reach little, the line says what reaches lower."""
    from hwprune.latency.reach import CHANNELS_LITTLE, describe_reach, reach

    table, _ = real_table
    r = reach(table, small_space)
    dense, channels = table.predict(small_space.full()), table.predict(small_space.narrowest(keep_blocks=True))
    assert (r["dense_ms"], r["channels_ms"]) == (pytest.approx(dense, abs=1e-5), pytest.approx(channels, abs=1e-5))
    assert r["channels_share"] == pytest.approx(channels / dense, abs=1e-4) and r["blocks_ms"] is None
    drops = hp.SearchSpace.from_model(hp.create_model("resnet20").eval(), (1, 3, 32, 32), ratios=RATIOS,
                                      drop_blocks=True)
    rd = reach(table.for_space(drops), drops)
    assert rd["channels_ms"] == pytest.approx(r["channels_ms"]) and rd["dense_ms"] == pytest.approx(r["dense_ms"])
    assert rd["blocks_ms"] == pytest.approx(table.for_space(drops).predict(drops.narrowest()), abs=1e-5)
    assert rd["blocks_ms"] < rd["channels_ms"]
    blocks = table.for_space(drops).predict(drops.narrowest())  # (the share is of the unrounded latencies)
    assert rd["blocks_share"] == pytest.approx(blocks / dense, abs=1e-4)
    line = describe_reach(rd)
    assert f"{rd['channels_share']:.0%} of it" in line and "dropping blocks too" in line
    assert ("per kernel" in line) == (rd["channels_share"] > CHANNELS_LITTLE)
    little = dict(rd, channels_ms=0.93 * dense, channels_share=0.93)  # as on an H200 at batch 1
    assert "at most 7% off" in describe_reach(little) and "the search's default" in describe_reach(little)
    assert "--drop-blocks" in describe_reach(dict(little, blocks_ms=None, blocks_share=None))


def test_cli_chunk_budget_is_refused_on_a_backend_without_kernel_chunks(tmp_path):
    r = CliRunner().invoke(main, ["profile", "--model", "resnet20", "--backend", "torch", "--chunk-kb", "1024",
                                  "-o", str(tmp_path / "x.csv")])
    assert r.exit_code == 1 and "--chunk-kb sets the onnxruntime backend's kernel chunks" in r.output
    assert r.output.count("\n") == 1 and not (tmp_path / "x.csv").exists()


def test_cli_unavailable_backend_is_one_line(tmp_path):
    r = CliRunner().invoke(main, ["profile", "--model", "resnet20", "--backend", "tensorrt", "--device", "cpu",
                                  "-o", str(tmp_path / "x.csv")])
    assert r.exit_code == 1 and r.output.startswith("error: backend 'tensorrt' cannot run on 'cpu' here")
    assert r.output.count("\n") == 1
