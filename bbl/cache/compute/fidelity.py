"""How far a cache's stored targets are from a recomputation by its teachers (`bbl cache verify --teacher`): the
(k+1)-outcome KL of stored vs exact top-k targets, the mass quantisation adds or removes, the `--kd-fraction`
selection, and whether stored draws are distributed as p_T. Numpy in, numbers out; the kinds' operations
(`bbl.cache.compute`) call these on the rows they recompute.
"""

from __future__ import annotations

import numpy as np

from bbl.cache.format import select_positions
from bbl.losses.divergences import coarse_kl


def _coarse_logprobs(logprobs_at_ids: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """(..., K+1) float64 log-probabilities of {top-k ids, rest}, renormalised to sum to exactly 1."""
    lp = np.concatenate([logprobs_at_ids.astype(np.float64), tail.astype(np.float64)[..., None]], -1)
    top = lp.max(-1, keepdims=True)
    return lp - (top + np.log(np.exp(lp - top).sum(-1, keepdims=True)))


def stored_kl(exact_logprobs_at_ids, exact_tail, stored_logprobs, stored_tail) -> np.ndarray:
    """KL(exact ‖ stored) of the (k+1)-outcome distributions {top-k ids, rest}, per position (nats, >= 0).

    Both sides are renormalised over their k+1 outcomes first: the stored log-probs are rounded (float16 on the
    `LOGPROB_STEP` grid), so they do not sum to exactly 1, and a "KL" against an unnormalised vector can be
    negative. After renormalising this is a true KL between distributions, hence never negative (float64 rounding
    below 1e-15 is clipped at 0). The mass the rounding adds or removes is reported by `mass_defect`.

    Computed in float64 by the KD loss's own (k+1) KL (`bbl.losses.divergences.coarse_kl`).

    Args: (..., K) and (...) float arrays of log-probabilities; -inf tails (K == V) contribute 0.
    Returns: (...) float64 array, nats.
    """
    import torch

    pe = torch.from_numpy(_coarse_logprobs(exact_logprobs_at_ids, exact_tail))
    ps = torch.from_numpy(_coarse_logprobs(stored_logprobs, stored_tail))
    kl = coarse_kl(pe[..., :-1], pe[..., -1], ps[..., :-1], ps[..., -1]).numpy()
    return np.maximum(kl, 0.0)


def mass_defect(stored_logprobs, stored_tail) -> np.ndarray:
    """|1 - (Σ stored top-k probabilities + stored tail mass)| per position: what quantisation adds or removes."""
    lp = np.concatenate([stored_logprobs.astype(np.float64), stored_tail.astype(np.float64)[..., None]], -1)
    return np.abs(1.0 - np.exp(lp).sum(-1))


def topk_fidelity(pairs) -> dict:
    """The top-k figures `bbl cache verify` judges (max_abs_logprob_error, mean/max `stored_kl`, mean/max
    `mass_defect`) over (exact log-probs at the stored ids, exact tail, stored log-probs, stored tail) per row."""
    if not pairs:
        return {}
    kl = np.concatenate([stored_kl(*p) for p in pairs])
    defect = np.concatenate([mass_defect(p[2], p[3]) for p in pairs])
    return {"max_abs_logprob_error": max(float(np.abs(p[0] - p[2]).max(initial=0.0)) for p in pairs),
            "mean_kl": float(kl.mean()), "max_kl": float(kl.max()), "mean_mass_defect": float(defect.mean()),
            "max_mass_defect": float(defect.max())}


KD_MASK_ENTROPY_TOLERANCE = 1e-4
"""nats: a position whose entropy is this close to its window's selection threshold may fall either side of it
(the dump's chunked fp32 sums and this recomputation differ in rounding), so it is not counted as an error."""


def kd_mask_errors(stored: np.ndarray, entropy: np.ndarray, fraction: float) -> int:
    """Positions of one window whose stored `kd_mask` differs from `select_positions` of the recomputed entropy
    (S,) by more than rounding (`KD_MASK_ENTROPY_TOLERANCE` around the threshold)."""
    want = select_positions(entropy[None], fraction)[0]
    threshold = np.sort(entropy)[::-1][want.sum() - 1]
    wrong = (stored != want) & (np.abs(entropy - threshold) > KD_MASK_ENTROPY_TOLERANCE)
    return int(wrong.sum()) + int(stored.sum() != want.sum())


def target_distribution(rows: dict, vocab_size: int) -> np.ndarray:
    """(positions, V) float64: the distribution r the KD loss pulls a sampled or hybrid cache's student toward.

    sampled: c_i / N on the drawn ids; hybrid: exp(top-k log-probs) on the k ids plus tail mass * c_j / N on the
    drawn tail ids; top-k: the k ids' probabilities and nothing elsewhere (the tail is one lumped outcome, its
    shape inside the vocabulary is the student's own). Rows: the cache's arrays, flattened to positions.
    """
    n = len(rows["input_ids"].reshape(-1))
    r = np.zeros((n, vocab_size))
    at = np.arange(n)[:, None]
    if "topk_ids" in rows:
        np.add.at(r, (at, rows["topk_ids"].reshape(n, -1).astype(np.int64)),
                  np.exp(rows["topk_logprobs"].reshape(n, -1).astype(np.float64)))
    if "sample_ids" in rows:
        draws = rows["sample_ids"].reshape(n, -1).astype(np.int64)
        mass = np.exp(rows["tail_logprob"].reshape(n, 1).astype(np.float64)) if "topk_ids" in rows else 1.0
        np.add.at(r, (at, draws), np.broadcast_to(mass / draws.shape[1], draws.shape))
    return r


def total_variation(p: np.ndarray, rows: dict) -> np.ndarray:
    """½ Σ_i |p_i - r_i| per position between the teachers' p_T (positions, V) and `target_distribution`."""
    return 0.5 * np.abs(p - target_distribution(rows, p.shape[-1])).sum(-1)


def draws_check(p: np.ndarray, rows: dict) -> dict:
    """Are the stored draws distributed as p_T says? A z-score of the mass the distinct drawn ids cover.

    Per position the distinct ids among N draws from a distribution d cover X = Σ_i d_i 1[i drawn], whose
    expectation is Σ_i d_i (1 - (1 - d_i)^N) exactly; d = p_T (sampled) or the renormalised tail (hybrid). The
    mean of X - E[X] over the checked positions divided by its standard error is ~N(0, 1) for honest draws and
    far from 0 for draws from another distribution (say uniform, or another temperature). Returns draws_z and
    the mean covered and expected masses (`coverage_z` of `drawn_coverage`).
    """
    return coverage_z(*drawn_coverage(p, rows))


def coverage_z(covered: np.ndarray, expected: np.ndarray) -> dict:
    """`draws_check`'s result from per-position covered and expected masses."""
    n = len(covered)
    dev = covered - expected
    z = dev.mean() / max(dev.std(ddof=1) / np.sqrt(n), 1e-12) if n > 1 else 0.0
    return {"draws_z": float(z), "mean_covered_mass": float(covered.mean()), "mean_expected_mass": float(expected.mean())}


def drawn_coverage(p: np.ndarray, rows: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per position (covered, expected): the mass of d the distinct drawn ids cover, and its expectation."""
    n = p.shape[0]
    d = p.copy()
    if "topk_ids" in rows:
        np.put_along_axis(d, rows["topk_ids"].reshape(n, -1).astype(np.int64), 0.0, axis=-1)
        d /= np.maximum(d.sum(-1, keepdims=True), 1e-300)
    draws = rows["sample_ids"].reshape(n, -1).astype(np.int64)
    drawn = np.zeros_like(d, dtype=bool)
    np.put_along_axis(drawn, draws, True, axis=-1)
    covered = (d * drawn).sum(-1)
    expected = (d * -np.expm1(draws.shape[1] * np.log1p(-np.minimum(d, 1 - 1e-12)))).sum(-1)
    return covered, expected
