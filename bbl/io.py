"""File helpers every room shares: content hashes, atomic writes, and reading metadata as one-line errors.

A file another stage reads as "done" (a manifest, a run file, a state file, a report's marker) is written to a
temporary name beside it and renamed over the target (`os.replace`), so a kill leaves the old file or the new one,
never half of one. A file bbl reads back (JSON metadata: `manifest.json`, `bbl_run.json`, a model's `config.json`,
a cache's `zarr.json`; YAML: configs, search spaces) goes through `load_json` / `parse_json` / `parse_yaml`, so an
empty, truncated or hand-broken one is a `BblError` naming the file, the line and what to do, never a traceback.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

from bbl.errors import BblError


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


REWRITE_HINT = "re-run the command that writes it (or restore the file)"
"""`load_json`'s default fix for a damaged metadata file."""


def parse_json(data: bytes | str, source, *, fix: str = REWRITE_HINT) -> dict:
    """The JSON object in `data`, the text of the metadata file `source` (a path or URL, for the message).

    Raises:
        BblError: empty, truncated, not UTF-8, not JSON, or not an object (every bbl metadata file is one):
            "{source}: not a valid JSON file (line L column C: problem); {fix}".
    """
    try:
        text = data.decode() if isinstance(data, bytes) else data
    except UnicodeDecodeError as e:
        problem = "truncated inside a character" if e.reason == "unexpected end of data" else f"not UTF-8 at byte {e.start}"
        raise BblError(f"{source}: not a valid JSON file ({problem}); {fix}") from None
    if not text.strip():
        raise BblError(f"{source}: not a valid JSON file (empty); {fix}")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise BblError(f"{source}: not a valid JSON file (line {e.lineno} column {e.colno}: {e.msg}); {fix}") from None
    if not isinstance(obj, dict):
        raise BblError(f"{source}: not a valid metadata file (a JSON {type(obj).__name__}, not an object); {fix}")
    return obj


def load_json(path: Path, *, fix: str = REWRITE_HINT) -> dict | None:
    """The JSON object in the metadata file `path`, or None when there is no such file.

    Args:
        fix: what the user should do when the file is damaged (the end of the error line).
    Raises:
        BblError: the file is empty, truncated or not a JSON object (`parse_json`), naming it and `fix`.
    """
    path = Path(path)
    return parse_json(path.read_bytes(), path, fix=fix) if path.is_file() else None


def read_jsonl(source, *, name: str | None = None, fix: str = "fix or remove the line"):
    """(line number, row) of each non-blank line of a JSON Lines file: the one JSONL reader (task data, GLUE
    rows, corpus datasets, training metrics), so a malformed line reads the same everywhere.

    Args:
        source: a path (streamed as UTF-8, so a caller that stops early reads no further) or the file's lines
            already in memory (a zip member's, a decoded corpus file's).
        name: the file as an error line names it (default: the path).
        fix: what the user should do about a malformed line (the end of the error line).
    Yields:
        (line number from 1, the line's JSON value).
    Raises:
        BblError: "{name}:{line}: malformed JSON ({problem}); {fix}".
    """
    if isinstance(source, str | Path):
        with open(source, encoding="utf-8") as lines:
            yield from read_jsonl(lines, name=name or str(source), fix=fix)
        return
    for lineno, line in enumerate(source, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BblError(f"{name}:{lineno}: malformed JSON ({e.msg}); {fix}") from None
        yield lineno, row


def parse_yaml(text: str | bytes, source: str, *, fix: str = "fix the YAML there"):
    """The YAML document in `text` (`yaml.safe_load`; None when it holds nothing; bytes are decoded as YAML does:
    UTF-8 or UTF-16 with a BOM), from `source` (a file, or an
    option such as `--set 'training.lr=[1'`, for the message).

    Raises:
        BblError: a syntax error: "{source}: not valid YAML (line L, column C: problem); {fix}".
    """
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise BblError(f"{source}: not valid YAML ({where}{problem}); {fix}") from None


def atomic_save_figure(fig, path: Path, *, dpi: int = 120) -> None:
    """A matplotlib figure as a PNG at `path`, written atomically (no half-written image after a kill)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())
