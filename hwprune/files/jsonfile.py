"""The one reader of hwprune's JSON files (run manifests, search results): parsed and format-checked, one line."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import HwpruneError

__all__ = ["read_json"]


def read_json(path: str | Path, fmt: str, what: str, fix: str, error: type[HwpruneError] = HwpruneError) -> dict:
    """The JSON object in ``path`` tagged ``"format": fmt``; otherwise ``error`` saying it is not ``what`` and to
    ``fix`` it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise error(f"{path} is not a readable {what} ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:80]}); "
                    f"{fix}") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise error(f"{path} is not a {what} (expected format {fmt!r}); {fix}")
    return data
