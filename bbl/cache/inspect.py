"""`bbl cache info`: what a cache holds (settings, teachers, sizes, bytes per token, top-k mass, draws), and the
same statistics the dump records as its summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bbl.cache.reader import CacheReader
from bbl.cache.store import location_bytes


def store_bytes(path) -> int:
    """Bytes stored by a cache at a local path or fsspec URL (or held by an in-memory store)."""
    if isinstance(path, str | Path):
        return location_bytes(path)
    data = getattr(path, "_store_dict", {})
    return sum(len(v) for v in data.values())


def cache_stats(reader: CacheReader, *, sample_chunks: int | None = None, seed: int = 0) -> dict:
    """Sizes of a cache and its kind's statistics (`CacheKind.stats`: e.g. the top-k mass, the distinct drawn ids
    per position, the aligned fraction), from every chunk or a seeded sample of chunks."""
    chunks = np.arange(reader.num_chunks)
    if sample_chunks is not None and sample_chunks < len(chunks):
        chunks = np.sort(np.random.default_rng(seed).choice(chunks, sample_chunks, replace=False))
    tokens = reader.num_windows * reader.seq_len
    nbytes = store_bytes(reader.path)
    stats = {"windows": reader.num_windows, "tokens": tokens, "bytes": nbytes, "bytes_per_token": nbytes / max(tokens, 1),
             "targets": reader.targets}
    stats.update(reader.kind.stats(reader, chunks))
    return stats


def cache_info(path) -> dict:
    """Attributes, sizes and top-k coverage; works on incomplete caches (reported as such)."""
    reader = CacheReader(path, allow_incomplete=True)
    done = np.asarray(reader.group["chunk_done"][:])
    attrs = {k: v for k, v in reader.attrs.items() if k not in ("settings", "summary")}
    whole = done.all() and not reader.missing
    stats = cache_stats(reader) if whole else {"windows": reader.num_windows, "bytes": store_bytes(path)}
    return {"path": str(path), "attributes": attrs, "complete": bool(reader.attrs.get("complete")),
            "chunks_done": int(done.sum()), "chunks": int(done.size),
            "damaged_chunks": [str(p) for p in reader.missing], **stats}
