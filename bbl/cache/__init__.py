"""The cache room: the logit cache, a Zarr v3 group of the teacher ensemble's soft targets (docs/cache-format.md).

Floors, each importing only those below it: `format` (arrays, dtypes, codecs); `kinds/` (each kind's declaration,
registered by name) and `dump_config` (`DumpConfig`); `store`, `integrity`, `writer`, `reader`, `dataset`
(the chunk-aware order distillation reads), `inspect` (`bbl cache info`); `compute/` (how each kind's chunks are
computed, registered by name); `dump` (the one dump driver, `bbl dump-logits`), `repair`, `verify`. The reading
API is exported here: `bbl.cache.open_cache`, `CacheReader`, `CacheWriter`, `CacheDataset`, ...
"""

from bbl.cache.dataset import (
    CacheDataset,
    ChunkShuffleSampler,
    MultiCacheDataset,
    cache_prefix,
    shuffled_order,
)
from bbl.cache.dump_config import DumpConfig
from bbl.cache.format import (
    ARRAYS,
    DEFAULT_CHUNK_WINDOWS,
    FORMAT_VERSION,
    LOGPROB_STEP,
    TOPK_ORDER,
    ChunkBatch,
    id_dtype,
    target_arrays,
)
from bbl.cache.kinds.registry import get_kind, kind_names, register_kind
from bbl.cache.reader import CacheReader, open_cache
from bbl.cache.writer import CacheWriter

__all__ = ["ARRAYS", "DEFAULT_CHUNK_WINDOWS", "FORMAT_VERSION", "LOGPROB_STEP", "TOPK_ORDER", "CacheDataset",
           "CacheReader", "CacheWriter", "ChunkBatch", "ChunkShuffleSampler", "DumpConfig", "MultiCacheDataset",
           "cache_prefix", "get_kind", "id_dtype", "kind_names", "open_cache", "register_kind", "shuffled_order",
           "target_arrays"]
