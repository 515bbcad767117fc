"""Token windows over a flat stream, a new seeded permutation each epoch, and the fixed dev subset.

The paper (Section 3) concatenates all tokens and cuts them into contiguous windows of 128 tokens; window n is
`stream[n * seq_len:(n + 1) * seq_len]`, the trailing partial window is dropped. Teachers, the logit cache and
the student all index windows this way, so `window_idx` means the same thing at every stage.

Random offsets (`training.window_offset: random`, BabyLlama-2's `BabylmDataset(random_chunk=True)`,
src/babyllama2/babylm_dataset.py of JLTastet/BabyLlama-2): in epoch e window n starts at n * seq_len +
`window_offsets(...)[n]`, an offset in [0, seq_len) drawn per window and epoch (seeded here, where BabyLlama-2 draws
unseeded at each access); one window fewer, so every offset fits. Such a dataset is `epoch_indexed`: the train
sampler yields `epoch * rows + row` (`EpochIndexSampler`), so an item knows its epoch in any DataLoader worker and
after `--resume`.
"""

from __future__ import annotations

import numpy as np

OFFSET_STREAM = 0x4F4653
"""Folded into the offsets' seed, so their draw never coincides with an order or subset drawn from the same seed."""


def num_windows(num_tokens: int, seq_len: int, *, random_offset: bool = False) -> int:
    """N = num_tokens // seq_len full windows; N - 1 with random offsets (BabyLlama-2's `__len__` with
    random_chunk), so the last window shifted by seq_len - 1 still fits."""
    if seq_len <= 0:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    return max(num_tokens // seq_len - 1, 0) if random_offset else num_tokens // seq_len


def window_offsets(n: int, seq_len: int, *, seed: int, epoch: int) -> np.ndarray:
    """The start offset of each of `n` windows in `epoch`, (n,) int64 in [0, seq_len): depends only on (seed,
    epoch), one independent uniform draw per window as BabyLlama-2's `randrange(seq_length)`."""
    return np.random.default_rng([seed, epoch, OFFSET_STREAM]).integers(0, seq_len, n, dtype=np.int64)


def window_permutation(n: int, *, seed: int, epoch: int) -> np.ndarray:
    """The order of `n` windows in `epoch`: a permutation that depends only on (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def window_subset(n: int, size: int | None, *, seed: int) -> np.ndarray:
    """A fixed, seeded, sorted subset of `min(size, n)` window indices (all of them when size is None)."""
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def select_train_windows(stream: np.ndarray, seq_len: int, max_windows: int | None, *, seed: int,
                         window_offset: str = "fixed") -> TokenWindows:
    """The train windows of a stream: every full window, or the fixed seeded subset of `max_windows`.

    One rule for `dump-logits --max-windows/--data-seed`, `training.max_train_windows/data_seed` and `cache repair`, so
    a cache and the student trained from it hold the same windows. With `window_offset` random the windows shift
    each epoch by offsets seeded by `seed` too (`TokenWindows`); the subset is drawn from the N - 1 windows.
    """
    random_offset = window_offset == "random"
    n = num_windows(len(stream), seq_len, random_offset=random_offset)
    return TokenWindows(stream, seq_len, window_subset(n, max_windows, seed=seed),
                        offset_seed=seed if random_offset else None)


def select_dev_windows(stream: np.ndarray, seq_len: int, size: int | None, *, seed: int) -> TokenWindows:
    """The fixed dev subset the trainers evaluate on and `bbl eval` scores: `size` windows seeded by `seed + 1`
    (`seed` is the run's data seed; the + 1 keeps the dev draw apart from the train subset's)."""
    return TokenWindows(stream, seq_len, window_subset(num_windows(len(stream), seq_len), size, seed=seed + 1))


class TokenWindows:
    """A map-style dataset of windows: item i is window `indices[i]` as `input_ids` and `labels` (int64, (S,)).

    Labels equal the inputs; the Hugging Face causal-LM loss shifts them so position s predicts token s+1.

    With `offset_seed` (random offsets, see the module docstring) the dataset is `epoch_indexed`: item
    `epoch * len + i` is row i as cut in that epoch, starting at `starts(epoch)[i]`.
    """

    def __init__(self, stream: np.ndarray, seq_len: int, indices: np.ndarray | None = None, *,
                 offset_seed: int | None = None):
        self.stream = stream
        self.seq_len = seq_len
        self.offset_seed = offset_seed
        self.epoch_indexed = offset_seed is not None
        n = num_windows(len(stream), seq_len, random_offset=self.epoch_indexed)
        self.indices = np.arange(n) if indices is None else np.asarray(indices)
        self._offsets: tuple[int, np.ndarray] | None = None  # (epoch, offsets of every window): the last epoch asked

    def __len__(self) -> int:
        return len(self.indices)

    def _epoch_offsets(self, epoch: int) -> np.ndarray:
        """`window_offsets` of every window of the stream in `epoch` (the last epoch's kept: a worker reads one
        epoch at a time)."""
        if self._offsets is None or self._offsets[0] != epoch:
            n = num_windows(len(self.stream), self.seq_len, random_offset=True)
            self._offsets = (epoch, window_offsets(n, self.seq_len, seed=self.offset_seed, epoch=epoch))
        return self._offsets[1]

    def starts(self, epoch: int = 0) -> np.ndarray:
        """(rows,) int64: the token where each row's window starts in `epoch` (the same in every epoch when fixed)."""
        indices = np.asarray(self.indices, dtype=np.int64)
        return indices * self.seq_len + (self._epoch_offsets(epoch)[indices] if self.epoch_indexed else 0)

    def window(self, i: int, epoch: int = 0) -> np.ndarray:
        """(S,) int64: row i's tokens as cut in `epoch`."""
        n = int(self.indices[i])
        start = n * self.seq_len + (int(self._epoch_offsets(epoch)[n]) if self.epoch_indexed else 0)
        return np.asarray(self.stream[start:start + self.seq_len], dtype=np.int64)

    def __getitem__(self, index: int) -> dict:
        import torch

        epoch, i = divmod(int(index), len(self)) if self.epoch_indexed else (0, index)
        ids = torch.from_numpy(self.window(i, epoch))
        return {"input_ids": ids, "labels": ids.clone()}


class EpochPermutationSampler:
    """Yields `order()`, a permutation of the n rows that depends only on (seed, epoch): `window_permutation`
    here; the Trainer calls `set_epoch` at each epoch start.

    The one epoch sampler of bbl: the cache's `ChunkShuffleSampler` only overrides `order` (a permutation that
    reads each chunk once), finetune's `FullBatchSampler` cuts it to whole batches. `EpochIndexSampler` is not
    another one: it wraps one and folds the epoch into each index, for an `epoch_indexed` dataset to decode.
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


class EpochIndexSampler:
    """The base sampler's order, each row `r` of epoch `e` yielded as `e * rows + r`, for an `epoch_indexed` dataset
    (random-offset windows, `train.objectives.PhasedDataset`) to decode with `divmod(index, rows)`.

    Not a second epoch sampler: the order is the base's (`EpochPermutationSampler` or the cache's chunk shuffle);
    the Trainer's `set_epoch` reaches the base, so a `--resume` replays the same order, offsets and masks.
    """

    def __init__(self, base, rows: int):
        self.base, self.rows, self.epoch = base, rows, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self):
        offset = self.epoch * self.rows
        return (offset + int(i) for i in self.base)
