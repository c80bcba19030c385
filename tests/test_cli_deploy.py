"""The CLI from a trained PruningNet to a deployable file: search, retrain and export, chained by run folders."""
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from hwprune.cli import main
from hwprune.deploy.retrain import load_pruned
from hwprune.files.checkpoint import load_checkpoint


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A 1-epoch PruningNet on 256 bundled images, searched under a FLOPs budget (no table needed)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("chain")
    r = run("train", "--limit", "256", "--batch-size", "32", "--hidden", "8", "--round-to", "8", "--epochs", "1",
            "--eval-ratios", "", "--device", "cpu", "--quiet", "--out", root / "train", "--rank", "0")
    assert r.exit_code == 0, r.output
    assert torch.load(root / "train" / "pruningnet.pt", weights_only=True)["pnet"]["rank"] is None  # --rank 0: full
    r = run("search", "--checkpoint", root / "train" / "pruningnet.pt", "--flops", "8M", "--population", "4",
            "--parents", "2", "--mutations", "2", "--crossovers", "1", "--generations", "2", "--calib-batches", "1",
            "--val-batches", "1", "--device", "cpu", "--quiet", "--out", root / "search")
    assert r.exit_code == 0, r.output
    return root


def test_retrain_finds_the_searched_pruningnet_and_its_data_through_the_run_folders(searched):
    out = searched / "retrain"
    r = run("retrain", "--result", searched / "search" / "result.json", "--epochs", "1", "--device", "cpu",
            "--quiet", "--out", out)
    assert r.exit_code == 0, r.output
    result = json.loads((searched / "search" / "result.json").read_text())
    model, info = load_pruned(out / "model.pt")
    assert info["encoding"] == result["best"][0]["encoding"]
    assert sum(info["channels"].values()) == int(r.output.split("channels ")[1].split()[0])
    assert 0 <= info["val_acc"] <= 1 and 0 <= info["test_acc"] <= 1
    stage = json.loads((out / "run.json").read_text())["stages"]["retrain"]
    assert stage["status"] == "done" and stage["settings"]["checkpoint"].endswith("pruningnet.pt")
    assert stage["settings"]["data"] == {"data": "bundled", "image_size": None, "batch_size": 32, "seed": 0,
                                         "limit": 256}  # what train recorded in its checkpoint
    assert info["meta"]["data"] == stage["settings"]["data"]  # and what export will read from this one


def test_retrain_uniform_ratio_and_refusals(searched):
    r = run("retrain", "--checkpoint", searched / "train" / "pruningnet.pt", "--uniform", "0.5", "--epochs", "0",
            "--device", "cpu", "--quiet", "--out", searched / "uniform")
    assert r.exit_code == 0, r.output
    _, info = load_pruned(searched / "uniform" / "model.pt")
    widths = list(info["channels"].values())
    assert info["encoding"] == list(info["space_obj"].uniform(0.5)) and min(widths) >= 8
    r = run("retrain", "--epochs", "1", "--out", searched / "nothing")
    assert r.exit_code == 1 and r.output.strip().count("\n") == 0 and "give --result" in r.output
    r = run("retrain", "--result", searched / "search" / "result.json", "--budget", "1.5", "--out", searched / "x")
    assert r.exit_code == 1 and "has no budget 1.5 ms" in r.output
    before = (searched / "uniform" / "model.pt").read_bytes()  # a finished model is never trained over
    r = run("retrain", "--checkpoint", searched / "train" / "pruningnet.pt", "--uniform", "0.7", "--epochs", "0",
            "--device", "cpu", "--quiet", "--out", searched / "uniform")
    assert r.exit_code == 1 and "already holds a retrained model; pass --resume" in r.output
    assert (searched / "uniform" / "model.pt").read_bytes() == before


def test_export_checks_parity_on_real_images_and_records_itself(searched):
    out = searched / "model.onnx"
    r = run("export", "--checkpoint", searched / "retrain" / "model.pt", "--out", out, "--run", searched / "retrain",
            "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["real_inputs"] is True and rep["inputs_checked"] > 8 and rep["max_abs_diff"] <= 1e-4
    model, _ = load_pruned(searched / "retrain" / "model.pt")
    x = torch.randn(1, 1, 32, 32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        assert np.abs(sess.run(None, {"input": x.numpy()})[0] - model(x).numpy()).max() <= 1e-4
    stages = json.loads((searched / "retrain" / "run.json").read_text())["stages"]
    assert set(stages) == {"retrain", "export"} and stages["export"]["status"] == "done"
    assert stages["export"]["files"]["onnx"] == str(out)  # outside the folder: recorded as given
    text = run("export", "--checkpoint", searched / "retrain" / "model.pt", "--out", searched / "m2.onnx")
    assert text.exit_code == 0 and "onnx.checker passed" in text.output and "real inputs" in text.output
    mtime = (searched / "m2.onnx").stat().st_mtime_ns
    again = run("export", "--checkpoint", searched / "retrain" / "model.pt", "--out", searched / "m2.onnx")
    assert again.exit_code == 1 and "exists; pass --force" in again.output
    assert (searched / "m2.onnx").stat().st_mtime_ns == mtime
    forced = run("export", "--checkpoint", searched / "retrain" / "model.pt", "--out", searched / "m2.onnx", "--force")
    assert forced.exit_code == 0 and (searched / "m2.onnx").stat().st_mtime_ns != mtime
    assert load_checkpoint(searched / "retrain" / "model.pt")["format"] == "hwprune.model/1"


def test_export_refuses_a_missing_or_foreign_checkpoint(searched, tmp_path):
    r = run("export", "--checkpoint", tmp_path / "none.pt")
    assert r.exit_code == 2 and "does not exist" in r.output
    r = run("export", "--checkpoint", searched / "train" / "pruningnet.pt", "--out", tmp_path / "p.onnx")
    assert r.exit_code == 1 and r.output.startswith("error:") and "not a 'hwprune.model/1'" in r.output
