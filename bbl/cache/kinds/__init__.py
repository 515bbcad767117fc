"""Cache target kinds registered by name (DESIGN.md, "Layout and extension points"): one module per kind says what
its cache holds (`base.CacheKind`: arrays, specs, settings, statistics), `registry` looks a kind up by the
`targets` attribute, `operations` finds the module that computes it (dump, recompute, repair). The kinds from
before the registry (topk, sampled, hybrid) are still described by `bbl.cache.format`.
"""
