"""Small statistics for repeated timings: summaries and a two-sided Mann-Whitney U test.

scipy's `mannwhitneyu` is used when installed; otherwise our own implementation: exact null
distribution (by counting) for small samples without ties, normal approximation with tie and
continuity correction otherwise. Both give the same p-values as scipy's 'auto' method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

EXACT_MAX_N = 8  # scipy 'auto': exact distribution when the smaller sample has <= 8 values and no ties


@dataclass(frozen=True)
class MannWhitney:
    u: float          # U statistic of the first sample
    p_value: float    # two-sided
    method: str       # scipy-exact | scipy-asymptotic | exact | normal


def summary(values: np.ndarray | list[float]) -> dict[str, float]:
    """median, p10, p90, min, max, n of finite values (NaN everywhere if none)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"median": math.nan, "p10": math.nan, "p90": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    p10, med, p90 = np.percentile(x, [10, 50, 90])
    return {"median": float(med), "p10": float(p10), "p90": float(p90), "min": float(x.min()),
            "max": float(x.max()), "n": int(x.size)}


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing the mean of their positions."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    ranks = np.empty(len(values), dtype=float)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


@lru_cache(maxsize=256)
def _u_counts(n1: int, n2: int) -> tuple[int, ...]:
    """Number of arrangements giving each U = 0..n1*n2 (no ties). Symmetric in (n1, n2)."""
    if n1 > n2:
        return _u_counts(n2, n1)
    # f(i, j, u): arrangements of i x's and j y's with U = u; recurrence on the largest element.
    table = {(0, j): [1] for j in range(n2 + 1)}
    for i in range(1, n1 + 1):
        table[(i, 0)] = [1]
        for j in range(1, n2 + 1):
            a = table[(i - 1, j)]        # largest is an x: it beats all j y's -> U += j
            b = table[(i, j - 1)]        # largest is a y: U unchanged
            size = i * j + 1
            row = [0] * size
            for u, c in enumerate(a):
                row[u + j] += c
            for u, c in enumerate(b):
                row[u] += c
            table[(i, j)] = row
    return tuple(table[(n1, n2)])


def _mann_whitney_own(x: np.ndarray, y: np.ndarray) -> MannWhitney:
    n1, n2 = len(x), len(y)
    ranks = _ranks(np.concatenate([x, y]))
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2)
    has_ties = len(np.unique(np.concatenate([x, y]))) < n1 + n2
    if not has_ties and min(n1, n2) <= EXACT_MAX_N:
        counts = np.array(_u_counts(n1, n2), dtype=float)
        total = counts.sum()
        u_hi = max(u1, n1 * n2 - u1)
        p = 2.0 * counts[int(round(u_hi)):].sum() / total
        return MannWhitney(u1, float(min(1.0, p)), "exact")
    mu = n1 * n2 / 2
    _, tie_counts = np.unique(ranks, return_counts=True)
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - (tie_counts ** 3 - tie_counts).sum() / (n * (n - 1)))
    if var <= 0:
        return MannWhitney(u1, 1.0, "normal")
    u_hi = max(u1, n1 * n2 - u1)
    z = (u_hi - mu - 0.5) / math.sqrt(var)
    p = math.erfc(z / math.sqrt(2))  # two-sided: 2 * (1 - Phi(z))
    return MannWhitney(u1, float(min(1.0, max(0.0, p))), "normal")


def mann_whitney(x: np.ndarray | list[float], y: np.ndarray | list[float], use_scipy: bool = True) -> MannWhitney:
    """Two-sided Mann-Whitney U test of x against y (finite values only; needs >= 1 of each)."""
    a = np.asarray(x, dtype=float)
    b = np.asarray(y, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        raise ValueError("Mann-Whitney U needs at least one value in each sample")
    if use_scipy:
        try:
            from scipy.stats import mannwhitneyu
        except ImportError:
            pass
        else:
            res = mannwhitneyu(a, b, alternative="two-sided", method="auto")
            exact = len(np.unique(np.concatenate([a, b]))) == a.size + b.size and min(a.size, b.size) <= EXACT_MAX_N
            p = float(res.pvalue) if np.isfinite(res.pvalue) else 1.0
            return MannWhitney(float(res.statistic), p, "scipy-exact" if exact else "scipy-asymptotic")
    return _mann_whitney_own(a, b)


# ------------------------------------------------------------------------------------------------
# Repeated timings of one run are not independent draws: clocks, temperature and caches drift over
# the run. The tools below respect the order of the repeats.

BOOTSTRAP_SEED = 20261130  # fixed: the same captures always give the same interval
DRIFT_BLOCKS = 4           # a run is cut into this many contiguous blocks to measure its drift


def block_length(n: int) -> int:
    """Contiguous repeats resampled together: about sqrt(n), so neighbouring (correlated) calls stay together."""
    return max(1, int(math.sqrt(n)))


def block_bootstrap_medians(x: np.ndarray | list[float], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of `resamples` circular block-bootstrap resamples of x, in repeat order (n = 1: x itself)."""
    v = np.asarray(x, dtype=float)
    n = v.size
    if n == 1:
        return np.full(resamples, v[0])
    length = block_length(n)
    blocks = -(-n // length)
    starts = rng.integers(0, n, size=(resamples, blocks))
    idx = (starts[:, :, None] + np.arange(length)[None, None, :]).reshape(resamples, -1)[:, :n] % n
    return np.median(v[idx], axis=1)


def run_drift(x: np.ndarray | list[float], blocks: int = DRIFT_BLOCKS) -> float:
    """Within-run drift, relative: range of the medians of contiguous blocks of repeats over the run's
    median (n = 2..blocks: each repeat is its own block). NaN for fewer than 2 repeats."""
    v = np.asarray(x, dtype=float)
    n = v.size
    if n < 2:
        return math.nan
    size = max(1, n // blocks)
    meds = [float(np.median(v[i:i + size])) for i in range(0, n - size + 1, size)]
    return (max(meds) - min(meds)) / float(np.median(v))


def sample_range(x: np.ndarray | list[float]) -> float:
    """(max - min) / median: where one more call of this run could land. NaN for fewer than 2 repeats."""
    v = np.asarray(x, dtype=float)
    return math.nan if v.size < 2 else float((v.max() - v.min()) / np.median(v))
