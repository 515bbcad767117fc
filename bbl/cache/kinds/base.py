"""What a registered cache kind declares (`CacheKind`): the rest of the cache room (writer, reader, integrity,
info) asks it instead of branching on the kind's name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class CacheKind:
    """A target kind of the logit cache, looked up by its `name` (the cache's `targets` attribute).

    Attributes:
        name: the `targets` attribute value.
        arrays: the per-window data arrays, in write order (chunked by windows along axis 0, like every cache's).
        static_arrays: arrays written once per cache (not per window chunk), each one chunk, checksummed.
        setting_keys: attributes besides `bbl.cache.format.SETTING_KEYS` that a resumed dump must match.
        array_specs: (attrs, num_windows, chunk_windows) -> {name: (shape, chunks, dtype, fill, shuffle)} for the
            arrays and static arrays.
        describe: attrs -> the `bbl cache info` words for what a position holds.
        stats: (reader, chunk indices) -> statistics for `cache info` and the dump's summary.
        training_item: (one row of the arrays, the static arrays) -> the arrays `bbl distill` trains on (the
            dataset adds input_ids and labels).
    """

    name: str
    arrays: tuple[str, ...]
    static_arrays: tuple[str, ...]
    setting_keys: tuple[str, ...]
    array_specs: Callable
    describe: Callable
    stats: Callable
    training_item: Callable
