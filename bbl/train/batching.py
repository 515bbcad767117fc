"""How a run walks its data: the micro-batch and accumulation that give the global batch, the train and dev
windows it reads, and the train order (a new seeded permutation per epoch, or a cache's chunk shuffle).

`bbl.train.ledger` replays exactly this order to count words seen, so both read it from here.
"""

from __future__ import annotations

from bbl.config import Config
from bbl.data.prepared import PreparedData
from bbl.data.windows import EpochPermutationSampler, TokenWindows, select_dev_windows, select_train_windows
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
    """The train windows (all, or the fixed `max_train_windows` subset) and the fixed dev subset."""
    t = cfg.training
    train_stream, dev_stream = data.stream("train"), data.stream("dev")
    if len(train_stream) < t.seq_len or len(dev_stream) < t.seq_len:
        raise BblError(f"{data.path}: fewer than seq_len={t.seq_len} tokens in train or dev; prepare more text")
    train = select_train_windows(train_stream, t.seq_len, t.max_train_windows, seed=t.window_seed)
    dev = select_dev_windows(dev_stream, t.seq_len, t.dev_windows, seed=t.window_seed)
    return train, dev


def train_sampler(dataset, seed: int):
    """The train order of `dataset`: its own `sampler()` (the cache's chunk shuffle) or `EpochPermutationSampler`."""
    sampler = getattr(dataset, "sampler", None)
    return sampler() if callable(sampler) else EpochPermutationSampler(len(dataset), seed=seed)
