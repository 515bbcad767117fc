"""What a cache kind declares (`CacheKind`): the arrays its store holds, their specs, its statistics, which
`distill.kd_variant`s read it and how one of its rows becomes what they train on. The reader, writer, dataset and
`cache info` ask the kind found by name (`bbl.cache.kinds.registry`) instead of branching on the name; how a kind's
chunks are computed (dump, verify, repair) is its operations' (`bbl.cache.compute`), one floor up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _no_stats(reader, chunks) -> dict:
    return {}


def _no_checks(config) -> None:
    return None


@dataclass(frozen=True)
class CacheKind:
    """A target kind of the logit cache, looked up by its `name` (the cache's `targets` attribute), as zarr-python
    looks up a codec: the built-in kinds and a third-party one are registered the same way
    (`bbl.cache.kinds.registry.register_kind`).

    Attributes:
        name: the `targets` attribute value (`bbl dump-logits --targets NAME`).
        arrays: attrs -> the per-window data arrays, in write order (chunked by windows along axis 0).
        array_specs: (attrs, num_windows, chunk_windows) -> {name: (shape, chunks, dtype, fill, shuffle)} for the
            arrays and static arrays (shuffle: Blosc's "shuffle" / "bitshuffle", or None for the array's default).
        describe: attrs -> the `bbl cache info` words for what a position holds.
        kd_variants: the `distill.kd_variant`s that read this kind's rows; the first is the default.
        training_item: (one row of the arrays (numpy), the static arrays) -> {name: numpy array} that distillation
            reads besides input_ids and labels (the KD reading's `target_keys`).
        stats: (reader, chunk indices) -> statistics for `cache info` and the dump's summary.
        static_arrays: arrays written once per cache (not per window chunk), each one chunk, checksummed: a tuple
            of names, or attrs -> the names (a kind whose later dumps add one; `static_names`).
        setting_keys: attributes besides `bbl.cache.format.SETTING_KEYS` that a resumed dump must match.
        check_config: a `DumpConfig` of this kind -> None; settles its kind-dependent defaults in place and raises
            `BblError` naming the dump-logits option for a setting the kind refuses.
        retemper: whether distillation may re-temper the stored targets (`distill.allow_retemper`): true for
            log-probs of a top-k cache, false for draws (drawn at the dump's temperature).
    """

    name: str
    arrays: Callable[[dict], tuple[str, ...]]
    array_specs: Callable[[dict, int, int], dict]
    describe: Callable[[dict], str]
    kd_variants: tuple[str, ...]
    training_item: Callable[[dict, dict], dict]
    stats: Callable = _no_stats
    static_arrays: tuple[str, ...] | Callable[[dict], tuple[str, ...]] = ()
    setting_keys: tuple[str, ...] = ()
    check_config: Callable = _no_checks
    retemper: bool = False

    def static_names(self, attrs: dict) -> tuple[str, ...]:
        """The static arrays a cache of these attributes holds (`static_arrays`, asked with the cache's attrs)."""
        return self.static_arrays(attrs) if callable(self.static_arrays) else self.static_arrays

    def variant_problem(self, kd_variant: str) -> str | None:
        """Why `distill.kd_variant=kd_variant` cannot read this kind, with the fix; None if it can."""
        if kd_variant in self.kd_variants:
            return None
        return (f"holds {self.name} targets, which distill.kd_variant={kd_variant} does not read; set "
                f"distill.kd_variant={' or '.join(self.kd_variants)}")
