"""The ensemble's own-vocabulary kinds (docs/cache-format.md): `topk` (the k most probable ids, their log-probs and
the tail's log mass), `sampled` (ids drawn from p_T, Anshumann et al. 2025, arXiv 2503.16870) and `hybrid` (the top
k plus draws from the tail), each a `CacheKind` registered like any other.
"""

from __future__ import annotations

import numpy as np

from bbl.cache.format import (
    DEFAULT_SAMPLES,
    DEFAULT_TOP_K,
    MAX_SAMPLES,
    SHUFFLE,
    ensemble_array_specs,
    target_arrays,
)
from bbl.cache.kinds.base import CacheKind
from bbl.errors import BblError


def _arrays(targets: str):
    def arrays(attrs: dict) -> tuple[str, ...]:
        return target_arrays(targets, sample_counts=bool(attrs.get("sample_counts")),
                             kd_mask=float(attrs.get("kd_fraction", 1.0)) < 1)
    return arrays


def _specs(targets: str):
    def specs(attrs: dict, n: int, chunk: int) -> dict:
        found = ensemble_array_specs(n, int(attrs["seq_len"]), int(attrs["top_k"]), int(attrs["vocab_size"]), chunk,
                                     targets=targets, num_samples=int(attrs.get("num_samples", 0)),
                                     sample_counts=bool(attrs.get("sample_counts")),
                                     kd_mask=float(attrs.get("kd_fraction", 1.0)) < 1)
        return {name: (*spec, SHUFFLE[name]) for name, spec in found.items()}
    return specs


def topk_mass(tail_logprob: np.ndarray) -> np.ndarray:
    """Probability mass the top k cover, 1 - exp(tail_logprob), per position."""
    return -np.expm1(tail_logprob.astype(np.float64))


def distinct_per_position(sample_ids: np.ndarray) -> np.ndarray:
    """Distinct ids among each position's draws (..., N) sorted ascending, as the cache stores them."""
    return 1 + (np.diff(sample_ids.astype(np.int64), axis=-1) != 0).sum(-1)


def stats(reader, chunks) -> dict:
    """The top-k mass (top-k and hybrid caches) and the distinct ids among the draws per position (sampled and
    hybrid caches), over the positions that have targets (`kd_mask` of a `--kd-fraction` cache)."""
    cw = reader.chunk_windows
    out: dict = {}
    if "kd_mask" in reader.arrays:
        kept = np.concatenate([reader.read_array("kd_mask", c * cw, (c + 1) * cw).ravel() for c in chunks])
        out["kd_fraction"] = reader.kd_fraction
    else:
        kept = slice(None)
    if "tail_logprob" in reader.arrays:
        tails = np.concatenate([reader.read_array("tail_logprob", c * cw, (c + 1) * cw).ravel() for c in chunks])[kept]
        mass = topk_mass(tails)
        out.update({"mean_tail_mass": float(1 - mass.mean()), "topk_mass_mean": float(mass.mean()),
                    "topk_mass_percentiles": {str(p): float(np.percentile(mass, p)) for p in (1, 5, 25, 50, 75, 95)}})
    if "sample_ids" in reader.arrays:
        distinct = np.concatenate([distinct_per_position(reader.read_array("sample_ids", c * cw, (c + 1) * cw)).ravel()
                                   for c in chunks])[kept]
        out.update({"num_samples": reader.num_samples, "distinct_sampled_ids_mean": float(distinct.mean())})
    return out


def training_item(row: dict, static: dict) -> dict:
    """The target arrays of one row as the losses read them: ids int64, log-probs float32, `kd_mask` bool."""
    item = {}
    for name in ("topk_ids", "sample_ids"):
        if name in row:
            item[name] = row[name].astype(np.int64)
    for name in ("topk_logprobs", "tail_logprob"):
        if name in row:
            item[name] = row[name].astype(np.float32)
    if "kd_mask" in row:
        item["kd_mask"] = row["kd_mask"].astype(bool)
    return item


def _check(targets: str):
    def check(config) -> None:
        """Settle top_k / num_samples for this kind and refuse the options it has no use for (one line each)."""
        if targets == "sampled" and config.top_k:
            raise BblError(f"--topk {config.top_k} does not apply to --targets sampled (it stores draws only); drop "
                           f"--topk or use --targets hybrid")
        config.top_k = 0 if targets == "sampled" else (DEFAULT_TOP_K if config.top_k is None else config.top_k)
        if targets == "topk" and config.num_samples:
            raise BblError(f"--samples {config.num_samples} applies to --targets sampled or hybrid; drop it or pick one")
        if config.num_samples is None:
            config.num_samples = 0 if targets == "topk" else DEFAULT_SAMPLES
        if targets != "topk" and config.num_samples < 1:
            raise BblError(f"--samples {config.num_samples} must be >= 1 for --targets {targets}")
        if config.num_samples > MAX_SAMPLES:
            raise BblError(f"--samples {config.num_samples} must be <= {MAX_SAMPLES}")
        if targets != "sampled" and config.top_k < 1:
            raise BblError(f"--topk {config.top_k} must be >= 1")
        if config.sample_counts and targets == "topk":
            raise BblError("--sample-counts applies to --targets sampled or hybrid (a top-k cache stores no draws)")
    return check


def _describe(targets: str):
    def describe(a: dict) -> str:
        return {"topk": f"top_k {a['top_k']} + tail mass", "sampled": f"{a.get('num_samples')} draws from p_T",
                "hybrid": f"top_k {a['top_k']} + {a.get('num_samples')} draws from the tail"}[targets]
    return describe


def _kind(name: str, kd_variants: tuple[str, ...], *, retemper: bool) -> CacheKind:
    return CacheKind(name=name, arrays=_arrays(name), array_specs=_specs(name), describe=_describe(name),
                     kd_variants=kd_variants, training_item=training_item, stats=stats, check_config=_check(name),
                     retemper=retemper)


TOPK = _kind("topk", ("topk_tail", "topk_renorm"), retemper=True)
SAMPLED = _kind("sampled", ("sampled",), retemper=False)
HYBRID = _kind("hybrid", ("hybrid", "topk_tail", "topk_renorm"), retemper=False)
"""A hybrid cache holds a top-k one: topk_tail / topk_renorm read its top k and tail, ignoring the draws."""
KINDS = (TOPK, SAMPLED, HYBRID)
