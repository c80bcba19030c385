"""LatencyTable: predictor == sum of rows + overhead, calibration, round trip, refusals, resume, speed."""
import time
from pathlib import Path

import numpy as np
import pytest

import hwprune as hp
from hwprune.latency.store import KernelStore

from latency_fakes import OVERHEAD_MS, FakeProfiler, direct_sum, encodings, fake_ms


@pytest.fixture(scope="module")
def space():
    return hp.SearchSpace.from_model(hp.create_model("resnet20").eval(), (1, 3, 32, 32))


@pytest.fixture(scope="module")
def table(space, tmp_path_factory):
    cache = tmp_path_factory.mktemp("kernels")
    return hp.profile(space, profiler=FakeProfiler(), cache_dir=cache, calibrate=4, quiet=True)


def test_predict_is_sum_of_rows_plus_overhead(table, space):
    encs = encodings(space, 30)
    by_hand = [direct_sum(table, space, e) for e in encs]
    assert np.allclose([table.predict(e) for e in encs], by_hand, rtol=1e-12)
    assert np.allclose(table.predict_batch(np.array(encs)), by_hand, rtol=1e-12)
    enc = encs[0]
    assert table.scale == 1.0  # 4 calibration networks: too few to fit a slope
    assert sum(table.breakdown(enc).values()) + table.overhead_ms == pytest.approx(table.predict(enc), rel=1e-12)
    assert len(table.breakdown(enc)) == 23  # 21 convs + pooling + classifier, each once
    assert table.predict(space.full()) > table.predict(space.uniform(0.5)) > table.predict(space.uniform(0.25))


def test_calibration_recovers_the_known_overhead(table, space):
    assert table.overhead_ms == pytest.approx(OVERHEAD_MS, abs=1e-5)  # rows are stored to the ns
    cal = table.meta["calibration"]
    assert len(cal["networks"]) == 4 and cal["networks"][0]["encoding"] == list(space.full())
    # the networks the overhead was fitted on are predicted exactly by the fake backend's own model
    for net in cal["networks"]:
        assert table.predict(net["encoding"]) == pytest.approx(net["measured_ms"], abs=2e-5)
    assert cal["flops_ms_per_gflop"] > 0


def test_every_width_the_space_allows_is_a_row(table, space):
    entries = table.entries
    assert len(entries) == 6994 == table.meta["profiling"]["entries"]
    assert not entries.duplicated(["op", "kernel", "stride", "height", "activation", "residual", "cin", "cout"]).any()
    conv2 = entries[(entries.residual) & (entries.height == 8)]  # layer3 conv2: every (inner, stream) pair
    assert len(conv2) == 31 * 31
    assert set(entries.columns) >= {"op", "cin", "cout", "kernel", "stride", "groups", "height", "width", "batch",
                                    "dtype", "median_ms", "p10_ms", "p90_ms", "runs"}


def test_round_trip_keeps_rows_metadata_and_predictions(table, space, tmp_path):
    path = tmp_path / "t.csv"
    table.save(path)
    text = path.read_text().splitlines()
    assert text[0] == "# hwprune latency table" and text[1].startswith("# format: ")
    again = hp.LatencyTable.load(path, space, check_device=False)
    assert again.meta == table.meta
    assert (again.entries.values == table.entries.values).all()
    encs = np.array(encodings(space, 20, seed=3))
    assert np.allclose(again.predict_batch(encs), table.predict_batch(encs), rtol=1e-8)


def test_table_for_another_space_backend_or_machine_is_refused(table, space, tmp_path):
    path = tmp_path / "t.csv"
    table.save(path)
    other = hp.SearchSpace.from_model(hp.create_model("resnet20").eval(), (1, 3, 32, 32), round_to=4)
    with pytest.raises(hp.TableMismatchError, match="profiled for another space") as e:
        hp.LatencyTable.load(path, other, check_device=False)
    assert "\n" not in str(e.value) and "allow_mismatch=True" in str(e.value)
    with pytest.raises(hp.TableMismatchError, match="threads=1, not 2|threads=1"):
        hp.LatencyTable.load(path, space, expect={"threads": 2}, check_device=False)
    with pytest.raises(hp.TableMismatchError, match="measured on 'fake cpu'"):
        hp.LatencyTable.load(path, space)  # this machine is not the fake device
    reused = hp.LatencyTable.load(path, space, allow_mismatch=True)  # deliberate reuse
    assert reused.predict(space.full()) == pytest.approx(table.predict(space.full()))
    with pytest.raises(hp.HwpruneError, match="not a hwprune latency table"):
        bad = tmp_path / "bad.csv"
        bad.write_text("# format: \"other\"\na,b\n1,2\n")
        hp.LatencyTable.load(bad)


