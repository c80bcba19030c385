"""PruningNet training: learning, exact resume after a real interruption, DDP, checkpoint errors."""
import os
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

import hwprune as hp
from hwprune.files.checkpoint import CheckpointError, load_checkpoint
from hwprune.data import load_dataset, make_loaders
from hwprune.supernet.pruningnet import PruningNet
from hwprune.supernet.train import load_pruningnet, sample_encoding, train_pruningnet
from hwprune.training import TrainConfig

SMALL = ["--limit", "256", "--batch-size", "32", "--hidden", "8", "--eval-ratios", "0.5", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "hwprune.cli", *args], capture_output=True, text=True, env=ENV,
                       timeout=600)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_short_training_lowers_the_loss():
    data = load_dataset("bundled")
    data.train_idx = data.train_idx[:640]
    loaders = make_loaders(data, 64)
    space = hp.SearchSpace.from_model(hp.create_model("resnet20", in_channels=1), (1, 1, 32, 32))
    torch.manual_seed(0)
    pnet = PruningNet(space, hidden=8)
    hist = train_pruningnet(pnet, loaders.train, config=TrainConfig(epochs=3, eval_ratios=(), sampling="single"),
                            progress=False, log=lambda s: None)  # (the sandwich: tests/test_sampling.py)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert hist[-1]["loss"] < hist[0]["loss"] - 0.1
    assert hist[-1]["train_acc"] > 0.2  # well above chance (0.1)


def test_every_rank_and_resume_draw_the_same_encoding():
    space = hp.SearchSpace.from_model(hp.create_model("resnet20"), (1, 3, 32, 32))
    assert sample_encoding(space, 0, 7) == sample_encoding(space, 0, 7) != sample_encoding(space, 0, 8)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "uninterrupted"
    cli("train", *SMALL, "--epochs", "2", "--checkpoint-every", "3", "--out", str(out))
    return out


def test_run_folder_and_reload(trained_run):
    assert {"run.json", "space.json", "history.csv", "pruningnet.pt"} <= {p.name for p in trained_run.iterdir()}
    manifest = json.loads((trained_run / "run.json").read_text())
    assert manifest["format"] == "hwprune.run/1" and manifest["stages"]["train"]["status"] == "done"
    assert manifest["stages"]["train"]["files"] == {"checkpoint": "pruningnet.pt", "history": "history.csv",
                                                    "space": "space.json"}
    assert manifest["stages"]["train"]["settings"]["resolved_train"]["epochs"] == 2
    assert len((trained_run / "history.csv").read_text().strip().splitlines()) == 3
    pnet = load_pruningnet(trained_run / "pruningnet.pt")
    enc = pnet.space.uniform(0.5)
    x = torch.randn(2, 1, 32, 32)
    pnet.eval()
    with torch.no_grad():
        assert (pnet.materialize(enc).eval()(x) - pnet(x, enc)).abs().max() <= 1e-5


