"""Reading a logit cache for training: the chunk-aware shuffle order, its sampler and the map-style dataset, and
several caches of the same windows read as one (`MultiCacheDataset`, each cache's targets under its key prefix).

Exported by `bbl.cache`; rows are read through a `bbl.cache.reader.CacheReader`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from bbl.data.windows import EpochPermutationSampler, window_permutation

if TYPE_CHECKING:
    from bbl.cache.reader import CacheReader


def shuffled_order(num_windows: int, chunk_windows: int, *, seed: int, epoch: int,
                   buffer_chunks: int = 16) -> np.ndarray:
    """A per-epoch window order that reads each compressed chunk once.

    Chunks are visited in a seeded random order; windows of each group of `buffer_chunks` consecutive (in that
    order) chunks are shuffled together. So every window appears once per epoch, the order depends only on
    (seed, epoch), and any window can land anywhere within its group of buffer_chunks x chunk_windows windows
    (1,024 with the defaults), while a batch mixes windows of up to `buffer_chunks` random chunks.

    When every chunk fits in one group (num_chunks <= buffer_chunks) the order is exactly `window_permutation(n,
    seed, epoch)`, the order plain training uses: a cached student and a plain one of the same seed then see the
    same windows in the same order (a paired comparison, `bbl study`).
    """
    if -(-num_windows // chunk_windows) <= buffer_chunks:
        return window_permutation(num_windows, seed=seed, epoch=epoch)
    rng = np.random.default_rng([seed, epoch, 7])
    chunks = rng.permutation(-(-num_windows // chunk_windows))
    order = []
    for g in range(0, len(chunks), buffer_chunks):
        rows = np.concatenate([np.arange(c * chunk_windows, min((c + 1) * chunk_windows, num_windows))
                               for c in chunks[g:g + buffer_chunks]])
        order.append(rng.permutation(rows))
    return np.concatenate(order) if order else np.zeros(0, dtype=np.int64)


class ChunkShuffleSampler(EpochPermutationSampler):
    """The epoch sampler over cache rows, in `shuffled_order`; the Trainer's `set_epoch` picks the epoch."""

    def __init__(self, num_windows: int, chunk_windows: int, *, seed: int, buffer_chunks: int = 16):
        super().__init__(num_windows, seed=seed)
        self.chunk, self.buffer = chunk_windows, buffer_chunks

    def order(self) -> np.ndarray:
        return shuffled_order(self.n, self.chunk, seed=self.seed, epoch=self.epoch, buffer_chunks=self.buffer)


class CacheDataset:
    """Map-style dataset over a cache: item i is row i (input_ids, labels and the targets its kind's
    `training_item` gives: topk_ids, topk_logprobs, tail_logprob and/or sample_ids, kd_mask (S,) bool for a
    `--kd-fraction` cache; a cross-tokenizer cache's exact-match and ULD targets, ...).

    Decoded chunks are kept in a small LRU (`buffer_chunks` of them), so the `ChunkShuffleSampler` order decodes
    each chunk once per epoch. Ids come out int64, log-probs float32.
    """

    def __init__(self, reader: CacheReader, *, seed: int = 0, buffer_chunks: int = 16):
        self.reader, self.seed, self.buffer_chunks = reader, seed, buffer_chunks
        self._chunks: OrderedDict[int, dict] = OrderedDict()
        self._static = {name: reader.read_static(name) for name in reader.static}

    def __len__(self) -> int:
        return len(self.reader)

    def sampler(self) -> ChunkShuffleSampler:
        return ChunkShuffleSampler(len(self.reader), self.reader.chunk_windows, seed=self.seed,
                                   buffer_chunks=self.buffer_chunks)

    def _chunk(self, c: int) -> dict:
        if c in self._chunks:
            self._chunks.move_to_end(c)
        else:
            self._chunks[c] = self.reader.read_chunk(c)
            if len(self._chunks) > self.buffer_chunks + 1:
                self._chunks.popitem(last=False)
        return self._chunks[c]

    def rows(self, i: int) -> dict[str, np.ndarray]:
        c, r = divmod(int(i), self.reader.chunk_windows)
        chunk = self._chunk(c)
        return {k: v[r] for k, v in chunk.items()}

    def __getitem__(self, i: int) -> dict:
        import torch

        row = self.rows(i)
        ids = torch.from_numpy(row["input_ids"].astype(np.int64))
        item = {"input_ids": ids, "labels": ids.clone()}
        # the kind gives the targets its KD readings read (`CacheKind.training_item`)
        item.update({k: torch.from_numpy(v) for k, v in self.reader.kind.training_item(row, self._static).items()})
        return item


def cache_prefix(c: int) -> str:
    """The batch-key prefix of cache `c`'s targets in a `MultiCacheDataset` item ("cache0/", "cache1/", ...)."""
    return f"cache{c}/"


class MultiCacheDataset:
    """Several caches of the same student windows (row n is window `window_idx[n]` in every one, checked by the
    caller: `bbl.distill.recipe`) read as one map-style dataset: item i is input_ids and labels once, then each
    cache's targets (its kind's `training_item`) under `cache_prefix(c)`, e.g. "cache1/topk_ids".

    The order is the first cache's chunk shuffle (`sampler`), and `reader` is the first cache's (the ledger reads
    its `window_idx`). Another cache may be chunked otherwise: its LRU holds enough of its chunks to cover a
    shuffle group of the first's, so each of its chunks too is decoded about once per epoch.
    """

    def __init__(self, readers: Sequence[CacheReader], *, seed: int = 0, buffer_chunks: int = 16):
        first = readers[0].chunk_windows
        buffers = [buffer_chunks] + [buffer_chunks * (-(-first // r.chunk_windows) + 1) for r in readers[1:]]
        self.datasets = [CacheDataset(r, seed=seed, buffer_chunks=n) for r, n in zip(readers, buffers, strict=True)]
        self.reader = readers[0]

    def __len__(self) -> int:
        return len(self.reader)

    def sampler(self) -> ChunkShuffleSampler:
        return self.datasets[0].sampler()

    def __getitem__(self, i: int) -> dict:
        items = [ds[i] for ds in self.datasets]
        out = {"input_ids": items[0]["input_ids"], "labels": items[0]["labels"]}
        for c, item in enumerate(items):
            out.update({cache_prefix(c) + k: v for k, v in item.items() if k not in ("input_ids", "labels")})
        return out
