"""verify on a model outside the zoo: a torch-backend table needs the model to rebuild the networks."""
import json

import numpy as np
import pytest
import torch

import hwprune as hp
from hwprune.deploy.export import export_onnx
from hwprune.errors import HwpruneError

from conftest import ToyNet
from latency_fakes import DisturbedProfiler, FakeProfiler


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("verify")
    torch.manual_seed(0)
    model = ToyNet().eval()
    space = hp.SearchSpace.from_model(model, (1, 3, 16, 16))
    table = hp.profile(space, profiler=FakeProfiler(), cache_dir=tmp / "kernels", calibrate=4, quiet=True)
    enc = space.sample(np.random.default_rng(1))
    path = tmp / "toy.onnx"
    export_onnx(space.materialize(enc, source=model), path, torch.randn(1, 3, 16, 16),
                metadata={"space": json.loads(space.to_json()), "encoding": list(enc), "input_shape": [1, 3, 16, 16]})
    return model, space, table, enc, path


def test_a_model_outside_the_zoo_without_the_model_is_one_line(exported):
    _, _, table, _, path = exported
    with pytest.raises(HwpruneError, match="outside the zoo: pass the unpruned model") as e:
        hp.verify(path, table, profiler=FakeProfiler())
    assert "\n" not in str(e.value)


def test_a_model_outside_the_zoo_with_the_model_is_measured_and_predicted(exported):
    model, space, table, enc, path = exported
    budget = table.predict(enc) * 1.5
    rep = hp.verify(path, table, latency_ms=budget, profiler=FakeProfiler(), model=model)
    assert rep.predicted_ms == pytest.approx(table.predict(enc))
    assert rep.measured_ms == pytest.approx(rep.predicted_ms, rel=1e-4)  # the fake backend is what the table holds
    assert rep.dense_measured_ms == pytest.approx(table.predict(space.full()), rel=1e-4)
    assert rep.within_budget is True and rep.speedup > 1


def test_verify_times_twice_and_each_network_keeps_its_faster_timing(exported):
    """One timing a busy machine slowed throughout (every network 1.6x) does not fail a budget; with one timing it
    does, and a machine slower on both timings reads slow."""
    model, space, table, enc, path = exported
    budget = table.predict(enc) * 1.3
    for factors in ([1.6, 1.0], [1.0, 1.6]):
        prof = DisturbedProfiler(factors)
        rep = hp.verify(path, table, latency_ms=budget, profiler=prof, model=model)
        assert prof.calls == 2 and rep.within_budget is True
        assert rep.measured_ms == pytest.approx(table.predict(enc), rel=1e-4)
        assert rep.dense_measured_ms == pytest.approx(table.predict(space.full()), rel=1e-4)
    once = hp.verify(path, table, latency_ms=budget, profiler=DisturbedProfiler([1.6, 1.0]), model=model, timings=1)
    assert once.within_budget is False and once.measured_ms == pytest.approx(1.6 * table.predict(enc), rel=1e-4)
    slow = hp.verify(path, table, latency_ms=budget, profiler=DisturbedProfiler([1.5, 1.6]), model=model)
    assert slow.measured_ms == pytest.approx(1.5 * table.predict(enc), rel=1e-4) and slow.within_budget is False
    with pytest.raises(HwpruneError, match="timings"):
        hp.verify(path, table, profiler=FakeProfiler(), model=model, timings=0)
