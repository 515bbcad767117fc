"""Writing a logit cache: `CacheWriter` creates the store (or reopens one of the same settings to resume) and
writes whole chunks: crc32c on each, every chunk stored even when it equals the fill value, a per-chunk done
flag, `complete` set last (format: `bbl.cache.format`, docs/cache-format.md).
"""

from __future__ import annotations

import json

import numpy as np

from bbl.cache.format import (
    DEFAULT_CHUNK_WINDOWS,
    FORMAT_VERSION,
    SETTING_KEYS,
    WRITE_CONFIG,
    ChunkBatch,
    compressors,
    filters,
    numcodecs_quiet,
)
from bbl.cache.kinds.registry import get_kind
from bbl.cache.store import group_exists, open_group
from bbl.errors import BblError


class CacheWriter:
    """Create or reopen a cache store and write it chunk by chunk.

    Args:
        path: a filesystem path (LocalStore) or any zarr store (e.g. `zarr.storage.MemoryStore()`).
        attrs: provenance attributes (teachers, hashes, temperature, top_k, seq_len, vocab_size, ...).
        num_windows: rows N. chunk_windows: rows per chunk.
        overwrite: replace a store whose settings differ; without it such a store is refused.
        codec: Blosc settings overriding `DEFAULT_CODEC` (for layout experiments).
    Raises:
        BblError: the path holds a cache of other settings and overwrite is False; top_k > vocab_size.
    """

    def __init__(self, path, *, attrs: dict, num_windows: int, chunk_windows: int = DEFAULT_CHUNK_WINDOWS,
                 overwrite: bool = False, create: bool = True, codec: dict | None = None):
        self.path = path
        top_k, vocab = attrs["top_k"], attrs.get("teacher_vocab_size", attrs["vocab_size"])
        if top_k > vocab:
            raise BblError(f"--topk {top_k} exceeds the vocabulary ({vocab}); use --topk <= {vocab}")
        self.targets = attrs.get("targets", "topk")
        kind = get_kind(self.targets)  # the kind declares its arrays (`bbl.cache.kinds`)
        delta_ids = bool(attrs.get("delta_ids"))
        self.arrays = kind.arrays(attrs)
        self.static_arrays = kind.static_names(attrs)
        self.settings = {k: attrs[k] for k in SETTING_KEYS + kind.setting_keys if k in attrs}
        self.settings.update(num_windows=num_windows, chunk_windows=chunk_windows)
        self.num_chunks = -(-num_windows // chunk_windows)
        self.chunk_windows = chunk_windows
        existing = open_group(path, "r+") if group_exists(path) else None
        specs = kind.array_specs(attrs, num_windows, chunk_windows)
        if existing is not None and create and _interrupted_creation(existing, set(specs) | {"chunk_done"}):
            overwrite = True  # a dump killed while it created this store: nothing of it was written yet
        if existing is not None and not overwrite:
            old = existing.attrs.get("settings")
            if old != json.loads(json.dumps(self.settings)):
                raise BblError(f"{path}: holds a cache of other settings ({_diff(old, self.settings)}); "
                               f"pass --overwrite to replace it or choose another --cache")
            self.group = existing
        elif not create:
            raise BblError(f"{path}: no cache to resume")
        else:
            if existing is not None:  # --overwrite: remove the cache's own arrays only, never the whole dir
                for name in list(existing.keys()):
                    del existing[name]
                existing.attrs.put({})
            self.group = existing if existing is not None else open_group(path, "w")
            for name, (shape, chunks, dtype, fill, shuffle) in specs.items():
                with numcodecs_quiet():
                    self.group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill,
                                            filters=filters(name, dtype, delta_ids=delta_ids),
                                            compressors=compressors(name, codec, shuffle=shuffle))
            self.group.create_array("chunk_done", shape=(self.num_chunks,), chunks=(1,), dtype=bool,
                                    fill_value=False, compressors=None)
            # one write of zarr.json (`attrs.update` writes it once per key, so a kill could leave some keys and
            # not `settings`); until it lands the store reads as an interrupted creation (`_interrupted_creation`)
            self.group.update_attributes({**attrs, "format_version": FORMAT_VERSION, "settings": self.settings,
                                          "chunk_windows": chunk_windows, "complete": False})

    def done_chunks(self) -> np.ndarray:
        """(num_chunks,) bool: which chunks are durably written."""
        return np.asarray(self.group["chunk_done"][:])

    def write_chunk(self, batch: ChunkBatch) -> None:
        """Write one whole chunk of every array, then mark it done (so a crash never marks a partial chunk).

        Every chunk is stored, even one equal to the fill value (`write_empty_chunks`), so an absent chunk key
        always means damage, never "all fill".
        """
        import zarr

        start = batch.index * self.chunk_windows
        stop = start + len(batch.window_idx)
        with zarr.config.set(WRITE_CONFIG), numcodecs_quiet():
            for name in self.arrays:
                self.group[name][start:stop] = getattr(batch, name)
            self.group["chunk_done"][batch.index] = True

    def write_static(self, arrays: dict) -> None:
        """Write the kind's static arrays (one chunk each, e.g. a vocabulary map), whole; a dump writes
        them before its first chunk, a repair rewrites a damaged one."""
        import zarr

        with zarr.config.set(WRITE_CONFIG):
            for name in self.static_arrays:
                self.group[name][:] = arrays[name]

    def finalize(self, extra_attrs: dict | None = None) -> None:
        """Set `complete` (and summary attributes) once every chunk is done.

        Raises:
            BblError: if any chunk is missing.
        """
        done = self.done_chunks()
        if not done.all():
            raise BblError(f"{self.path}: {int((~done).sum())} chunk(s) not written; re-run dump-logits to resume")
        self.group.update_attributes({**(extra_attrs or {}), "complete": True})  # one write: see __init__


def _interrupted_creation(group, names: set[str]) -> bool:
    """Whether `group` is a store whose creation by `CacheWriter` was cut short: the attributes, written last, are
    still empty and every array in it is one of the cache's own `names` (a foreign store has attributes or arrays
    of its own). Such a store holds no chunk yet and is created again."""
    return not dict(group.attrs) and set(group.keys()) <= names


def _diff(old, new) -> str:
    if not isinstance(old, dict):
        return "not a bbl cache"
    keys = [k for k in set(old) | set(new) if old.get(k) != new.get(k)]
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(keys)[:4])
