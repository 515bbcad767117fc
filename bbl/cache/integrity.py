"""Damage in a logit cache: which chunks are missing (zarr would read them as fill values) or corrupt, and the
one-line message that names the first of them and the `bbl cache repair` command that fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChunkProblem:
    """A damaged chunk: `kind` is missing (no chunk key), corrupt (checksum/decode error) or unfinished."""

    array: str
    chunk: int
    rows: tuple[int, int]
    kind: str
    detail: str = ""

    def __str__(self) -> str:
        what = {"missing": "is missing", "corrupt": "is corrupt (checksum mismatch or undecodable)",
                "unfinished": "was never finished writing"}[self.kind]
        return f"{self.array} chunk {self.chunk} (rows {self.rows[0]}-{self.rows[1]}) {what}"


def missing_chunks(reader) -> list[ChunkProblem]:
    """Chunks of `reader.arrays` (a `bbl.cache.CacheReader`'s) whose key is absent from the store (one listing).

    Zarr reads an absent chunk as the fill value, so this is what keeps a deleted chunk from reading as zeros.
    """
    from zarr.core.sync import sync

    async def _keys(store, prefix):
        return {k async for k in store.list_prefix(prefix)}

    root = reader.group.store_path.path
    prefix = f"{root}/" if root else ""
    keys = sync(_keys(reader.group.store, prefix))
    problems = []
    for name, arr in reader.arrays.items():
        extra = (0,) * (arr.ndim - 1)
        for c in range(arr.cdata_shape[0]):
            if f"{prefix}{arr.path}/{arr.metadata.encode_chunk_key((c, *extra))}" not in keys:
                problems.append(ChunkProblem(name, c, reader.rows_of(c), "missing"))
    for name, arr in getattr(reader, "static", {}).items():  # a registered kind's one-chunk arrays
        if f"{prefix}{arr.path}/{arr.metadata.encode_chunk_key((0,))}" not in keys:
            problems.append(ChunkProblem(name, 0, (0, arr.shape[0] - 1), "missing"))
    return problems


def repair_command(path, attrs: dict) -> str:
    """The `bbl cache repair` command line for a cache, with the teachers it records."""
    teachers = " ".join(f"--teacher {t['path']}" for t in attrs.get("teachers", [])) or "--teacher DIR ..."
    return f"bbl cache repair --cache {path} {teachers}"


def damage_message(path, problems: list[ChunkProblem], attrs: dict) -> str:
    """One line: the first damaged chunk, how many more, and the repair command."""
    more = f" (and {len(problems) - 1} more damaged chunk(s))" if len(problems) > 1 else ""
    return f"{path}: {problems[0]}{more}; run `{repair_command(path, attrs)}` to recompute it"
