"""Reading a logit cache: `open_cache` opens it read-only, refusing incomplete stores and stores with a missing
chunk (zarr would read it as fill values); `CacheReader.read(start, stop)` turns a corrupt chunk into one
`BblError` line; `validate` refuses a cache that does not match the student's run. The chunk-aware
`CacheDataset` (`bbl.cache.dataset`) reads through it for distillation.
"""

from __future__ import annotations

import numpy as np

from bbl.cache.format import expand_draws, numcodecs_quiet
from bbl.cache.integrity import ChunkProblem, damage_message, missing_chunks
from bbl.cache.kinds.registry import get_kind
from bbl.cache.store import open_group
from bbl.data.tokenizer import check_same_tokenizer
from bbl.errors import BblError


class CacheReader:
    """A complete cache, opened read-only.

    Raises:
        BblError: the path holds no cache, or the cache is not complete (unless `allow_incomplete`).
    """

    def __init__(self, path, *, allow_incomplete: bool = False):
        self.path = path
        self.group = open_group(path, "r")
        self.attrs = dict(self.group.attrs)
        if "format_version" not in self.attrs:
            raise BblError(f"{path}: not a bbl logit cache (no format_version attribute)")
        if not self.attrs.get("complete") and not allow_incomplete:
            raise BblError(f"{path}: cache is incomplete (dump interrupted?); re-run `bbl dump-logits` to finish it")
        self.targets = self.attrs.get("targets", "topk")
        try:
            self.kind = get_kind(self.targets)
        except BblError:
            raise BblError(f"{path}: unknown targets kind {self.targets!r} (written by a newer bbl, or a kind whose "
                           f"package is not imported?); upgrade bbl or register the kind") from None
        self.num_samples = int(self.attrs.get("num_samples", 0))
        self.sample_counts = bool(self.attrs.get("sample_counts"))  # draws stored as (distinct ids, counts)
        self.kd_fraction = float(self.attrs.get("kd_fraction", 1.0))  # < 1: targets only where `kd_mask` is true
        with numcodecs_quiet():
            self.arrays = {name: self.group[name] for name in self.kind.arrays(self.attrs)}
        self.static = {name: self.group[name] for name in self.kind.static_names(self.attrs)}
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
        """Rows [start, stop) of one array; `sample_ids` of a `--sample-counts` cache come out with repeats (the
        form every cache of its kind has), `sample_counts` is then read alongside.

        Raises:
            BblError: a chunk in the range fails its crc32c or cannot be decoded (one line naming the array, the
                chunk, its rows and the repair command).
        """
        if name == "sample_ids" and self.sample_counts:
            return expand_draws(self._read_raw("sample_ids", start, stop), self._read_raw("sample_counts", start, stop))
        return self._read_raw(name, start, stop)

    def _read_raw(self, name: str, start: int, stop: int) -> np.ndarray:
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
        """Rows [start, stop) of every target array (contiguous reads are the fast path), in the form of the cache's
        kind (`read_array`: no `sample_counts`). Raises as `read_array`."""
        return {name: self.read_array(name, start, stop) for name in self.arrays if name != "sample_counts"}

    def read_static(self, name: str) -> np.ndarray:
        """A static array of the kind, whole. Raises `BblError` (one line) when it is corrupt."""
        try:
            return self.static[name][:]
        except Exception as e:
            problem = ChunkProblem(name, 0, (0, self.static[name].shape[0] - 1), "corrupt", f"{type(e).__name__}: {e}")
            raise BblError(damage_message(self.path, [problem], self.attrs)) from None

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
        for name, arr in self.static.items():
            if (name, 0) not in known:
                try:
                    arr[:]
                except Exception as e:
                    problems.append(ChunkProblem(name, 0, (0, arr.shape[0] - 1), "corrupt", f"{type(e).__name__}: {e}"))
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
        if tokenizer_fingerprint is not None:
            check_same_tokenizer(self.attrs.get("tokenizer_fingerprint"), tokenizer_fingerprint,
                                 subject=f"{p}: cache", reference="the run's prepared data",
                                 fix="dump the cache with teachers trained on this prepared data")
        checks = [
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
