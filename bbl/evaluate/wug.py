"""WUG adjective nominalization (Hofmann et al. 2024) as the BabyLM 2025 pipeline scores it: the model's
probability of the first form (softmax over the two sentences' log-probabilities) against the human preference,
by Spearman's rho (babylm/evaluation-pipeline-2025 `sentence_zero_shot/compute_results.py`,
`rank_and_evaluate_wug`; `run.py`, `process_results_wug`)."""

from __future__ import annotations

import numpy as np


def first_form_probability(scores: np.ndarray) -> np.ndarray:
    """softmax over each row's sentence log-probabilities, column 0, in float32 as the pipeline computes it.

    The pipeline stacks the two float32 sums and applies `torch.nn.functional.softmax` in float32
    (`rank_and_evaluate_wug`); its Spearman rho ranks those float32 values. Computed in float64, probabilities
    that float32 rounds to one value (e.g. 1.0 for score gaps beyond ~17 nats) would rank apart and rho would
    differ, so this uses the same float32 softmax.

    Args:
        scores: (n, 2) float, each item's two sentence log-probabilities (nats); float32 sums as
            `ranking.completion_logprobs` returns them.
    Returns:
        (n,) float64 holding float32 values in [0, 1] (what the pipeline's `prob.item()` writes).
    """
    import torch

    s = torch.as_tensor(np.asarray(scores, dtype=np.float32))
    return torch.nn.functional.softmax(s, dim=1)[:, 0].double().numpy()


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy.stats.rankdata's default, 'average')."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2  # mean of ranks start+1 .. end
            start = end
    return ranks


def spearman(x, y) -> float:
    """Spearman's rho: Pearson's r of the average ranks, as `scipy.stats.spearmanr(x, y)[0]`; NaN when either side
    is constant (as scipy).

    Raises:
        ValueError: x and y differ in length or hold fewer than 2 values.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"spearman needs two equal-length samples of at least 2 values, got {len(x)} and {len(y)}")
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    return float("nan") if denominator == 0 else float((rx * ry).sum() / denominator)
