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


def topk_mass(tail_logprob: np.ndarray) -> np.ndarray:
    """Probability mass the top k cover, 1 - exp(tail_logprob), per position."""
    return -np.expm1(tail_logprob.astype(np.float64))


def distinct_per_position(sample_ids: np.ndarray) -> np.ndarray:
    """Distinct ids among each position's draws (..., N) sorted ascending, as the cache stores them."""
    return 1 + (np.diff(sample_ids.astype(np.int64), axis=-1) != 0).sum(-1)


def cache_stats(reader: CacheReader, *, sample_chunks: int | None = None, seed: int = 0) -> dict:
    """Sizes and coverage of a cache, from every chunk or a seeded sample of chunks: the top-k mass (top-k and
    hybrid caches) and the distinct ids among the draws per position (sampled and hybrid caches)."""
    chunks = np.arange(reader.num_chunks)
    if sample_chunks is not None and sample_chunks < len(chunks):
        chunks = np.sort(np.random.default_rng(seed).choice(chunks, sample_chunks, replace=False))
    cw = reader.chunk_windows
    tokens = reader.num_windows * reader.seq_len
    nbytes = store_bytes(reader.path)
    stats = {"windows": reader.num_windows, "tokens": tokens, "bytes": nbytes, "bytes_per_token": nbytes / max(tokens, 1),
             "targets": reader.targets}
    if "kd_mask" in reader.arrays:  # --kd-fraction: statistics over the positions that have targets
        kept = np.concatenate([reader.read_array("kd_mask", c * cw, (c + 1) * cw).ravel() for c in chunks])
        stats["kd_fraction"] = reader.kd_fraction
    else:
        kept = slice(None)
    if "tail_logprob" in reader.arrays:
        tails = np.concatenate([reader.read_array("tail_logprob", c * cw, (c + 1) * cw).ravel() for c in chunks])[kept]
        mass = topk_mass(tails)
        stats.update({"mean_tail_mass": float(1 - mass.mean()), "topk_mass_mean": float(mass.mean()),
                      "topk_mass_percentiles": {str(p): float(np.percentile(mass, p)) for p in (1, 5, 25, 50, 75, 95)}})
    if reader.kind is not None:
        stats.update(reader.kind.stats(reader, chunks))
    if "sample_ids" in reader.arrays:
        distinct = np.concatenate([distinct_per_position(reader.read_array("sample_ids", c * cw, (c + 1) * cw)).ravel()
                                   for c in chunks])[kept]
        stats.update({"num_samples": reader.num_samples, "distinct_sampled_ids_mean": float(distinct.mean())})
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
