"""Bad input, fuzzed: damaged files of every format and bad option values of every verb.

Each case runs the real CLI (in process) and must end in one line on stderr, a
non-zero status that is not the "bug" status 70, no traceback, nothing written where
the command would have written, and every input file byte-for-byte unchanged.
"""
import hashlib
import json

import pytest
import torch
from click.testing import CliRunner

import hwprune as hp
from hwprune.cli import main
from hwprune.runs import RunFolder, TrainJob
from hwprune.runs.deploy_stages import export_stage, retrain_stage
from hwprune.runs.stages import search_stage, train_stage
from hwprune.search import SearchConfig


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One valid file of every format hwprune reads: table, PruningNet, search result, run.json, model, ONNX."""
    root = tmp_path_factory.mktemp("valid")
    run = RunFolder(root / "run")
    job = TrainJob(model="resnet20", round_to=16, limit=128, batch_size=32, hidden=8, device="cpu",
                   train={"epochs": 1, "eval_ratios": ()})
    train_stage(run, job, progress=False, log=lambda s: None)
    pnet = hp.load_pruningnet(run.path / "pruningnet.pt")
    table = hp.profile(pnet.space, backend="onnxruntime", threads=1, repeats=3, calibrate=2, passes=1,
                       runs_per_pass=2, out=root / "table.csv", cache_dir=root / "store", quiet=True)
    cfg = SearchConfig(population=3, keep_top=3, parents=2, mutations=1, crossovers=1, generations=2,
                       calib_batches=1, val_batches=1, steer_after=1, steer_top=2)
    full = table.predict(pnet.space.full())
    result = search_stage(run, checkpoint=run.path / "pruningnet.pt", table=root / "table.csv", latency_ms=[full],
                          config=cfg, device="cpu", where="search", measure_top=2, log=lambda s: None)
    assert result.best[0]["measured_checked"] >= 1  # timed here, on the table's backend (whatever it measured)
    steered = result.best[0]["steered"]  # and halfway through, to steer by (whatever the ratio)
    assert steered["generation"] == 1 and steered["measured"] >= 1 and steered["ratio"] > 0
    retrain_stage(run, result=run.path / "search" / "result.json", train={"epochs": 0, "eval_ratios": ()},
                  device="cpu", where="pruned", key="retrain", progress=False, log=lambda s: None)
    export_stage(run, checkpoint=run.path / "pruned" / "model.pt", out=root / "model.onnx")
    return {"table": root / "table.csv", "pnet": run.path / "pruningnet.pt", "result": run.path / "search" /
            "result.json", "manifest": run.path / "run.json", "model": run.path / "pruned" / "model.pt",
            "onnx": root / "model.onnx", "root": root}


def _digest(paths) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


def _refused(args, inputs, out=None):
    before = _digest(inputs)
    r = CliRunner().invoke(main, [str(a) for a in args])
    text = r.output.strip()
    case = f"{' '.join(str(a) for a in args[:1] + args[-3:])} -> {r.exit_code}: {text[-400:]}"
    assert r.exit_code not in (0, 70) and isinstance(r.exception, SystemExit), case
    assert "Traceback" not in text and len([s for s in text.splitlines() if s.strip()]) <= 3, case  # click: 3
    assert text.splitlines()[-1].lower().startswith("error"), case
    assert _digest(inputs) == before, args
    if out is not None:
        assert not out.exists(), (args, "wrote", out)
    return text.splitlines()[-1]


# ---- damaged files ---------------------------------------------------------------------------------
def _csv_rows(text):
    head = [line for line in text.splitlines() if line.startswith("#")]
    rows = [line for line in text.splitlines() if not line.startswith("#")]
    return head, rows


def _table_mutations(text: str) -> dict[str, str]:
    head, rows = _csv_rows(text)
    cols = rows[0].split(",")
    ms = cols.index("ms") if "ms" in cols else len(cols) - 4

    def with_value(v):
        r = rows[1].split(",")
        r[ms] = v
        return "\n".join(head + [rows[0], ",".join(r)] + rows[2:]) + "\n"

    return {
        "truncated": text[: len(text) - len(rows[-1]) // 2 - 1],
        "no rows": "\n".join(head + rows[:1]) + "\n",
        "a column dropped": "\n".join(head + [",".join(r.split(",")[:2] + r.split(",")[3:]) for r in rows]) + "\n",
        "text in a number": with_value("fast"),
        "NaN time": with_value("nan"),
        "infinite time": with_value("inf"),
        "negative time": with_value("-0.5"),
        "other format tag": text.replace('"hwprune.latency/1"', '"hwprune.latency/9"'),
        "empty": "",
        "binary": "\x00\x01\x02garbage\n",
    }


def test_damaged_latency_tables(files, tmp_path):
    text = files["table"].read_text()
    for name, bad in _table_mutations(text).items():
        path = tmp_path / f"{name.replace(' ', '_')}.csv"
        path.write_text(bad)
        out = tmp_path / f"search_{name.replace(' ', '_')}"
        _refused(["search", "--checkpoint", files["pnet"], "--table", path, "--latency-ms", "100", "--population",
                  "2", "--generations", "1", "--out", out], [path, files["pnet"]], out=out / "result.json")
        _refused(["verify", "--model", files["onnx"], "--table", path, "--no-dense", "--passes", "1"],
                 [path, files["onnx"]])


def _checkpoint_mutations(path) -> dict[str, bytes | dict]:
    raw = path.read_bytes()
    ck = torch.load(path, weights_only=True)
    out = {"truncated": raw[: len(raw) // 2], "empty": b"", "not a checkpoint": b"PK\x03\x04nonsense",
           "another format tag": {**ck, "format": "hwprune.other/1"}, "no format": {k: v for k, v in ck.items()
                                                                                  if k != "format"},
           "a tensor, not a dict": torch.zeros(3), "only the format": {"format": ck["format"]}}
    for key in ("space", "state_dict"):
        out[f"no {key}"] = {k: v for k, v in ck.items() if k != key}
        out[f"{key} of the wrong type"] = {**ck, key: 123}
    return out


def _write(path, value):
    if isinstance(value, bytes):
        path.write_bytes(value)
    else:
        torch.save(value, path)


def test_damaged_checkpoints(files, tmp_path):
    for name, bad in _checkpoint_mutations(files["model"]).items():
        path = tmp_path / f"model_{name.replace(' ', '_')}.pt"
        _write(path, bad)
        out = tmp_path / f"{path.stem}.onnx"
        _refused(["export", "--checkpoint", path, "--out", out], [path], out=out)
    for name, bad in _checkpoint_mutations(files["pnet"]).items():
        path = tmp_path / f"pnet_{name.replace(' ', '_')}.pt"
        _write(path, bad)
        out = tmp_path / f"search_{path.stem}"
        _refused(["search", "--checkpoint", path, "--flops", "1M", "--out", out], [path], out=out / "result.json")


def test_damaged_results_and_manifests(files, tmp_path):
    result = files["result"].read_text()
    res = json.loads(result)
    bad_results = {"truncated": result[: len(result) // 2], "not JSON": "best: []", "a list": "[]",
                   "no best": json.dumps({k: v for k, v in res.items() if k != "best"}),
                   "best without an encoding": json.dumps({**res, "best": [{"budget": {}}]}),
                   "another format": json.dumps({**res, "format": "x"}), "empty": ""}
    for name, bad in bad_results.items():
        path = files["result"].parent / f"bad_{name.replace(' ', '_')}.json"
        path.write_text(bad)
        out = tmp_path / f"retrain_{name.replace(' ', '_')}"
        _refused(["retrain", "--result", path, "--epochs", "0", "--out", out], [path], out=out / "model.pt")
        path.unlink()
    manifest = files["manifest"].read_text()
    try:
        for name, bad in {"truncated": manifest[: len(manifest) // 2], "another format": manifest.replace(
                '"hwprune.run/1"', '"hwprune.run/0"'), "empty": ""}.items():
            files["manifest"].write_text(bad)
            out = tmp_path / f"retrain_manifest_{name.replace(' ', '_')}"
            _refused(["retrain", "--result", files["result"], "--epochs", "0", "--out", out],
                     [files["manifest"], files["result"]], out=out / "model.pt")
    finally:
        files["manifest"].write_text(manifest)


# ---- bad option values -----------------------------------------------------------------------------
BAD_OPTIONS = {
    "info": [["--num-classes", "0"], ["--width-mult", "-1"], ["--input-shape", "1,3"], ["--input-shape", "a,b"],
             ["--round-to", "0"], ["--ratio", "0"], ["--ratio", "nan"], ["--model", "nope.py:build"],
             ["--model", "resnet9000"]],
    "train": [["--batch-size", "0"], ["--lr", "-1"], ["--epochs", "-1"], ["--device", "tpu"], ["--limit", "0"],
              ["--width-mult", "0"], ["--round-to", "0"], ["--hidden", "0"]],
    "pretrain": [["--batch-size", "0"], ["--lr", "0"], ["--epochs", "-2"], ["--device", "gpu"]],
    "search": [["--latency-ms", "nan"], ["--latency-ms", "-1"], ["--latency-ms", "0"], ["--flops", "-1M"],
               ["--population", "0"], ["--mutation-prob", "2"], ["--device", "tpu"], ["--val-batches", "0"],
               ["--generations", "-1"], ["--latency-fraction", "inf"]],
    "retrain": [["--epochs", "-1"], ["--lr", "0"], ["--batch-size", "0"], ["--device", "tpu"],
                ["--baseline", "median"]],
    "export": [["--batch-size", "0"], ["--format", "tflite"]],
    "verify": [["--latency-ms", "-1"], ["--latency-ms", "nan"], ["--tolerance", "-0.1"], ["--passes", "0"]],
    "profile": [["--threads", "0"], ["--repeats", "0"], ["--batch-size", "0"], ["--calibrate", "-1"],
                ["--backend", "tflite"], ["--passes", "0"]],
}


def _base(verb, files, out):
    return {
        "info": ["info", "--model", "resnet20"],
        "train": ["train", "--model", "resnet20", "--epochs", "1", "--limit", "64", "--out", out],
        "pretrain": ["pretrain", "--model", "resnet20", "--epochs", "1", "--limit", "64", "--out", out],
        "search": ["search", "--checkpoint", files["pnet"], "--table", files["table"], "--latency-ms", "100",
                   "--out", out],
        "retrain": ["retrain", "--result", files["result"], "--epochs", "0", "--out", out],
        "export": ["export", "--checkpoint", files["model"], "--out", out / "m.onnx"],
        "verify": ["verify", "--model", files["onnx"], "--table", files["table"], "--no-dense"],
        "profile": ["profile", "--model", "resnet20", "--round-to", "16", "-o", out / "t.csv"],
    }[verb]


@pytest.mark.parametrize("verb", list(BAD_OPTIONS))
def test_bad_option_values(files, tmp_path, verb):
    inputs = [files[k] for k in ("table", "pnet", "result", "manifest", "model", "onnx")]
    for k, bad in enumerate(BAD_OPTIONS[verb]):
        out = tmp_path / f"{verb}{k}"
        args = _base(verb, files, out)
        # an option given twice: click keeps the last, so the bad value wins over the base's
        _refused(args + bad, inputs, out=out)
