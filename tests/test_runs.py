"""Run folders: the manifest records each stage's settings, files and status, and refuses what it cannot read."""
import json

import pytest

from hwprune.runs.folder import RunFolder, RunFolderError


def test_a_stage_is_recorded_with_its_settings_files_and_status(tmp_path):
    run = RunFolder(tmp_path / "r")
    assert run.stage("train") is None and not run.done("train")
    run.begin("train", "train", {"epochs": 2})
    assert run.stage("train")["status"] == "running" and not run.done("train")  # a killed stage is not done
    (tmp_path / "r" / "sub").mkdir()
    (tmp_path / "r" / "sub" / "w.pt").write_bytes(b"x")
    run.finish("train", {"checkpoint": tmp_path / "r" / "sub" / "w.pt"}, {"loss": 0.5})
    data = json.loads((tmp_path / "r" / "run.json").read_text())
    assert data["format"] == "hwprune.run/1" and data["hwprune"]
    rec = data["stages"]["train"]
    assert rec["status"] == "done" and rec["settings"] == {"epochs": 2} and rec["summary"] == {"loss": 0.5}
    assert rec["files"] == {"checkpoint": "sub/w.pt"} and rec["finished"] >= rec["started"] and "seconds" in rec
    again = RunFolder(tmp_path / "r")  # another process reads the same
    assert again.done("train") and again.file("train", "checkpoint") == tmp_path / "r" / "sub" / "w.pt"
    assert again.settings("train") == {"epochs": 2}
    assert RunFolder.holding(tmp_path / "r" / "sub" / "w.pt")[1] == "train"
    assert RunFolder.holding(tmp_path / "elsewhere.pt") is None


def test_missing_stages_and_files_are_named(tmp_path):
    run = RunFolder(tmp_path)
    run.begin("search", "search", {})
    run.finish("search", {})
    with pytest.raises(RunFolderError, match="holds no 'train' stage .*lists search"):
        run.settings("train")
    with pytest.raises(RunFolderError, match="stage 'search' recorded no 'result' file"):
        run.file("search", "result")


@pytest.mark.parametrize("content", ["{not json", '{"format": "something/9", "stages": {}}', "[]"])
def test_a_foreign_or_damaged_manifest_is_refused_in_one_line(tmp_path, content):
    (tmp_path / "run.json").write_text(content)
    with pytest.raises(RunFolderError) as e:
        RunFolder(tmp_path)
    assert "\n" not in str(e.value) and "run.json" in str(e.value)


def test_an_old_run_folder_says_how_to_redo_it(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RunFolderError, match="older hwprune .* run that step again with a new --out folder"):
        RunFolder(tmp_path)


def test_a_file_is_not_a_run_folder(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(RunFolderError, match="is a file, not a run folder"):
        RunFolder(tmp_path / "f")
