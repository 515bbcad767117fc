"""How a run walks its data: the micro-batch and accumulation that give the global batch, the train and eval
windows it reads (dev, or the prepared selection split when there is one), and the train order (a new seeded
permutation per epoch, or a cache's chunk shuffle; epoch-folded indices for a dataset that is `epoch_indexed`).

`bbl.train.ledger` replays exactly this order to count words seen, so both read it from here.
"""

from __future__ import annotations

from bbl.config import Config
from bbl.data.prepared import PreparedData
from bbl.data.windows import (
    EpochIndexSampler,
    EpochPermutationSampler,
    TokenWindows,
    select_dev_windows,
    select_train_windows,
)
from bbl.errors import BblError
from bbl.runtime import world_size


def resolve_batch(cfg: Config, world: int | None = None) -> tuple[int, int]:
    """(micro batch per device, gradient accumulation steps) giving the global `training.batch_size`.

    Raises:
        BblError: if batch_size is not micro_batch_size x world size x an integer.
    """
    world = world or world_size()
    t = cfg.training
    micro = t.micro_batch_size or max(t.batch_size // world, 1)
    if t.batch_size % (micro * world):
        raise BblError(f"training.batch_size {t.batch_size} is not divisible by micro_batch_size {micro} x "
                       f"{world} process(es); set training.micro_batch_size so that it is")
    return micro, t.batch_size // (micro * world)


def load_windows(cfg: Config, data: PreparedData) -> tuple[TokenWindows, TokenWindows]:
    """The train windows (all, or the fixed `max_train_windows` subset; cut as `training.window_offset` says) and
    the fixed eval subset of `data.eval_split` (the selection split `bbl prepare --selection-fraction` held out of
    the train words, else dev): the windows that choose the best checkpoint and a sweep's trial."""
    t = cfg.training
    split = data.eval_split
    train_stream, eval_stream = data.stream("train"), data.stream(split)
    random_offset = t.window_offset == "random"
    if len(train_stream) < t.seq_len * (2 if random_offset else 1) or len(eval_stream) < t.seq_len:
        raise BblError(f"{data.path}: fewer than seq_len={t.seq_len} tokens in train or {split}"
                       + (" (training.window_offset=random needs 2 x seq_len in train)" if random_offset else "")
                       + "; prepare more text")
    train = select_train_windows(train_stream, t.seq_len, t.max_train_windows, seed=t.window_seed,
                                 window_offset=t.window_offset)
    dev = select_dev_windows(eval_stream, t.seq_len, t.dev_windows, seed=t.window_seed)
    return train, dev


def epoch_order(dataset, seed: int):
    """The order of `dataset`'s rows in each epoch (a sampler with `set_epoch`): its own `sampler()` (the cache's
    chunk shuffle, a phased dataset's base order) or `EpochPermutationSampler`. Row indices, never epoch-folded:
    the ledger replays this."""
    sampler = getattr(dataset, "sampler", None)
    return sampler() if callable(sampler) else EpochPermutationSampler(len(dataset), seed=seed)


def train_sampler(dataset, seed: int):
    """The sampler the Trainer draws `dataset` with: `epoch_order`, its indices folded with the epoch
    (`EpochIndexSampler`) when the dataset is `epoch_indexed` (random-offset windows, objective phases)."""
    order = epoch_order(dataset, seed)
    return EpochIndexSampler(order, len(dataset)) if getattr(dataset, "epoch_indexed", False) else order
