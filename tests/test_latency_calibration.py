"""Calibration: constant vs affine (overhead + scale * kernel sum), refitting, rescoring a fidelity report."""
import numpy as np
import pytest

import hwprune as hp
from hwprune.latency.calibration import fit_calibration, recalibrate
from hwprune.latency.fidelity import FidelityReport

from latency_fakes import OVERHEAD_MS, FakeProfiler, direct_sum, encodings


@pytest.fixture(scope="module")
def space():
    return hp.SearchSpace.from_model(hp.create_model("resnet20").eval(), (1, 3, 32, 32))


@pytest.fixture(scope="module")
def scaled(space, tmp_path_factory):
    """A backend where a network costs twice its kernels' sum, plus OVERHEAD_MS (as 2 threads on 2 cores)."""
    prof = FakeProfiler(network_scale=2.0)
    return hp.profile(space, profiler=prof, cache_dir=tmp_path_factory.mktemp("kernels"), calibrate=8, quiet=True)


def noisy(values, rel, seed=0):
    return np.asarray(values) * (1 + np.random.default_rng(seed).uniform(-rel, rel, len(values)))


def test_affine_is_chosen_when_latency_grows_faster_than_the_kernel_sum():
    sums = np.linspace(0.3, 0.75, 16)
    cal = fit_calibration(noisy(1.98 * sums - 0.37, 0.01), sums)
    assert cal["model"] == "affine"
    assert cal["scale"] == pytest.approx(1.98, rel=0.05) and cal["overhead_ms"] == pytest.approx(-0.37, abs=0.04)
    assert cal["loo_mape"]["affine"] < 0.02 < cal["loo_mape"]["constant"]


def test_constant_is_kept_when_a_scale_does_not_clearly_help():
    sums = np.linspace(0.3, 1.2, 16)
    cal = fit_calibration(noisy(sums + 0.1, 0.02, seed=1), sums)  # an offset, and noise a line could chase
    assert cal["model"] == "constant" and cal["scale"] == 1.0
    assert cal["overhead_ms"] == pytest.approx(np.median(noisy(sums + 0.1, 0.02, seed=1) - sums))
    exact = fit_calibration(sums + 0.1, sums)  # both fit exactly: nothing to gain, keep the simpler model
    assert exact["model"] == "constant" and exact["overhead_ms"] == pytest.approx(0.1)
    few = fit_calibration(2 * sums[:4], sums[:4])  # too few networks to trust a slope
    assert few["model"] == "constant"
    forced = fit_calibration(2 * sums[:4], sums[:4], model="affine")
    assert forced["model"] == "affine" and forced["scale"] == pytest.approx(2.0)


