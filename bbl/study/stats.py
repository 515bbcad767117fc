"""Paired statistics over seeds for `bbl study`: mean, sample std, and the 95% t-interval of paired differences.

Runs of two arms with the same seed share the initialisation and the window order, so the per-seed difference
removes most of the seed-to-seed variance; its interval is mean ± t(0.975, n-1) · sd / sqrt(n) (Student's t,
paired design; e.g. Wasserman, *All of Statistics*, 2004, Section 10.1).
"""

from __future__ import annotations

import math

# Two-sided 95% quantiles t(0.975, df) of Student's t for df = 1..30 (standard tables).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """t(0.975, df); beyond the table, the Cornish-Fisher expansion to second order, within 1e-4 for df > 30:
    z + (z^3 + z) / (4 df) + (5 z^5 + 16 z^3 + 3 z) / (96 df^2) (Abramowitz & Stegun 26.7.5).

    Raises:
        ValueError: df < 1.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def mean_std(values: list[float]) -> tuple[float, float]:
    """(mean, sample standard deviation with n - 1; 0.0 for a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def paired_interval(a: list[float], b: list[float]) -> dict:
    """Paired difference a - b over seeds: {"n", "mean", "std", "ci95": [lo, hi]} (ci95 None when n < 2).

    Raises:
        ValueError: a and b differ in length or are empty.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired samples need equal, non-zero lengths, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean, std = mean_std(diffs)
    n = len(diffs)
    ci = None
    if n > 1:
        half = t975(n - 1) * std / math.sqrt(n)
        ci = [mean - half, mean + half]
    return {"n": n, "mean": mean, "std": std, "ci95": ci}


def paired_ratio_interval(x: list[float], y: list[float]) -> dict:
    """The ratio of two paired means, mean(x) / mean(y), with its 95% Fieller interval: every R for which the
    paired differences x_i - R y_i have a mean inside their own t-interval around 0, i.e. the R with
    (x̄ - R ȳ)² <= t² (s_xx - 2 R s_xy + R² s_yy) / n (Fieller 1954, "Some problems in interval estimation", J. R.
    Stat. Soc. B 16; paired form as Franz 2007, "Ratios: a short guide to confidence limits and proper use",
    arXiv 0710.2024, Section 3). Used for the share of a KD gain an arm keeps: x = baseline - arm, y = baseline -
    same-tokenizer KD, per seed; both uncertainties count, where dividing by mean(y) as exact would hide y's.

    Args:
        x, y: per-seed values of the numerator and the denominator, paired by position.
    Returns:
        {"n", "ratio", "ci95": [lo, hi] or None}: None when n < 2 or the denominator's own interval contains 0
        (the set is then unbounded).
    Raises:
        ValueError: x and y differ in length, or are empty, or mean(y) is 0.
    """
    if len(x) != len(y) or not x:
        raise ValueError(f"paired samples need equal, non-zero lengths, got {len(x)} and {len(y)}")
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    if my == 0:
        raise ValueError("the denominator's mean is 0: the ratio is undefined")
    out = {"n": n, "ratio": mx / my, "ci95": None}
    if n < 2:
        return out
    sxx = sum((v - mx) ** 2 for v in x) / (n - 1)
    syy = sum((v - my) ** 2 for v in y) / (n - 1)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / (n - 1)
    q = t975(n - 1) ** 2 / n
    a = my * my - q * syy  # R² coefficient; > 0 exactly when y's own interval excludes 0
    if a <= 0:
        return out
    b = mx * my - q * sxy
    c = mx * mx - q * sxx
    root = math.sqrt(max(b * b - a * c, 0.0))
    out["ci95"] = [(b - root) / a, (b + root) / a]
    return out
