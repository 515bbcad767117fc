"""Each cache kind's operations by the kind's name (`KindOperations`): the built-in ones registered here at import,
a third-party kind's by `register_operations` beside its `bbl.cache.kinds.registry.register_kind`. The dump driver,
repair and verify call `operations_of` and never branch on a kind's name.
"""

from __future__ import annotations

from bbl.cache.compute import cross_tokenizer, ensemble
from bbl.cache.compute.base import KindOperations
from bbl.cache.kinds.registry import get_kind
from bbl.errors import BblError

OPERATIONS: dict[str, KindOperations] = {}


def register_operations(operations: KindOperations, *, replace: bool = False) -> KindOperations:
    """Register how the kind `operations.name` is computed (its `CacheKind` must be registered first).

    Raises:
        ValueError: operations of that name are registered already (unless `replace`), or no such kind.
    """
    if operations.name in OPERATIONS and not replace:
        raise ValueError(f"operations of cache kind {operations.name!r} are registered already; pass replace=True")
    try:
        get_kind(operations.name)
    except BblError:
        raise ValueError(f"register the cache kind {operations.name!r} (`register_kind`) before its operations") from None
    OPERATIONS[operations.name] = operations
    return operations


def operations_of(name: str | None, *, subject: str = "--targets") -> KindOperations:
    """The operations of the kind called `name` (None: topk).

    Raises:
        BblError: no kind of that name, or a kind registered without operations (it can be read, not computed).
    """
    kind = get_kind(name, subject=subject)
    if kind.name not in OPERATIONS:
        raise BblError(f"{subject} {kind.name}: this cache kind can be read but not computed here (no operations "
                       f"registered for it); import the package that defines it")
    return OPERATIONS[kind.name]


for _operations in (*ensemble.OPERATIONS, cross_tokenizer.OPERATIONS):
    register_operations(_operations)
