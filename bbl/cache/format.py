"""The logit cache's format (docs/cache-format.md): its arrays per target kind, their dtypes, chunking and codecs,
the stored form of the targets (ids sorted by id, log-probs on a grid), and the dump's settings (`DumpConfig`),
recorded in the cache's attributes so `bbl cache repair` recomputes a chunk exactly as the dump wrote it.

Row n of every array is window `window_idx[n]` of the train stream; position s holds the ensemble's distribution
for the token after `input_ids[n, :s+1]`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from bbl.errors import BblError

FORMAT_VERSION = 1
ARRAYS = ("input_ids", "window_idx", "topk_ids", "topk_logprobs", "tail_logprob")
"""The arrays of a top-k cache (`targets` "topk", the default and the only kind before issue 15)."""


def target_arrays(targets: str = "topk", *, sample_counts: bool = False,
                  kd_mask: bool = False) -> tuple[str, ...]:
    """The data arrays a cache of the ensemble's own-vocabulary kind `targets` (topk, sampled, hybrid) holds, in
    write order (`sample_counts`: the draws stored as
    distinct ids and their counts, `--sample-counts`; `kd_mask`: the positions that have targets, `--kd-fraction`)."""
    arrays = {"topk": ARRAYS, "sampled": ("input_ids", "window_idx", "sample_ids"),
              "hybrid": (*ARRAYS, "sample_ids")}[targets]
    if sample_counts and targets != "topk":
        arrays = (*arrays, "sample_counts")
    return (*arrays, "kd_mask") if kd_mask else arrays


DEFAULT_CHUNK_WINDOWS = 256
LOGPROB_STEP = 2.0 ** -6
"""Stored log-probs are float16 values rounded to multiples of this (nats): error <= 2^-7 nats per value; the
zeroed low mantissa bits compress away under bit-shuffle. Fidelity is measured in BENCHMARKS.md."""
TOPK_ORDER = "id_ascending"
"""Within a position the k ids are stored in increasing id order (their log-probs alongside): neighbouring
positions share most of their top-k set, so sorted ids compress ~7x better than probability order."""


def id_dtype(vocab_size: int) -> np.dtype:
    """uint16 for vocabularies up to 65,535 ids, else int32 (docs/cache-format.md, "Arrays")."""
    return np.dtype(np.uint16) if vocab_size <= 65_535 else np.dtype(np.int32)


WRITE_CONFIG = {"array.write_empty_chunks": True}
"""zarr config while writing: store every chunk, so a missing chunk key is detectable as damage."""
DEFAULT_CODEC = {"cname": "zstd", "clevel": 3}
"""Blosc settings of every data array (compared with alternatives in BENCHMARKS.md); the shuffle is per array."""
SHUFFLE = {"input_ids": "shuffle", "window_idx": "shuffle", "topk_ids": "shuffle", "topk_logprobs": "bitshuffle",
           "tail_logprob": "bitshuffle", "sample_ids": "shuffle", "sample_counts": "bitshuffle", "kd_mask": "bitshuffle"}
DELTA_ARRAYS = ("topk_ids", "sample_ids")
"""The id arrays `--delta-ids` stores delta-coded (numcodecs' `Delta` filter, zarr name `numcodecs.delta`)."""


def compressors(name: str, codec: dict | None = None, *, shuffle: str | None = None):
    """Blosc (`DEFAULT_CODEC`, the array's shuffle: `SHUFFLE[name]` unless given) + crc32c, for every data array."""
    from zarr.codecs import BloscCodec, Crc32cCodec

    return [BloscCodec(**{**DEFAULT_CODEC, "shuffle": shuffle or SHUFFLE[name], **(codec or {})}), Crc32cCodec()]


def filters(name: str, dtype, *, delta_ids: bool = False) -> list:
    """The array-to-array codecs of array `name`: none, or with `delta_ids` numcodecs' `Delta` on the id arrays.

    Delta stores x[0], x[1] - x[0], ... over the chunk in C order (wrapping in the id dtype), so each position's
    ascending ids become small gaps; any zarr-python 3 reader with numcodecs (a bbl dependency) decodes it, a
    reader without numcodecs cannot (the codec is not in the Zarr v3 specification).
    """
    if not (delta_ids and name in DELTA_ARRAYS):
        return []
    from zarr.codecs.numcodecs import Delta

    with numcodecs_quiet():
        return [Delta(dtype=np.dtype(dtype).str)]


@contextlib.contextmanager
def numcodecs_quiet():
    """A context in which zarr does not warn, on every array it opens, that a numcodecs codec (`--delta-ids`) is
    outside the Zarr v3 specification: said once, in docs/cache-format.md."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3 specification")
        yield


def ensemble_array_specs(n: int, seq_len: int, top_k: int, vocab_size: int, chunk: int, *, targets: str = "topk",
                         num_samples: int = 0, sample_counts: bool = False, kd_mask: bool = False) -> dict:
    """{name: (shape, chunks, dtype, fill)} of the arrays of a topk, sampled or hybrid cache (`target_arrays`)."""
    ids = id_dtype(vocab_size)
    specs = {
        "input_ids": ((n, seq_len), (chunk, seq_len), ids, 0),
        "window_idx": ((n,), (chunk,), np.dtype(np.int64), -1),
        "topk_ids": ((n, seq_len, top_k), (chunk, seq_len, top_k), ids, 0),
        "topk_logprobs": ((n, seq_len, top_k), (chunk, seq_len, top_k), np.dtype(np.float16), 0.0),
        "tail_logprob": ((n, seq_len), (chunk, seq_len), np.dtype(np.float32), 0.0),
        "sample_ids": ((n, seq_len, num_samples), (chunk, seq_len, num_samples), ids, 0),
        "sample_counts": ((n, seq_len, num_samples), (chunk, seq_len, num_samples), np.dtype(np.uint8), 0),
        "kd_mask": ((n, seq_len), (chunk, seq_len), np.dtype(bool), False),
    }
    return {name: specs[name] for name in target_arrays(targets, sample_counts=sample_counts, kd_mask=kd_mask)}


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
    sample_counts: np.ndarray | None = None
    kd_mask: np.ndarray | None = None


SETTING_KEYS = ("temperature", "top_k", "seq_len", "vocab_size", "ensemble", "teachers_fingerprint",
                 "tokenizer_fingerprint", "train_stream_sha256", "window_selection", "logprob_step", "topk_order",
                 "targets", "num_samples", "sample_seed", "dump_dtype", "delta_ids", "sample_counts", "kd_fraction")




def sort_by_id(topk_ids: np.ndarray, topk_logprobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder each position's k entries by increasing id (the cache's `TOPK_ORDER`, which compresses best)."""
    order = np.argsort(topk_ids, axis=-1, kind="stable")
    return np.take_along_axis(topk_ids, order, -1), np.take_along_axis(topk_logprobs, order, -1)


def quantize_logprobs(logprobs: np.ndarray, step: float = LOGPROB_STEP) -> np.ndarray:
    """Round to multiples of `step` (nats) as float16: what the cache stores (error <= step / 2 per value)."""
    return (np.round(logprobs / step) * step).astype(np.float16)


def select_positions(entropy: np.ndarray, fraction: float) -> np.ndarray:
    """(N, S) bool: in each window the ceil(fraction x S) positions of highest teacher entropy (ties: the earlier
    position), the positions `--kd-fraction` keeps targets for.

    Args: entropy (N, S) float, H(p_T) per position in nats; fraction in (0, 1].
    """
    n, s = entropy.shape
    keep = int(np.ceil(fraction * s - 1e-9))
    order = np.argsort(-entropy.astype(np.float64), axis=-1, kind="stable")[:, :keep]
    mask = np.zeros((n, s), dtype=bool)
    np.put_along_axis(mask, order, True, axis=-1)
    return mask


def count_draws(sample_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The draws (..., M) sorted ascending as (distinct ids, counts), each (..., M): a position's distinct ids
    first, ascending, then 0 (count 0) in the unused slots; counts uint8, summing to M at every position.

    The stored form of `--sample-counts`; `expand_draws` inverts it exactly.
    """
    m = sample_ids.shape[-1]
    flat = sample_ids.reshape(-1, m)
    new = np.ones(flat.shape, dtype=bool)
    new[:, 1:] = flat[:, 1:] != flat[:, :-1]  # first slot of each run of an id
    slot = np.cumsum(new, axis=1) - 1  # the run's index = its slot in the distinct form
    rows = np.arange(flat.shape[0])[:, None]
    ids = np.zeros_like(flat)
    ids[rows, slot] = flat
    counts = np.zeros(flat.shape, dtype=np.uint8)
    np.add.at(counts, (np.broadcast_to(rows, flat.shape), slot), 1)
    return ids.reshape(sample_ids.shape), counts.reshape(sample_ids.shape)


def expand_draws(ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The draws (..., M) with repeats, ascending, from `count_draws`' (ids, counts): what a reader hands the
    losses, so every `distill.kd_variant` reads a counts cache as the repeated-id one.

    Raises:
        BblError: the counts of some position do not sum to M (a damaged or foreign array).
    """
    m = ids.shape[-1]
    if ids.size and not (counts.reshape(-1, m).sum(-1, dtype=np.int64) == m).all():
        raise BblError(f"sample_counts: some position's counts do not sum to the {m} draws; run `bbl cache verify`")
    return np.repeat(ids.reshape(-1), counts.reshape(-1).astype(np.int64)).reshape(ids.shape)


MAX_SAMPLES = 255
DEFAULT_TOP_K = 64
DEFAULT_SAMPLES = 12
"""Draws per position of a sampled or hybrid cache when `--samples` is not given: the figure Anshumann et al.
(2025, "Sparse Logit Sampling") report for random-sampling KD."""


CPU_BATCH_SIZE = 16
"""Windows per teacher forward pass on CPU when `--batch-size` is not given (the default of every earlier dump)."""


STORAGE_DEFAULTS = {"logprob_step": LOGPROB_STEP, "delta_ids": False, "sample_counts": False, "kd_fraction": 1.0}
"""`DumpConfig`'s options of issue 33 and their defaults: the stored form of the targets, and at which positions."""
