"""The one atomic writer: ordinary file modes, nothing half-written, no temporary file left behind."""
import os

import pytest

from hwprune.files.atomic import write_atomic, write_json


def test_written_files_get_the_mode_the_umask_allows(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "report.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600
    assert path.read_text() == '{\n "a": 1\n}\n'


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "model.pt"
    write_atomic(path, b"good")

    def fail(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, fail)
    assert path.read_bytes() == b"good" and [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    write_atomic(path, "text")
    assert path.read_text() == "text"
