"""The benchmark scripts' one way to emit a report: print it as indented JSON and, if asked, write it to a file."""

from __future__ import annotations

import json
from pathlib import Path


def emit(report: dict, path: Path | None) -> None:
    """Print `report` as indented JSON; also write it to `path` (parents created) when given."""
    text = json.dumps(report, indent=2) + "\n"
    print(text, end="")
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
