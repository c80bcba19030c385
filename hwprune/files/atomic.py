"""The one atomic writer: a temporary file beside the target, flushed to disk, then renamed over it.

An interrupted write (a crash, kill -9, a full disk) leaves the previous file whole
and no partial file under the target's name. The temporary file's name holds the
writer's process id, so the next write of the same file removes what a killed writer
left behind. Files get the ordinary mode the umask allows (``mkstemp`` alone would make
them private).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

__all__ = ["write_atomic", "write_json", "check_writable"]


def write_atomic(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], Any]) -> Path:
    """Write ``data`` (bytes, text, or a function that writes to a binary file object) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Refuse, before any work and without leaving anything behind, a path no file can be written under: a
    parent that is a file, a folder without write permission, a read-only or virtual file system."""
    from ..errors import HwpruneError

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise HwpruneError(f"cannot write the {what} {path}: {existing} is a file, not a folder; choose another path")
    try:  # a probe file is the only test that holds for root, read-only mounts and /proc alike
        fd, probe = tempfile.mkstemp(prefix=".hwprune-probe.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise HwpruneError(f"cannot write the {what} {path}: {e.strerror or e} in {existing}; choose another "
                           f"path") from None
    return path


def _remove_stale(path: Path) -> None:
    """Delete temporary files of ``path`` whose writer process no longer exists (killed mid-write)."""
    for tmp in path.parent.glob(f".{_glob_escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or a platform that cannot tell: leave its file alone
    return True


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON, written atomically."""
    return write_atomic(path, json.dumps(obj, indent=1) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
