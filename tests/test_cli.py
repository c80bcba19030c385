import json

from click.testing import CliRunner

from hwprune.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_info_json_reports_full_and_uniform_costs():
    r = run("info", "--model", "resnet20", "--ratio", "0.5", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["prunable_groups"] == 12 and d["input_shape"] == [1, 3, 32, 32]
    assert d["full"] == {"flops": 40_813_184, "params": 272_474}
    assert 0.2 < d["uniform"]["flops"] / d["full"]["flops"] < 0.3
    assert {g["group"] for g in d["groups"]} >= {"conv1", "layer2.0.downsample.0", "layer3.2.conv1"}
    assert [g["reason"] for g in d["fixed_groups"]] == ["network input", "network output"]


def test_info_text_and_input_shape():
    r = run("info", "--model", "resnet50", "--input-shape", "1,3,224,224", "--round-to", "8")
    assert r.exit_code == 0, r.output
    assert "37 prunable groups" in r.output and "4.09G" in r.output


def test_bad_input_gives_one_line_and_status():
    r = run("info", "--model", "resnet9000")
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [r.output.strip()] and r.output.startswith("error: unknown model")
    r = run("info", "--model", "resnet20", "--input-shape", "a,b")
    assert r.exit_code == 2 and "is not a shape like 1,3,224,224" in r.output


def test_models_lists_the_zoo():
    r = run("models")
    assert r.exit_code == 0 and "resnet50" in r.output and "mobilenet_v2_cifar    3,32,32" in r.output


def test_every_error_is_one_line_with_its_own_status(monkeypatch):
    """A library error exits 1, an unreadable path 1, an interrupt 130 with how to resume, anything else 70 as a
    bug; none prints a traceback unless --debug or HWPRUNE_DEBUG=1 asks for it."""
    import hwprune.models

    cases = [(RuntimeError("boom\nsecond line"), 70, "RuntimeError: boom. This is a bug in hwprune"),
             (PermissionError(13, "Permission denied", "/x/y.pt"), 1, "error: Permission denied: /x/y.pt"),
             (KeyboardInterrupt(), 130, "--resume"),
             (hwprune.HwpruneError("bad thing; do this"), 1, "error: bad thing; do this")]
    for exc, status, text in cases:
        def fail(*a, exc=exc, **k):
            raise exc

        monkeypatch.setattr(hwprune.models, "load_model", fail)
        monkeypatch.delenv("HWPRUNE_DEBUG", raising=False)
        r = CliRunner().invoke(main, ["info", "--model", "resnet20"])
        assert r.exit_code == status and text in r.output, (exc, r.output)
        assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
        if not isinstance(exc, KeyboardInterrupt):  # (click turns a passed-through interrupt into its Abort)
            for args, env in ((["--debug"], {}), ([], {"HWPRUNE_DEBUG": "1"})):
                r = CliRunner().invoke(main, [*args, "info", "--model", "resnet20"], env=env)
                assert r.exception is exc  # the traceback is asked for: the exception goes through
    monkeypatch.undo()
    assert run("info", "--model", "resnet20").exit_code == 0
