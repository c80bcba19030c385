"""Bring your own model: file.py:function or package.module:function, with its weights, through the CLI."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hwprune as hp
from hwprune.models import ModelLoadError, load_model
from hwprune.search import SearchConfig

HERE = Path(__file__).resolve().parent
SPEC = f"{HERE / 'byo_model.py'}:build"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hwprune.cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = load_model(SPEC)
    for m in model.modules():  # weights that differ from a fresh init, so loading them shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.weight.data.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("w") / "user.pt"
    torch.save({"epoch": 3, "state_dict": model.state_dict()}, path)  # a checkpoint dict holding the state_dict
    return model.eval(), path


def test_a_model_from_a_file_loads_with_its_weights_and_remembers_where_it_came_from(weights):
    model, path = weights
    loaded = load_model(SPEC, weights=path).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.hwprune_spec == {"source": SPEC}
    space = hp.SearchSpace.from_model(loaded, (1, 1, 16, 16))
    again = hp.SearchSpace.from_json(space.to_json())  # rebuilt by importing the file again, no model passed
    assert again.fingerprint == space.fingerprint and type(again.model).__name__ == "UserNet"


def test_a_package_function_loads():
    model = load_model("torch.nn:Identity")
    assert isinstance(model, torch.nn.Identity) and model.hwprune_spec == {"source": "torch.nn:Identity"}


@pytest.mark.parametrize("spec,message", [
    ("nowhere/model.py:build", "model file nowhere/model.py does not exist"),
    (f"{HERE / 'byo_model.py'}:missing", "has no function 'missing'"),
    (f"{HERE / 'byo_model.py'}:not_a_model", "returned a str, not an nn.Module"),
    (f"{HERE / 'byo_model.py'}:broken", "broken() failed: RuntimeError: no GPU here"),
    ("no_such_package.models:build", "cannot import 'no_such_package.models'"),
])
def test_a_bad_model_spec_is_one_line(spec, message):
    with pytest.raises(ModelLoadError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        load_model(spec)
    assert "\n" not in str(e.value)


def test_weights_of_another_architecture_name_the_first_mismatch(weights, tmp_path):
    _, path = weights
    with pytest.raises(ModelLoadError, match="the file lacks 'conv1.weight'"):
        load_model("resnet20", weights=path)
    small = tmp_path / "shape.pt"
    sd = load_model(SPEC).state_dict()
    sd["c2.weight"] = torch.zeros(24, 16, 1, 1)
    torch.save(sd, small)
    with pytest.raises(ModelLoadError, match=r"'c2.weight' is \(24, 16, 1, 1\) in the file, \(24, 16, 3, 3\)"):
        load_model(SPEC, weights=small)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot read weights .* safely"):
        load_model(SPEC, weights=junk)


def test_the_cli_takes_the_users_model_end_to_end(weights, tmp_path):
    _, path = weights
    r = cli("info", "--model", SPEC, "--weights", path, "--input-shape", "1,1,32,32", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["prunable_groups"] == 2  # c1's group; c2, c3 and the add share the other
    r = cli("info", "--model", SPEC)
    assert r.returncode == 2 and "give its --input-shape" in r.stderr
    r = cli("train", "--model", SPEC, "--weights", path, "--limit", "256", "--batch-size", "32", "--hidden", "8",
            "--epochs", "1", "--eval-ratios", "", "--device", "cpu", "--quiet", "--out", tmp_path / "t")
    assert r.returncode == 0, r.stderr
    pnet_config = torch.load(tmp_path / "t" / "pruningnet.pt", weights_only=True)["pnet"]
    assert pnet_config["rank"] == 4  # the default generator from trained weights
    r = cli("search", "--checkpoint", tmp_path / "t" / "pruningnet.pt", "--flops", "1M", "--population", "4",
            "--parents", "2", "--mutations", "1", "--crossovers", "1", "--generations", "1", "--calib-batches", "1",
            "--val-batches", "1", "--device", "cpu", "--quiet", "--out", tmp_path / "s", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli("retrain", "--result", tmp_path / "s" / "result.json", "--epochs", "1", "--device", "cpu", "--quiet",
            "--out", tmp_path / "r")
    assert r.returncode == 0, r.stderr
    r = cli("export", "--checkpoint", tmp_path / "r" / "model.pt", "--out", tmp_path / "user.onnx", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["real_inputs"] is True
    r = cli("train", "--model", SPEC, "--weights", HERE / "byo_model.py", "--out", tmp_path / "bad")
    assert r.returncode == 1 and r.stderr.startswith("error: cannot read weights") and r.stderr.count("\n") == 1


def test_inherit_search_and_fine_tuning_from_the_users_trained_model(weights, tmp_path):
    """search --evaluator inherit takes the model and its weights; retrain fine-tunes the winner from them,
    distilled from the dense model, and export rebuilds it: no PruningNet anywhere."""
    _, path = weights
    r = cli("search", "--evaluator", "inherit", "--model", SPEC, "--weights", path, "--round-to", "4", "--flops",
            "1M", "--population", "4", "--parents", "2", "--mutations", "1", "--crossovers", "1", "--generations",
            "1", "--calib-batches", "1", "--val-batches", "1", "--tune-steps", "2", "--device", "cpu", "--quiet",
            "--rerank-top", "2", "--rerank-steps", "3", "--rerank-draws", "2", "--out", tmp_path / "s",
            "--no-ramp" if SearchConfig.ramp else "--ramp")
    assert r.returncode == 0, r.stderr
    stage = json.loads((tmp_path / "s" / "run.json").read_text())["stages"]["search"]
    assert stage["settings"]["evaluator"] == "inherit" and stage["settings"]["dense"]["weights"] == str(path)
    # the 2 fittest were scored again (3 tuning steps each, the mean of 2 draws) and the best by that score wins
    result = json.loads((tmp_path / "s" / "result.json").read_text())
    assert stage["settings"]["rerank"] == [2, 3, 2] and result["stats"]["rerank"]["tune_steps"] == 3
    assert result["stats"]["rerank"]["draws"] == 2
    assert result["stats"]["config"]["ramp"] is not SearchConfig.ramp  # (the option reaches the search)
    assert result["stats"]["config"]["workers"] is None  # (without --workers: one scoring process per core)
    best = result["best"][0]
    assert best["rescored_rank"] in (0, 1) and 0 <= best["rescored"] <= 1
    r = cli("retrain", "--result", tmp_path / "s" / "result.json", "--epochs", "0", "--device", "cpu", "--quiet",
            "--out", tmp_path / "r")
    assert r.returncode == 0, r.stderr
    settings = json.loads((tmp_path / "r" / "run.json").read_text())["stages"]["retrain"]["settings"]
    assert settings["init"] == "inherit" and settings["teacher"] == "the dense model"
    pruned, info = hp.load_pruned(tmp_path / "r" / "model.pt")
    from hwprune.runs.settings import DataSettings, DenseModel
    from hwprune.runs.stages import loaders_for, ordered_dense

    dense = DenseModel(**settings["dense"])  # the default order (Taylor, on the data's calibration batches)
    assert dense.importance == "taylor" and dense.weights == str(path)
    _, space, ordered = ordered_dense(dense, loaders_for(DataSettings(**settings["data"])))
    want = space.materialize(info["encoding"], source=ordered)
    for (name, a), b in zip(pruned.state_dict().items(), want.state_dict().values()):
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(a, b), name  # 0 epochs: exactly the inherited, ordered weights
    r = cli("retrain", "--result", tmp_path / "s" / "result.json", "--init", "pruningnet", "--out", tmp_path / "x")
    assert r.returncode == 1 and "there is no PruningNet to start from" in r.stderr
    r = cli("search", "--evaluator", "inherit", "--model", SPEC, "--flops", "1M", "--out", tmp_path / "nw")
    assert r.returncode == 1 and "needs the dense model's trained weights" in r.stderr
    r = cli("search", "--model", SPEC, "--flops", "1M", "--out", tmp_path / "mix")
    assert r.returncode == 2 and "--evaluator pruningnet takes a trained PruningNet" in r.stderr
    r = cli("search", "--checkpoint", path, "--rerank-top", "2", "--flops", "1M", "--out", tmp_path / "pn")
    assert r.returncode == 2 and "--rerank-top tunes inherited weights longer" in r.stderr


def test_pretrain_then_inherit_search_from_its_weights(tmp_path):
    """No weights yet: pretrain trains the dense model, and its dense.pt is the --weights of what follows."""
    r = cli("pretrain", "--model", "resnet20", "--limit", "256", "--batch-size", "32", "--epochs", "1", "--device",
            "cpu", "--quiet", "--out", tmp_path / "dense")
    assert r.returncode == 0, r.stderr
    assert f"use it as --weights {tmp_path / 'dense'}/dense.pt" in r.stdout
    stage = json.loads((tmp_path / "dense" / "run.json").read_text())["stages"]["pretrain"]
    assert stage["status"] == "done" and 0 <= stage["summary"]["val_acc"] <= 1
    model = load_model("resnet20", in_channels=1, weights=tmp_path / "dense" / "dense.pt")
    saved = torch.load(tmp_path / "dense" / "dense.pt", weights_only=True)
    assert saved["format"] == "hwprune.dense/1" and saved["val_acc"] == stage["summary"]["val_acc"]
    assert all(torch.equal(v, saved["state_dict"][k]) for k, v in model.state_dict().items())
    r = cli("search", "--evaluator", "inherit", "--model", "resnet20", "--weights", tmp_path / "dense" / "dense.pt",
            "--round-to", "8", "--flops", "10M", "--population", "4", "--parents", "2", "--mutations", "1",
            "--crossovers", "1", "--generations", "1", "--calib-batches", "1", "--val-batches", "1", "--tune-steps", "2",
            "--device", "cpu", "--quiet", "--out", tmp_path / "s")
    assert r.returncode == 0, r.stderr
    # the search validates on the dense model's own split: its data, seed and training-image limit come with dense.pt
    searched = json.loads((tmp_path / "s" / "run.json").read_text())["stages"]["search"]["settings"]["data"]
    assert searched == saved["meta"]["data"] and searched["limit"] == 256
    r = cli("pretrain", "--limit", "256", "--epochs", "1", "--out", tmp_path / "dense")
    assert r.returncode == 1 and "already holds a pretrained model; pass --resume" in r.stderr
