"""CSV files with a metadata block: ``# key: <json>`` lines, then a plain CSV that pandas reads.

Written atomically (a temp file in the same folder, then ``os.replace``), so an
interrupted write leaves the previous file whole.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import pandas as pd

from ..errors import HwpruneError

__all__ = ["write_csv", "read_csv", "atomic_write"]


def atomic_write(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result is an ordinary file
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_csv(path: str | os.PathLike, meta: dict, frame: pd.DataFrame, title: str) -> None:
    buf = io.StringIO()
    buf.write(f"# {title}\n")
    for k, v in meta.items():
        buf.write(f"# {k}: {json.dumps(v, separators=(',', ':'))}\n")
    frame.to_csv(buf, index=False)  # shortest repr of each float: exact when read back
    atomic_write(path, buf.getvalue())


def read_csv(path: str | os.PathLike, what: str) -> tuple[dict, pd.DataFrame]:
    path = Path(path)
    if not path.is_file():
        raise HwpruneError(f"{what} {str(path)!r} does not exist")
    meta, skip = {}, 0
    with path.open() as f:
        for line in f:
            if not line.startswith("#"):
                break
            skip += 1
            key, sep, value = line[1:].strip().partition(": ")
            if sep:
                try:
                    meta[key] = json.loads(value)
                except json.JSONDecodeError:
                    raise HwpruneError(f"{what} {str(path)!r} has a damaged metadata line {key!r}") from None
    try:
        frame = pd.read_csv(path, skiprows=skip, keep_default_na=False, dtype={"groups": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise HwpruneError(f"{what} {str(path)!r} is not a readable CSV: {str(e).splitlines()[0]}") from None
    return meta, frame
