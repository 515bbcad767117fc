"""Fixed token windows over a flat stream, a new seeded permutation each epoch, and the fixed dev subset.

The paper (Section 3) concatenates all tokens and cuts them into contiguous windows of 128 tokens; window n is
`stream[n * seq_len:(n + 1) * seq_len]`, the trailing partial window is dropped. Teachers, the logit cache and
the student all index windows this way, so `window_idx` means the same thing at every stage.
"""

from __future__ import annotations

import numpy as np


def num_windows(num_tokens: int, seq_len: int) -> int:
    """N = num_tokens // seq_len full windows."""
    if seq_len <= 0:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    return num_tokens // seq_len


def window_permutation(n: int, *, seed: int, epoch: int) -> np.ndarray:
    """The order of `n` windows in `epoch`: a permutation that depends only on (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def window_subset(n: int, size: int | None, *, seed: int) -> np.ndarray:
    """A fixed, seeded, sorted subset of `min(size, n)` window indices (all of them when size is None)."""
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def select_train_windows(stream: np.ndarray, seq_len: int, max_windows: int | None, *, seed: int) -> TokenWindows:
    """The train windows of a stream: every full window, or the fixed seeded subset of `max_windows`.

    One rule for `dump-logits --max-windows/--data-seed`, `training.max_train_windows/data_seed` and `cache repair`, so
    a cache and the student trained from it hold the same windows.
    """
    return TokenWindows(stream, seq_len, window_subset(num_windows(len(stream), seq_len), max_windows, seed=seed))


def select_dev_windows(stream: np.ndarray, seq_len: int, size: int | None, *, seed: int) -> TokenWindows:
    """The fixed dev subset the trainers evaluate on and `bbl eval` scores: `size` windows seeded by `seed + 1`
    (`seed` is the run's data seed; the + 1 keeps the dev draw apart from the train subset's)."""
    return TokenWindows(stream, seq_len, window_subset(num_windows(len(stream), seq_len), size, seed=seed + 1))


class TokenWindows:
    """A map-style dataset of windows: item i is window `indices[i]` as `input_ids` and `labels` (int64, (S,)).

    Labels equal the inputs; the Hugging Face causal-LM loss shifts them so position s predicts token s+1.
    """

    def __init__(self, stream: np.ndarray, seq_len: int, indices: np.ndarray | None = None):
        self.stream = stream
        self.seq_len = seq_len
        self.indices = np.arange(num_windows(len(stream), seq_len)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def window(self, i: int) -> np.ndarray:
        start = int(self.indices[i]) * self.seq_len
        return np.asarray(self.stream[start:start + self.seq_len], dtype=np.int64)

    def __getitem__(self, i: int) -> dict:
        import torch

        ids = torch.from_numpy(self.window(i))
        return {"input_ids": ids, "labels": ids.clone()}


class EpochPermutationSampler:
    """Yields `order()`, a permutation of the n rows that depends only on (seed, epoch): `window_permutation`
    here; the Trainer calls `set_epoch` at each epoch start.

    The one epoch sampler of bbl: the cache's `ChunkShuffleSampler` only overrides `order` (a permutation that
    reads each chunk once), finetune's `FullBatchSampler` cuts it to whole batches. `train.objectives.PhasedSampler`
    is not another one: it wraps one and folds the epoch into each index, for the dataset to decode.
    """

    def __init__(self, n: int, *, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> np.ndarray:
        """This epoch's order of the rows, (n,) int64."""
        return window_permutation(self.n, seed=self.seed, epoch=self.epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(self.order().tolist())
