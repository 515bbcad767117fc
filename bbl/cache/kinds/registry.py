"""Every cache kind by name (`CacheKind`): the built-in ones (`builtin`: topk, sampled, hybrid; `cross_tokenizer`)
are registered here at import, a third-party kind by `register_kind` (as zarr-python's codec registry holds its own
codecs and a package's alike). Nothing in the cache room branches on a kind's name: it calls `get_kind`.
"""

from __future__ import annotations

from bbl.cache.kinds import builtin, cross_tokenizer
from bbl.cache.kinds.base import CacheKind
from bbl.errors import BblError

KINDS: dict[str, CacheKind] = {}


def register_kind(kind: CacheKind, *, replace: bool = False) -> CacheKind:
    """Make `kind` known by its name to every reader, writer and `cache info`; its chunks are computed by the
    operations registered under the same name (`bbl.cache.compute.registry.register_operations`).

    Raises:
        ValueError: a kind of that name is registered already (unless `replace`).
    """
    if kind.name in KINDS and not replace:
        raise ValueError(f"cache kind {kind.name!r} is registered already; pass replace=True to replace it")
    KINDS[kind.name] = kind
    return kind


def kind_names() -> tuple[str, ...]:
    """The registered kinds' names, in registration order (the built-ins first)."""
    return tuple(KINDS)


def get_kind(name: str | None, *, subject: str = "--targets") -> CacheKind:
    """The kind called `name` (None: topk, the kind of every cache written before the `targets` attribute).

    Raises:
        BblError: no kind of that name is registered (one line naming `subject`, the value and the known kinds).
    """
    kind = KINDS.get(name or "topk")
    if kind is None:
        raise BblError(f"{subject} {name!r}: not a cache kind; use one of {', '.join(KINDS)}")
    return kind


for _kind in (*builtin.KINDS, cross_tokenizer.KIND):
    register_kind(_kind)
