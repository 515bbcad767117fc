"""The registered cache kinds by name (`CacheKind`); a kind not found here is one of `bbl.cache.format`'s."""

from __future__ import annotations

from bbl.cache.kinds import cross_tokenizer
from bbl.cache.kinds.base import CacheKind

KINDS: dict[str, CacheKind] = {k.name: k for k in (cross_tokenizer.KIND,)}


def registered_kind(name: str | None) -> CacheKind | None:
    """The registered kind called `name`, or None (a built-in kind of `bbl.cache.format`, or unknown)."""
    return KINDS.get(name or "")
