"""CSV files with a metadata block: ``# key: <json>`` lines, then a plain CSV that pandas reads.

Written with :func:`~hwprune.files.atomic.write_atomic`, so an interrupted write leaves the
previous file whole.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pandas as pd

from ..errors import HwpruneError
from .atomic import write_atomic

__all__ = ["write_csv", "read_csv"]


def write_csv(path: str | os.PathLike, meta: dict, frame: pd.DataFrame, title: str) -> None:
    buf = io.StringIO()
    buf.write(f"# {title}\n")
    for k, v in meta.items():
        buf.write(f"# {k}: {json.dumps(v, separators=(',', ':'))}\n")
    frame.to_csv(buf, index=False)  # shortest repr of each float: exact when read back
    write_atomic(path, buf.getvalue())


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