def test_rebinding_to_another_space_reuses_rows_and_names_a_missing_one(table, space, tmp_path):
    path = tmp_path / "t.csv"
    table.save(path)
    narrow = hp.SearchSpace.from_model(hp.create_model("resnet20").eval(), (1, 3, 32, 32),
                                       ratios=[0.25, 0.49, 1.0])  # a subset of the default ratios: all measured
    bound = hp.LatencyTable.load(path, narrow, allow_mismatch=True)
    enc = narrow.uniform(0.5)
    assert bound.predict(enc) == pytest.approx(direct_sum(bound, narrow, enc))
    wide = hp.SearchSpace.from_model(hp.create_model("resnet20").eval(), (1, 3, 32, 32), ratios=[1.0, 1.5],
                                     max_ratio=1.5)  # width 96 was never measured
    rebound = hp.LatencyTable.load(path, wide, allow_mismatch=True)
    with pytest.raises(hp.MissingEntryError, match="no latency entry for conv2d .* cout=24"):
        rebound.predict((1,) * len(wide))


def test_interpolation_fills_missing_rows_only_when_enabled(table, space, tmp_path):
    path = tmp_path / "t.csv"
    pos = [g.name for g in space.groups].index("layer3.0.conv1")  # the inner width of the first layer3 block
    inner = space.groups[pos].choices[15]
    drop = (table.entries.height == 8) & table.entries.residual & (table.entries.cin == inner)
    type(table)(table.entries[~drop], table.meta).save(path)
    holes = hp.LatencyTable.load(path, space, check_device=False)
    enc = list(space.full())
    enc[pos] = 15
    with pytest.raises(hp.MissingEntryError, match="interpolate=True"):
        holes.predict(enc)
    filled = hp.LatencyTable.load(path, space, check_device=False, interpolate=True)
    # the fake latency is linear in cin for fixed cout, so bilinear interpolation is exact here
    assert filled.predict(enc) == pytest.approx(table.predict(enc), rel=1e-5)  # rows are stored to the ns


def test_interrupted_profile_resumes_without_measuring_twice(space, tmp_path):
    first = FakeProfiler(fail_after=40)
    with pytest.raises(KeyboardInterrupt):
        hp.profile(space, profiler=first, cache_dir=tmp_path, calibrate=2, quiet=True)
    store = KernelStore(tmp_path, first.fingerprint())
    done = first.measured
    assert first.chunks == 40 and 1000 < done < 2001 and len(store) == done  # every finished chunk was saved
    second = FakeProfiler()
    table = hp.profile(space, profiler=second, cache_dir=tmp_path, calibrate=2, quiet=True)
    assert second.measured == 6994 - done == table.meta["profiling"]["measured"]
    assert table.meta["profiling"]["reused"] == done
    spec_rows = table.entries[(table.entries.cin == 16) & (table.entries.cout == 16) & (table.entries.height == 32)]
    assert len(spec_rows) == 4 and all(r.p10_ms > 0 for r in spec_rows.itertuples())  # 3x3 s1, +add, s2, 1x1 s2
    third = FakeProfiler()  # a second model with the same kernels: nothing left to measure
    hp.profile(space, profiler=third, cache_dir=tmp_path, calibrate=1, quiet=True)
    assert third.measured == 0
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_predictions_per_second(table, space):
    """Well above the issue's bar of 50,000/s on a quiet machine (benchmarks/results/predict_speed.csv); the
    bars here leave room for a machine shared with other jobs (best of 3 rounds)."""
    encs = np.array(encodings(space, 20000, seed=5))
    singles = [tuple(e) for e in encs[:5000]]

    def rate(fn, n):
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return n / best

    assert rate(lambda: table.predict_batch(encs), len(encs)) > 200_000
    assert rate(lambda: [table.predict(e) for e in singles], len(singles)) > 20_000


