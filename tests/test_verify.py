"""verify on a model outside the zoo: a torch-backend table needs the model to rebuild the networks."""
import json

import numpy as np
import pytest
import torch

import hwprune as hp
from hwprune.deploy.export import export_onnx
from hwprune.errors import HwpruneError

from conftest import ToyNet
from latency_fakes import FakeProfiler


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