def test_bad_calibration_input_is_one_line():
    with pytest.raises(hp.HwpruneError, match="one kernel sum per measured network"):
        fit_calibration([1.0, 2.0], [1.0])
    with pytest.raises(hp.HwpruneError, match="finite and positive"):
        fit_calibration([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(hp.HwpruneError, match="must be one of auto, constant, affine, proportional"):
        fit_calibration([1.0, 2.0], [1.0, 2.0], model="cubic")
    with pytest.raises(hp.HwpruneError, match="different kernel sums"):
        fit_calibration([1.0, 2.0], [1.0, 1.0], model="affine")


def test_profile_fits_the_scale_and_predicts_scaled_networks_exactly(scaled, space):
    cal = scaled.meta["calibration"]
    assert cal["model"] == "affine" and scaled.scale == pytest.approx(2.0, rel=1e-4)
    assert scaled.overhead_ms == pytest.approx(OVERHEAD_MS, abs=1e-4)
    for net in cal["networks"]:
        assert scaled.predict(net["encoding"]) == pytest.approx(net["measured_ms"], rel=1e-4)
    enc = encodings(space, 1, seed=4)[0]
    assert scaled.predict(enc) == pytest.approx(scaled.overhead_ms + 2.0 * sum(scaled.breakdown(enc).values()),
                                                rel=1e-4)
    encs = encodings(space, 20, seed=2)
    by_hand = [direct_sum(scaled, space, e) for e in encs]
    assert np.allclose([scaled.predict(e) for e in encs], by_hand, rtol=1e-12)
    assert np.allclose(scaled.predict_batch(np.array(encs)), by_hand, rtol=1e-12)


def test_scale_survives_a_round_trip_and_old_tables_read_as_constant(scaled, space, tmp_path):
    scaled.save(tmp_path / "t.csv")
    again = hp.LatencyTable.load(tmp_path / "t.csv", space, check_device=False)
    assert again.scale == scaled.scale and again.predict(space.full()) == pytest.approx(scaled.predict(space.full()))
    meta = dict(scaled.meta, calibration={"overhead_ms": 0.25})  # a table written before the scale existed
    old = hp.LatencyTable(scaled.entries, meta)
    assert old.scale == 1.0
    assert old.predict(space.full()) == pytest.approx(0.25 + old.kernel_sum_batch([space.full()])[0])


def test_recalibrate_refits_on_stored_networks_without_measuring(scaled, space):
    constant = recalibrate(scaled, "constant")
    assert constant.scale == 1.0 and constant.meta["calibration"]["model"] == "constant"
    assert constant.meta["calibration"]["networks"] == scaled.meta["calibration"]["networks"]
    nets = scaled.meta["calibration"]["networks"]
    errors = [abs(constant.predict(n["encoding"]) / n["measured_ms"] - 1) for n in nets]
    assert max(errors) > 0.1  # a constant cannot follow a network that costs twice its kernels
    back = recalibrate(constant)
    assert back.meta["calibration"]["model"] == "affine" and back.scale == pytest.approx(scaled.scale)
    assert (back.entries.values == scaled.entries.values).all()
    no_nets = hp.LatencyTable(scaled.entries, dict(scaled.meta, calibration={"overhead_ms": 0.1}))
    with pytest.raises(hp.HwpruneError, match="no calibration networks"):
        recalibrate(no_nets)


def test_rescoring_a_report_judges_a_new_calibration_on_the_same_measurements(scaled, space, tmp_path):
    constant = recalibrate(scaled, "constant")
    report = hp.validate_table(constant, space, n=6, profiler=FakeProfiler(network_scale=2.0), quiet=True)
    assert report.calibration["model"] == "constant" and report.lut["within_10pct"] < 1
    report.save(tmp_path / "r.json")
    loaded = FidelityReport.load(tmp_path / "r.json")
    assert loaded == report
    better = loaded.rescore(scaled)
    assert better.measured_ms == report.measured_ms and better.flops == report.flops
    assert better.retest == report.retest
    assert better.lut["within_10pct"] == 1.0 and better.lut["mape"] < 1e-4
    assert better.calibration["model"] == "affine" and "rescored" in better.rescored
    assert "affine" in better.summary()
    other = hp.LatencyTable(scaled.entries, dict(scaled.meta, space=dict(scaled.meta["space"], model="MobileNetV2")))
    with pytest.raises(hp.HwpruneError, match="not the table's"):
        loaded.rescore(other)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(hp.HwpruneError, match="cannot read fidelity report"):
        FidelityReport.load(tmp_path / "bad.json")


class _Busy(FakeProfiler):
    """Kernels timed 4x slow for the first ``busy_for`` chunks (a busy machine), whole networks at full speed."""

    def __init__(self, busy_for: int):
        super().__init__()
        self.busy_for = busy_for

    def measure_kernels(self, spec, pairs):
        out = super().measure_kernels(spec, pairs)
        if self.chunks > self.busy_for:
            return out
        return [type(m)(4 * m.p10_ms, 4 * m.median_ms, 4 * m.p90_ms, m.runs, m.note) for m in out]


def test_kernels_timed_on_a_busier_machine_than_the_networks_are_timed_again(space, tmp_path):
    """A table whose kernels sum to more than whole networks take would predict <= 0 ms for narrow networks (a
    constant calibration pulls the overhead far below zero): profile times the kernels once more and calibrates
    again; where they still disagree it refuses in one line, and a rerun on a quiet machine recovers."""
    plain = FakeProfiler()
    hp.profile(space, profiler=plain, cache_dir=tmp_path / "plain", calibrate=8, quiet=True)
    first_pass = plain.chunks
    busy = _Busy(busy_for=first_pass)
    table = hp.profile(space, profiler=busy, cache_dir=tmp_path / "once", calibrate=8, quiet=True,
                       calibration="constant")
    assert busy.chunks == 2 * first_pass and table.meta["profiling"]["re_measured"] == len(table.entries)
    assert table.overhead_ms == pytest.approx(OVERHEAD_MS, abs=1e-6) and table.predict(space.narrowest()) > 0

    with pytest.raises(hp.HwpruneError, match="predicts -[0-9.]+ ms for the narrowest network") as e:
        hp.profile(space, profiler=_Busy(busy_for=10**9), cache_dir=tmp_path / "always", calibrate=8, quiet=True,
                   calibration="constant")
    assert "\n" not in str(e.value)
    again = hp.profile(space, profiler=FakeProfiler(), cache_dir=tmp_path / "always", calibrate=8, quiet=True,
                       calibration="constant")
    assert again.overhead_ms == pytest.approx(OVERHEAD_MS, abs=1e-6)


def test_auto_falls_back_to_a_share_of_the_kernels_where_they_still_sum_to_more_than_networks(space, tmp_path):
    """Kernels that cost a share more alone than inside networks even when timed twice (tiny kernels; here every
    kernel read 4x): "auto" refits the same networks as a share of their kernels' sum, positive at every width, and
    says why; the models asked for by name refuse (above). Four networks: too few for "auto" to take a slope."""
    plain = FakeProfiler()
    hp.profile(space, profiler=plain, cache_dir=tmp_path / "plain", calibrate=4, quiet=True)
    busy = _Busy(busy_for=10**9)
    table = hp.profile(space, profiler=busy, cache_dir=tmp_path / "always", calibrate=4, quiet=True)
    assert busy.chunks == 2 * plain.chunks  # timed once more first
    cal = table.meta["calibration"]
    assert cal["model"] == "proportional" and table.overhead_ms == 0.0 and "block_ms" not in cal
    ratios = [n["measured_ms"] / n["lookup_sum_ms"] for n in cal["networks"]]
    assert table.scale == pytest.approx(np.median(ratios), rel=1e-3) and 0.25 < table.scale < 0.5
    assert cal["fallback"].startswith("constant predicted -") and "for the narrowest network" in cal["fallback"]
    assert table.predict(space.narrowest()) > 0 and table.predict(space.full()) > table.predict(space.narrowest())
    assert cal["loo_mape"]["proportional"] < cal["loo_mape"]["constant"]
    from hwprune.latency.calibration import describe
    line = describe(cal)
    assert line.startswith("calibration (proportional): ") and cal["fallback"] in line and "\n" not in line
    assert "fallback" not in recalibrate(table, "proportional").meta["calibration"]  # a model asked for by name
    with pytest.raises(hp.HwpruneError, match="the constant calibration predicts -"):  # and refused, as in profile
        recalibrate(table, "constant")
    with pytest.raises(hp.HwpruneError, match="kernel sum above 0 ms"):
        fit_calibration([1.0, 2.0], [0.0, 1.0], "proportional")


def test_a_refit_that_predicts_nothing_for_the_narrowest_network_is_refused(space, tmp_path):
    """Networks that cost a quarter of their kernels' sum: auto takes the exact line; a constant refit of that table
    would predict <= 0 ms for narrow networks, and recalibrate refuses it (hwprune profile --calibration constant on
    a finished table leaves it as it was)."""
    table = hp.profile(space, profiler=FakeProfiler(network_scale=0.25), cache_dir=tmp_path, calibrate=8, quiet=True)
    assert table.meta["calibration"]["model"] == "affine" and table.scale == pytest.approx(0.25, rel=1e-4)
    assert table.narrowest() == space.narrowest()
    nets = table.meta["calibration"]["networks"]
    constant = fit_calibration([n["measured_ms"] for n in nets], [n["lookup_sum_ms"] for n in nets], "constant")
    floor = constant["overhead_ms"] + table.kernel_sum_batch([space.narrowest()])[0]
    assert floor <= 0  # what a constant refit would predict for the narrowest network
    with pytest.raises(hp.HwpruneError, match=r"constant calibration predicts -[0-9.]+ ms for the narrowest") as e:
        recalibrate(table, "constant")
    assert "\n" not in str(e.value) and "--calibration proportional" in str(e.value)
    share = recalibrate(table, "proportional")
    assert share.overhead_ms == 0.0 and share.predict(space.narrowest()) > 0 and "fallback" not in share.meta[
        "calibration"]
    assert recalibrate(share, "auto").meta["calibration"]["model"] == "affine"


def test_the_fallback_drops_a_cost_per_dropped_block(tmp_path):
    """In a space that drops blocks, auto may fit a cost per dropped block beside the constant; where that model
    predicts <= 0 ms for the narrowest network, the proportional fallback keeps no block term (it is a share of the
    kernels alone) and says which model it replaced."""
    space = hp.SearchSpace.from_model(hp.create_model("resnet20").eval(), (1, 3, 32, 32), drop_blocks=True)
    table = hp.profile(space, profiler=FakeProfiler(), cache_dir=tmp_path, calibrate=8, quiet=True)
    cal = table.meta["calibration"]
    encs = [n["encoding"] for n in cal["networks"]]
    sums, dropped = table.kernel_sum_batch(encs), table.dropped_batch(encs)
    narrowest = table.kernel_sum_batch([space.narrowest()])[0]
    assert table.dropped_batch([space.narrowest()])[0] == dropped.max()  # it drops every block, as the most do
    # networks that cost their kernels less a constant just over the narrowest network's kernels, and more for
    # every block they drop: exactly a constant with a cost per dropped block, whose prediction for the narrowest
    # network is below zero
    gap = narrowest + 0.0003 * dropped.max() + 0.0005
    measured = sums - gap + 0.0003 * dropped
    assert (measured > 0).all()
    fitted = fit_calibration(measured, sums, "auto", dropped)
    assert fitted["model"] == "constant" and fitted["block_ms"] == pytest.approx(-0.0003)
    hand = hp.LatencyTable(table.entries, dict(table.meta, calibration={
        **cal, "networks": [dict(n, measured_ms=float(m)) for n, m in zip(cal["networks"], measured)]}))
    refit = recalibrate(hand, "auto")
    assert refit.meta["calibration"]["model"] == "proportional" and "block_ms" not in refit.meta["calibration"]
    assert refit.block_ms == 0.0 and refit.predict(space.narrowest()) > 0
    assert refit.meta["calibration"]["fallback"].startswith("constant+blocks predicted -0.0005 ms")
    with pytest.raises(hp.HwpruneError, match=r"the constant\+blocks calibration predicts -0.0005 ms"):
        recalibrate(hand, "constant")


def test_a_calibration_that_misses_its_own_networks_says_what_to_do():
    from hwprune.latency.calibration import SUSPECT_LOO_MAPE, describe, loo_mapes

    nets = [{"encoding": [0]}] * 16
    quiet = describe({"model": "constant", "loo_mape": {"constant": 0.019, "affine": 0.02}, "networks": nets})
    assert quiet == "calibration (constant): 1.9% mean error on each of its 16 networks predicted from the others"
    busy = describe({"model": "affine", "loo_mape": {"constant": 0.21, "affine": 0.206}, "networks": nets})
    assert busy.startswith("calibration (affine): 20.6% mean error") and "profile again when it is quiet" in busy
    assert f"over {SUSPECT_LOO_MAPE:.0%}" in busy and "\n" not in busy
    assert "too few" in describe({"overhead_ms": 0.1, "networks": nets[:2]})  # no leave-one-out under 3 networks
    # a table made before the figure was recorded: computed from its networks, each predicted at the others' median
    # (1.0 ms): errors 0, 0.1 / 1.1, 0.1 / 0.9 and 0, mean 5.05%
    old = [{"measured_ms": m, "lookup_sum_ms": 1.0} for m in (1.0, 1.1, 0.9, 1.0)]
    assert describe({"overhead_ms": 0.0, "networks": old}).startswith("calibration (constant): 5.1% mean error")
    # and hwprune profile --json gives the same figure for it, where the table stores none
    assert loo_mapes({"overhead_ms": 0.0, "networks": old})["constant"] == pytest.approx(0.0505, abs=1e-4)
    assert loo_mapes({"loo_mape": {"constant": 0.019}, "networks": old}) == {"constant": 0.019}  # stored: as stored