def test_bad_encodings_are_refused_in_one_line(table):
    with pytest.raises(hp.EncodingError, match="12 prunable groups"):
        table.predict((0, 1))
    with pytest.raises(hp.EncodingError, match="must be in 0..14"):
        table.predict((15,) + (0,) * 11)
    with pytest.raises(hp.EncodingError, match=r"shape \(N, 12\)"):
        table.predict_batch(np.zeros((3, 4), int))


def test_fake_latency_model_is_what_the_rows_hold(table):
    row = table.entries.iloc[0]
    from hwprune.profilers.spec import KernelSpec

    spec = KernelSpec.from_row(row.to_dict())
    assert row.p10_ms == pytest.approx(fake_ms(spec, row.cin, row.cout), abs=5e-7)  # stored to the ns
    assert row.median_ms == pytest.approx(1.1 * row.p10_ms, abs=1e-6) and row.runs == 25


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parent.parent / "latency_tables").glob("*.csv")),
                         ids=lambda p: p.name)
def test_shipped_tables_load_for_their_zoo_space_and_reproduce_their_sums(path):
    """A shipped table loads for the zoo model's default space (on any machine, device check off) and its
    kernel sums for the networks it was calibrated on are the ones recorded when it was made."""
    meta_space = hp.LatencyTable.load(path, allow_mismatch=True).meta["space"]
    model = hp.create_model(path.name.split("-")[0]).eval()
    space = hp.SearchSpace.from_model(model, tuple(meta_space["input_shape"]))
    table = hp.LatencyTable.load(path, space=space, check_device=False)
    networks = table.meta["calibration"]["networks"]
    sums = table.kernel_sum_batch(np.array([n["encoding"] for n in networks]))
    assert sums == pytest.approx([n["lookup_sum_ms"] for n in networks], rel=1e-3, abs=1e-3)
    assert table.predict(space.full()) > table.predict(space.uniform(0.5)) > 0


def test_a_space_mismatch_names_what_differs_and_the_cli_flag(table, space, tmp_path):
    path = tmp_path / "t.csv"
    table.save(path)
    cases = [
        (hp.SearchSpace.from_model(hp.create_model("resnet20").eval(), (1, 3, 32, 32), round_to=4),
         "width choices of group 'conv1'.*--round-to"),
        (hp.SearchSpace.from_model(hp.create_model("resnet20", in_channels=1).eval(), (1, 1, 32, 32)),
         r"input channels: input shape \[1, 3, 32, 32\] in the table, \[1, 1, 32, 32\] here"),
        (hp.SearchSpace.from_model(hp.create_model("resnet20").eval(), (1, 3, 64, 64)), "input size"),
        (hp.SearchSpace.from_model(hp.create_model("mobilenet_v2_cifar").eval(), (1, 3, 32, 32)),
         "model CifarResNet in the table, MobileNetV2 here"),
        (hp.SearchSpace.from_model(hp.create_model("resnet56").eval(), (1, 3, 32, 32)), "channel groups"),
    ]
    for other, what in cases:
        with pytest.raises(hp.TableMismatchError, match=what) as e:
            hp.LatencyTable.load(path, other, check_device=False)
        assert "--allow-mismatch" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("damage,message", [("negative", "negative or non-finite times"),
                                            ("text", "has a value that is not a number")])
def test_a_damaged_table_is_one_line(table, tmp_path, damage, message):
    path = tmp_path / "t.csv"
    table.save(path)
    lines = path.read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    cols = lines[header].split(",")
    row = lines[header + 1].split(",")
    row[cols.index("p10_ms")] = "-23.0" if damage == "negative" else "fast"
    lines[header + 1] = ",".join(row)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(hp.HwpruneError, match=message) as e:
        hp.LatencyTable.load(path, check_device=False)
    assert "\n" not in str(e.value)


def test_what_is_not_an_encoding_is_one_line_for_a_table(table, space):
    for bad, text in ((None, "got NoneType None"), ("abc", "got str 'abc'"), ([0] * (len(space) - 1), "entries but"),
                      ([0.5] * len(space), "entry 0 is 0.5")):
        with pytest.raises(hp.EncodingError, match=text):
            table.predict(bad)
    with pytest.raises(hp.EncodingError, match="expected encodings of shape"):
        table.predict_batch(None)
    assert table.predict([0.0] * len(space)) == table.predict(space.narrowest())  # integral floats are indices
