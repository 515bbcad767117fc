"""Cache target kinds, declared and registered by name (DESIGN.md, "Layout and extension points"): `base.CacheKind`
(arrays, specs, statistics, the KD readings of its rows), `builtin` (topk, sampled, hybrid), `cross_tokenizer`,
`registry` (`get_kind`, `register_kind`). Declarations only: they sit below the reader and writer that ask them; how
a kind's chunks are computed is `bbl.cache.compute`'s.
"""
