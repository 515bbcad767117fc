"""File helpers every room shares: content hashes and atomic writes.

A file another stage reads as "done" (a manifest, a run file, a state file, a report's marker) is written to a
temporary name beside it and renamed over the target (`os.replace`), so a kill leaves the old file or the new one,
never half of one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path


def sha256_file(path: Path, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The git blob SHA-1 of a file (what `git hash-object FILE` prints)."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` by a temporary file in the same dir and `os.replace`."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: workers may write the same report
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj, *, sort_keys: bool = False) -> None:
    """`obj` as indented JSON with a trailing newline, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")


def load_json(path: Path):
    """The JSON in `path`, or None when there is no such file."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def atomic_save_figure(fig, path: Path, *, dpi: int = 120) -> None:
    """A matplotlib figure as a PNG at `path`, written atomically (no half-written image after a kill)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())
