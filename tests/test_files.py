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


def test_the_next_write_removes_what_a_killed_writer_left(tmp_path):
    """kill -9 mid-write leaves the old file whole and a temporary beside it; the next write of that file removes
    the temporary, and leaves a live writer's alone."""
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "model.pt"
    write_atomic(path, b"good")
    child = subprocess.Popen([sys.executable, "-c", (
        "import time, sys; from hwprune.files.atomic import write_atomic\n"
        f"write_atomic({str(path)!r}, lambda f: (f.write(b'x' * 4096), f.flush(), time.sleep(60)))")])
    try:
        for _ in range(300):
            if list(tmp_path.glob(".model.pt.*.tmp")):
                break
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (left,) = tmp_path.glob(".model.pt.*.tmp")
    assert str(child.pid) in left.name and path.read_bytes() == b"good"
    live = tmp_path / f".model.pt.{os.getpid()}.abc.tmp"  # a writer still running (this process)
    live.write_bytes(b"busy")
    write_atomic(path, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.pt", live.name])
    assert path.read_bytes() == b"new"