def test_resume_after_kill_equals_uninterrupted(trained_run, tmp_path):
    out = tmp_path / "interrupted"
    ckpt = out / "pruningnet.pt"
    proc = subprocess.Popen([sys.executable, "-m", "hwprune.cli", "train", *SMALL, "--epochs", "2",
                             "--checkpoint-every", "3", "--out", str(out)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGKILL)  # no chance to save anything: only the periodic checkpoint survives
    proc.wait()
    killed_at = load_checkpoint(ckpt)
    assert (killed_at["epoch"], killed_at["step_in_epoch"]) < (2, 0)
    cli("train", "--resume", "--out", str(out), "--quiet")
    a = load_checkpoint(trained_run / "pruningnet.pt")
    b = load_checkpoint(ckpt)
    assert b["epoch"] == 2
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    timing = lambda h: [{k: v for k, v in row.items() if k != "img_per_s"} for row in h]  # noqa: E731
    assert timing(a["history"]) == timing(b["history"])


def test_corrupt_or_truncated_checkpoint_is_one_line(trained_run, tmp_path):
    bad = tmp_path / "run"
    bad.mkdir()
    for name in ("run.json", "space.json"):
        (bad / name).write_bytes((trained_run / name).read_bytes())
    data = (trained_run / "pruningnet.pt").read_bytes()
    for content in (data[: len(data) // 2], b"garbage" * 10):
        (bad / "pruningnet.pt").write_bytes(content)
        with pytest.raises(CheckpointError, match="is corrupt or truncated"):
            load_pruningnet(bad / "pruningnet.pt")
        r = cli("train", "--resume", "--out", str(bad), "--quiet", check=False)
        assert r.returncode == 1
        assert r.stderr.strip().count("\n") == 0 and "is corrupt or truncated" in r.stderr
    r = cli("train", *SMALL, "--epochs", "1", "--out", str(trained_run), check=False)
    assert r.returncode == 1 and "pass --resume" in r.stderr


def test_ddp_two_cpu_processes_agree(tmp_path):
    import socket

    out = tmp_path / "ddp"
    with socket.socket() as s:  # a port free now (a fixed one may be held by another job on a shared machine)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", str(port), "-m", "hwprune.cli", "train", "--limit", "256", "--batch-size",
                        "32", "--hidden", "8", "--epochs", "1", "--out", str(out)],
                       capture_output=True, text=True, env=ENV, timeout=600)
    # on failure, what the ranks said (torchrun's own summary, at the end, names only the signal)
    said = [line for line in r.stderr.splitlines() if "rank" in line.lower() or "rror" in line or "terminate" in line]
    assert r.returncode == 0, "\n".join(said)[-4000:]
    assert "ranks agree: 2 processes hold identical weights" in r.stderr
    ck = load_checkpoint(out / "pruningnet.pt")
    assert ck["epoch"] == 1
    assert '"world_size": 2' in (out / "run.json").read_text()


def test_a_search_spread_over_two_ranks_scores_as_one_process_does(tmp_path):
    """Under torchrun each generation's candidates are split between the ranks and the scores gathered: every
    candidate gets the fitness a single process gives it, the same winner comes out, and rank 0 alone reports."""
    import socket

    import pandas as pd

    run = lambda *a, **kw: subprocess.run([sys.executable, *a], capture_output=True, text=True, env=ENV,  # noqa: E731
                                          timeout=600, **kw)
    r = run("-m", "hwprune.cli", "pretrain", "--model", "resnet20", "--epochs", "1", "--limit", "256", "--quiet",
            "--out", str(tmp_path / "dense"))
    assert r.returncode == 0, r.stderr[-2000:]
    search = ["-m", "hwprune.cli", "search", "--evaluator", "inherit", "--model", "resnet20", "--weights",
              str(tmp_path / "dense" / "dense.pt"), "--flops", "20M", "--population", "6", "--generations", "2",
              "--tune-steps", "2"]
    one = run(*search, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    two = run("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), *search,
              "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-4000:]
    a, b = (pd.read_csv(tmp_path / d / "history.csv") for d in ("one", "two"))
    assert len(a) == len(b) >= 6 and list(a["encoding"]) == list(b["encoding"])
    assert (a["fitness"] - b["fitness"]).abs().max() < 1e-6
    won = [json.loads((tmp_path / d / "result.json").read_text())["best"][0]["encoding"] for d in ("one", "two")]
    assert won[0] == won[1]
    assert two.stdout.count("candidates evaluated") == 1 and two.stdout.count("best top-1") == 1
    assert one.stderr.count("generation 1/2") == 1 and two.stderr.count("generation 1/2") == 1  # (rank 0's log)


def test_run_folder_of_an_older_hwprune_is_one_line(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text('{"job": {"model": "resnet20"}}')
    r = cli("train", "--resume", "--out", str(old), "--quiet", check=False)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0
    assert "written by an older hwprune" in r.stderr and "new --out folder" in r.stderr


def test_resuming_a_finished_run_says_so(trained_run):
    before = (trained_run / "pruningnet.pt").read_bytes()
    r = cli("train", "--resume", "--out", str(trained_run))
    assert "has finished its 2 epochs; nothing to train" in r.stderr
    assert (trained_run / "pruningnet.pt").read_bytes() == before  # nothing trained, nothing rewritten
