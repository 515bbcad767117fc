"""The cache room: the logit cache, a Zarr v3 group of the teacher ensemble's soft targets (docs/cache-format.md).

`format` (arrays, dtypes, codecs, `DumpConfig`), `store` (local path or fsspec URL), `writer` and `reader`,
`integrity` (missing and corrupt chunks), `dataset` (the chunk-aware order distillation reads), `dump` (`bbl
dump-logits`), `repair`, `inspect` (`bbl cache info`) and `verify` (`bbl cache verify`). The reading API is
exported here: `bbl.cache.open_cache`, `CacheReader`, `CacheWriter`, `CacheDataset`, ...
"""

from bbl.cache.dataset import CacheDataset, ChunkShuffleSampler, shuffled_order
from bbl.cache.format import (
    ARRAYS,
    DEFAULT_CHUNK_WINDOWS,
    FORMAT_VERSION,
    LOGPROB_STEP,
    TOPK_ORDER,
    ChunkBatch,
    DumpConfig,
    id_dtype,
    target_arrays,
)
from bbl.cache.reader import CacheReader, open_cache
from bbl.cache.writer import CacheWriter
from bbl.config import TARGET_KINDS

__all__ = ["ARRAYS", "DEFAULT_CHUNK_WINDOWS", "FORMAT_VERSION", "LOGPROB_STEP", "TARGET_KINDS", "TOPK_ORDER",
           "CacheDataset", "CacheReader", "CacheWriter", "ChunkBatch", "ChunkShuffleSampler", "DumpConfig", "id_dtype",
           "open_cache", "shuffled_order", "target_arrays"]
