"""A run folder: the files of one job and ``run.json``, the manifest that says what made them.

``run.json`` (format ``hwprune.run/1``) records, per stage key (``train``,
``search``, ``retrain_searched``, ...), the stage it ran, its resolved settings, the
files it wrote (relative to the folder), its status and timings, and a small
summary. A folder written by an older hwprune (a ``config.json`` and no
``run.json``) is refused with a line that says how to redo it; everything else
about resuming reads the manifest, never a file found next to a checkpoint.

Only the main process of a data-parallel job writes the manifest.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..version import __version__
from ..errors import HwpruneError
from ..files.atomic import write_json
from ..files.jsonfile import read_json
from ..training.distributed import is_main

__all__ = ["RunFolder", "RunFolderError", "RUN_FORMAT", "MANIFEST"]

RUN_FORMAT = "hwprune.run/1"
MANIFEST = "run.json"


class RunFolderError(HwpruneError):
    """A run folder of another format or version, or a stage that is not in it."""


class RunFolder:
    """One run folder and its manifest (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._started: dict[str, float] = {}  # stage key -> time.time() at begin, in this process
        self._check()

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # ---- reading ----------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> dict:
        """The manifest, or an empty one for a new folder."""
        if not self.manifest_path.exists():
            return {"format": RUN_FORMAT, "hwprune": __version__, "stages": {}}
        return read_json(self.manifest_path, RUN_FORMAT, "hwprune run manifest", "restore it or use another --out "
                         "folder", RunFolderError)

    def stage(self, key: str) -> dict | None:
        """The record of stage ``key``, or None when it never started here."""
        return self.manifest()["stages"].get(key)

    def done(self, key: str) -> bool:
        record = self.stage(key)
        return record is not None and record.get("status") == "done"

    def settings(self, key: str) -> dict:
        """The resolved settings stage ``key`` ran with; refused when it never ran here."""
        record = self.stage(key)
        if record is None:
            raise RunFolderError(f"{self.path} holds no {key!r} stage ({MANIFEST} lists "
                                 f"{', '.join(self.manifest()['stages']) or 'none'})")
        return record["settings"]

    def file(self, key: str, name: str) -> Path:
        """Where stage ``key`` wrote its file ``name`` (e.g. ``("train", "checkpoint")``)."""
        record = self.stage(key)
        if record is None or name not in record.get("files", {}):
            raise RunFolderError(f"{self.path}: stage {key!r} recorded no {name!r} file")
        return self.path / record["files"][name]

    def producer(self, path: str | Path) -> str | None:
        """The key of the stage that wrote ``path`` in this folder, if one did."""
        try:
            rel = Path(path).resolve().relative_to(self.path.resolve()).as_posix()
        except ValueError:
            return None
        for key, record in self.manifest()["stages"].items():
            if rel in record.get("files", {}).values():
                return key
        return None

    @classmethod
    def holding(cls, path: str | Path) -> tuple["RunFolder", str] | None:
        """The run folder (this file's folder or one above it) whose manifest lists ``path``, and its stage."""
        path = Path(path).resolve()
        for folder in path.parents:
            if (folder / MANIFEST).exists():
                run = cls(folder)
                key = run.producer(path)
                if key is not None:
                    return run, key
        return None

    # ---- writing ----------------------------------------------------------------------------
    def begin(self, key: str, stage: str, settings: dict) -> None:
        """Record that stage ``key`` (of kind ``stage``) runs with ``settings`` (plain JSON values)."""
        data = self.manifest()
        old = data["stages"].get(key, {})
        data["stages"][key] = {"stage": stage, "status": "running", "settings": settings,
                               "files": old.get("files", {}), "started": _now(),
                               "seconds": old.get("seconds", 0.0)}  # seconds of earlier, interrupted runs
        self._started[key] = time.time()
        self._write(data)

    def finish(self, key: str, files: dict[str, str | Path] | None = None, summary: dict | None = None) -> None:
        """Record that stage ``key`` finished, the files it wrote and a summary of its figures."""
        data = self.manifest()
        record = data["stages"][key]
        rel = {}
        for name, p in (files or {}).items():
            p = Path(p)
            try:
                rel[name] = p.resolve().relative_to(self.path.resolve()).as_posix()
            except ValueError:
                rel[name] = str(p)  # a file outside the folder (an exported model elsewhere)
        started = self._started.pop(key, None)
        record.update(status="done", files={**record.get("files", {}), **rel}, finished=_now(),
                      seconds=round(record.get("seconds", 0.0) + (time.time() - started if started else 0.0), 1))
        if summary is not None:
            record["summary"] = summary
        self._write(data)

    def _write(self, data: dict) -> None:
        if is_main():
            self.path.mkdir(parents=True, exist_ok=True)
            write_json(self.manifest_path, data)

    def _check(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{self.path} is a file, not a run folder; choose another --out")
        if (self.path / "config.json").exists() and not self.manifest_path.exists():
            raise RunFolderError(f"{self.path} was written by an older hwprune (config.json, no {MANIFEST}); "
                                 f"run that step again with a new --out folder")
        if self.manifest_path.exists():
            self.manifest()  # refuse another format now, not halfway through a stage


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
