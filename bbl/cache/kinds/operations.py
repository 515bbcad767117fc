"""The module that computes each registered kind (its dump, `recompute_sample` for `bbl cache verify`,
`config_from_attrs` and `chunk_computer` for `bbl cache repair`), looked up by the kind's name."""

from __future__ import annotations

from types import ModuleType

from bbl.cache.kinds import cross_tokenizer_dump

OPERATIONS: dict[str, ModuleType] = {cross_tokenizer_dump.NAME: cross_tokenizer_dump}


def kind_operations(name: str | None) -> ModuleType | None:
    """The operations module of the registered kind `name`, or None (a kind of `bbl.cache.format`)."""
    return OPERATIONS.get(name or "")
