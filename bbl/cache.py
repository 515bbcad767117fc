"""The logit cache: a Zarr v3 group of the teacher ensemble's top-k soft targets (format: docs/cache-format.md).

`CacheWriter` creates the store and writes whole chunks (crc32c on each, every chunk stored even when it equals
the fill value, a per-chunk done flag, `complete` set last); `open_cache` opens it read-only, refusing incomplete
stores and stores with a missing chunk (zarr would read it as fill values); `CacheReader.read(start, stop)` turns
a corrupt chunk into one `BblError` line; the chunk-aware `CacheDataset` (`bbl.cache_dataset`) feeds distillation. Row n of every array
is window `window_idx[n]` of the train stream; position s holds the ensemble's distribution for the token after `input_ids[n, :s+1]`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bbl.cache_dataset import CacheDataset, ChunkShuffleSampler, shuffled_order  # noqa: F401 (bbl.cache's API)
from bbl.cache_integrity import ChunkProblem, damage_message, missing_chunks
from bbl.errors import BblError
from bbl.stores import has_zarr_group, zarr_store

FORMAT_VERSION = 1
ARRAYS = ("input_ids", "window_idx", "topk_ids", "topk_logprobs", "tail_logprob")
"""The arrays of a top-k cache (`targets` "topk", the default and the only kind before issue 15)."""
TARGET_KINDS = ("topk", "sampled", "hybrid")
"""What a cache stores per position (attribute `targets`; DESIGN.md "The cache", docs/cache-format.md):
topk: the k most probable ids, their log-probs and the tail's log mass; sampled: `num_samples` ids drawn with
replacement from p_T (Anshumann et al. 2025); hybrid: topk's arrays plus `num_samples` ids drawn from the tail
renormalised."""


def target_arrays(targets: str = "topk") -> tuple[str, ...]:
    """The data arrays a cache of kind `targets` holds, in write order."""
    return {"topk": ARRAYS, "sampled": ("input_ids", "window_idx", "sample_ids"),
            "hybrid": (*ARRAYS, "sample_ids")}[targets]
DEFAULT_CHUNK_WINDOWS = 256
LOGPROB_STEP = 2.0 ** -6
"""Stored log-probs are float16 values rounded to multiples of this (nats): error <= 2^-7 nats per value; the
zeroed low mantissa bits compress away under bit-shuffle. Fidelity is measured in BENCHMARKS.md."""
TOPK_ORDER = "id_ascending"
"""Within a position the k ids are stored in increasing id order (their log-probs alongside): neighbouring
positions share most of their top-k set, so sorted ids compress ~7x better than probability order."""


def id_dtype(vocab_size: int) -> np.dtype:
    """uint16 for vocabularies up to 65,535 ids, else int32 (DESIGN.md, 'The cache')."""
    return np.dtype(np.uint16) if vocab_size <= 65_535 else np.dtype(np.int32)


WRITE_CONFIG = {"array.write_empty_chunks": True}
"""zarr config while writing: store every chunk, so a missing chunk key is detectable as damage."""
DEFAULT_CODEC = {"cname": "zstd", "clevel": 3}
"""Blosc settings of every data array (compared with alternatives in BENCHMARKS.md); the shuffle is per array."""
SHUFFLE = {"input_ids": "shuffle", "window_idx": "shuffle", "topk_ids": "shuffle", "topk_logprobs": "bitshuffle",
           "tail_logprob": "bitshuffle", "sample_ids": "shuffle"}


def _compressors(name: str, codec: dict | None = None):
    from zarr.codecs import BloscCodec, Crc32cCodec

    return [BloscCodec(**{**DEFAULT_CODEC, "shuffle": SHUFFLE[name], **(codec or {})}), Crc32cCodec()]


def _array_specs(n: int, seq_len: int, top_k: int, vocab_size: int, chunk: int, *, targets: str = "topk",
                 num_samples: int = 0) -> dict:
    ids = id_dtype(vocab_size)
    specs = {
        "input_ids": ((n, seq_len), (chunk, seq_len), ids, 0),
        "window_idx": ((n,), (chunk,), np.dtype(np.int64), -1),
        "topk_ids": ((n, seq_len, top_k), (chunk, seq_len, top_k), ids, 0),
        "topk_logprobs": ((n, seq_len, top_k), (chunk, seq_len, top_k), np.dtype(np.float16), 0.0),
        "tail_logprob": ((n, seq_len), (chunk, seq_len), np.dtype(np.float32), 0.0),
        "sample_ids": ((n, seq_len, num_samples), (chunk, seq_len, num_samples), ids, 0),
    }
    return {name: specs[name] for name in target_arrays(targets)}


def _store(path, mode: str = "r+"):
    """What zarr.open_group takes for `path`: a local path as str, an fsspec URL as an `FsspecStore`, a store as
    is (`bbl.stores`)."""
    return zarr_store(path, read_only=mode == "r")


def _open_group(path, mode: str):
    import zarr

    if not _exists(path):
        raise BblError(f"{path}: no logit cache there; run `bbl dump-logits --out {path}`")
    return zarr.open_group(store=_store(path, mode), mode=mode)


@dataclass
class ChunkBatch:
    """One chunk's worth of rows, numpy, ready to write (the arrays of its cache's kind; the others None)."""

    index: int
    input_ids: np.ndarray
    window_idx: np.ndarray
    topk_ids: np.ndarray | None = None
    topk_logprobs: np.ndarray | None = None
    tail_logprob: np.ndarray | None = None
    sample_ids: np.ndarray | None = None


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
        import zarr

        self.path = path
        seq_len, top_k, vocab = attrs["seq_len"], attrs["top_k"], attrs["vocab_size"]
        if top_k > vocab:
            raise BblError(f"--topk {top_k} exceeds the vocabulary ({vocab}); use --topk <= {vocab}")
        self.targets, num_samples = attrs.get("targets", "topk"), int(attrs.get("num_samples", 0))
        if self.targets not in TARGET_KINDS:
            raise BblError(f"--targets {self.targets!r}: use one of {', '.join(TARGET_KINDS)}")
        if self.targets != "topk" and num_samples < 1:
            raise BblError(f"--samples {num_samples}: a {self.targets} cache needs --samples >= 1")
        self.arrays = target_arrays(self.targets)
        self.settings = {k: attrs[k] for k in _SETTING_KEYS if k in attrs}
        self.settings.update(num_windows=num_windows, chunk_windows=chunk_windows)
        self.num_chunks = -(-num_windows // chunk_windows)
        self.chunk_windows = chunk_windows
        existing = None
        if not overwrite and _exists(path):
            existing = zarr.open_group(store=_store(path), mode="r+")
            old = existing.attrs.get("settings")
            if old != json.loads(json.dumps(self.settings)):
                raise BblError(f"{path}: holds a cache of other settings ({_diff(old, self.settings)}); "
                               f"pass --overwrite to replace it or choose another --out")
        if existing is not None:
            self.group = existing
        elif not create:
            raise BblError(f"{path}: no cache to resume")
        else:
            self.group = zarr.open_group(store=_store(path, "w"), mode="w")
            for name, (shape, chunks, dtype, fill) in _array_specs(num_windows, seq_len, top_k, vocab, chunk_windows,
                                                                   targets=self.targets,
                                                                   num_samples=num_samples).items():
                self.group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill,
                                        compressors=_compressors(name, codec))
            self.group.create_array("chunk_done", shape=(self.num_chunks,), chunks=(1,), dtype=bool,
                                    fill_value=False, compressors=None)
            self.group.attrs.update({**attrs, "format_version": FORMAT_VERSION, "settings": self.settings,
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
        with zarr.config.set(WRITE_CONFIG):
            for name in self.arrays:
                self.group[name][start:stop] = getattr(batch, name)
            self.group["chunk_done"][batch.index] = True

    def finalize(self, extra_attrs: dict | None = None) -> None:
        """Set `complete` (and summary attributes) once every chunk is done.

        Raises:
            BblError: if any chunk is missing.
        """
        done = self.done_chunks()
        if not done.all():
            raise BblError(f"{self.path}: {int((~done).sum())} chunk(s) not written; re-run dump-logits to resume")
        self.group.attrs.update({**(extra_attrs or {}), "complete": True})


_SETTING_KEYS = ("temperature", "top_k", "seq_len", "vocab_size", "ensemble", "teachers_fingerprint",
                 "tokenizer_fingerprint", "train_stream_sha256", "window_selection", "logprob_step", "topk_order",
                 "targets", "num_samples", "sample_seed")


def _exists(path) -> bool:
    if isinstance(path, Path | str):
        return has_zarr_group(path)
    import zarr

    try:
        zarr.open_group(store=path, mode="r")
        return True
    except Exception:
        return False


def _diff(old, new) -> str:
    if not isinstance(old, dict):
        return "not a bbl cache"
    keys = [k for k in set(old) | set(new) if old.get(k) != new.get(k)]
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(keys)[:4])


class CacheReader:
    """A complete cache, opened read-only.

    Raises:
        BblError: the path holds no cache, or the cache is not complete (unless `allow_incomplete`).
    """

    def __init__(self, path, *, allow_incomplete: bool = False):
        self.path = path
        self.group = _open_group(path, "r")
        self.attrs = dict(self.group.attrs)
        if "format_version" not in self.attrs:
            raise BblError(f"{path}: not a bbl logit cache (no format_version attribute)")
        if not self.attrs.get("complete") and not allow_incomplete:
            raise BblError(f"{path}: cache is incomplete (dump interrupted?); re-run `bbl dump-logits` to finish it")
        self.targets = self.attrs.get("targets", "topk")
        if self.targets not in TARGET_KINDS:
            raise BblError(f"{path}: unknown targets kind {self.targets!r} (written by a newer bbl?); upgrade bbl")
        self.num_samples = int(self.attrs.get("num_samples", 0))
        self.arrays = {name: self.group[name] for name in target_arrays(self.targets)}
        self.num_windows = self.arrays["input_ids"].shape[0]
        self.seq_len, self.top_k = self.attrs["seq_len"], self.attrs["top_k"]
        self.temperature = float(self.attrs["temperature"])
        self.vocab_size = int(self.attrs["vocab_size"])
        self.chunk_windows = int(self.attrs["chunk_windows"])
        self.num_chunks = -(-self.num_windows // self.chunk_windows)
        self.missing = missing_chunks(self)
        if self.missing and not allow_incomplete:
            raise BblError(damage_message(path, self.missing, self.attrs))

    def __len__(self) -> int:
        return self.num_windows

    def rows_of(self, c: int) -> tuple[int, int]:
        """(first, last) row of chunk `c`, inclusive."""
        return c * self.chunk_windows, min((c + 1) * self.chunk_windows, self.num_windows) - 1

    def read_array(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of one array.

        Raises:
            BblError: a chunk in the range fails its crc32c or cannot be decoded (one line naming the array, the
                chunk, its rows and the repair command).
        """
        arr = self.arrays[name]
        try:
            return arr[start:stop]
        except Exception:  # the crc32c codec or the decompressor raises on a damaged chunk: find which one
            for c in range(start // self.chunk_windows, -(-stop // self.chunk_windows)):
                first, last = self.rows_of(c)
                try:
                    arr[first:last + 1]
                except Exception as e:
                    problem = ChunkProblem(name, c, (first, last), "corrupt", f"{type(e).__name__}: {e}")
                    raise BblError(damage_message(self.path, [problem], self.attrs)) from None
            raise

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows [start, stop) of every array (contiguous reads are the fast path). Raises as `read_array`."""
        return {name: self.read_array(name, start, stop) for name in self.arrays}

    def scan(self, *, progress: bool = False) -> list[ChunkProblem]:
        """Decode every chunk of every array (crc32c checked on decode): missing, corrupt and unfinished chunks."""
        from tqdm.auto import tqdm

        problems = list(self.missing)
        known = {(p.array, p.chunk) for p in problems}
        for c in tqdm(range(self.num_chunks), desc="scan", unit="chunk", disable=not progress):
            first, last = self.rows_of(c)
            for name, arr in self.arrays.items():
                if (name, c) in known:
                    continue
                try:
                    arr[first:last + 1]
                except Exception as e:
                    problems.append(ChunkProblem(name, c, (first, last), "corrupt", f"{type(e).__name__}: {e}"))
        done = np.asarray(self.group["chunk_done"][:])
        problems += [ChunkProblem("chunk_done", int(c), self.rows_of(int(c)), "unfinished") for c in np.flatnonzero(~done)]
        return problems

    def read_chunk(self, c: int) -> dict[str, np.ndarray]:
        start = c * self.chunk_windows
        return self.read(start, min(start + self.chunk_windows, self.num_windows))

    def validate(self, *, tokenizer_fingerprint: str | None = None, train_stream_sha256: str | None = None,
                 seq_len: int | None = None, temperature: float | None = None, allow_retemper: bool = False,
                 vocab_size: int | None = None) -> None:
        """Refuse a cache that does not match the student run.

        Raises:
            BblError: tokenizer, token stream, seq_len, vocab or temperature differ (temperature only without
                `allow_retemper`).
        """
        p = self.path
        checks = [
            ("tokenizer", tokenizer_fingerprint, self.attrs.get("tokenizer_fingerprint"),
             "dump the cache with teachers trained on this prepared data"),
            ("token stream", train_stream_sha256, self.attrs.get("train_stream_sha256"),
             "dump the cache from the same prepared --data"),
            ("seq_len", seq_len, self.seq_len, "set training.seq_len to the cache's"),
            ("vocab_size", vocab_size, self.vocab_size, "use a student with the cache's tokenizer"),
        ]
        for what, want, have, fix in checks:
            if want is not None and want != have:
                raise BblError(f"{p}: cache {what} differs from the run's ({have!r} vs {want!r}); {fix}")
        if temperature is not None and abs(temperature - self.temperature) > 1e-9 and not allow_retemper:
            raise BblError(f"{p}: cache was written at temperature {self.temperature}, the run asks {temperature}; "
                           f"drop distill.temperature or set distill.allow_retemper=true")


def open_cache(path, **kw) -> CacheReader:
    """Open a complete cache for reading (see `CacheReader`)."""
    return CacheReader(path, **kw)
