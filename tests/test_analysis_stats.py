"""Mann-Whitney U: our implementation agrees with scipy (exact and asymptotic regimes)."""

from __future__ import annotations

import numpy as np
import pytest

from moeprof.analysis.stats import _mann_whitney_own, mann_whitney, summary

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("n1, n2, ties", [(2, 2, False), (3, 4, False), (5, 5, False), (8, 30, False),
                                          (9, 30, False), (20, 20, False), (3, 4, True), (20, 20, True)])
def test_own_matches_scipy(n1, n2, ties):
    rng = np.random.default_rng(n1 * 100 + n2)
    x, y = rng.normal(0, 1, n1), rng.normal(0.7, 1, n2)
    if ties:
        x, y = np.round(x), np.round(y)
    ref = scipy_stats.mannwhitneyu(x, y, alternative="two-sided", method="auto")
    own = _mann_whitney_own(x, y)
    assert own.u == pytest.approx(ref.statistic)
    assert own.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-12)


def test_identical_samples_are_not_significant():
    x = [10.0, 11.0, 12.0, 13.0]
    assert mann_whitney(x, x).p_value > 0.5
    assert _mann_whitney_own(np.array(x), np.array(x)).p_value > 0.5


def test_separated_samples_exact_p():
    # 5 vs 5, fully separated: exact two-sided p = 2 / C(10, 5) = 2/252
    own = _mann_whitney_own(np.arange(5.0), np.arange(10.0, 15.0))
    assert own.method == "exact" and own.p_value == pytest.approx(2 / 252)


def test_summary():
    s = summary([1, 2, 3, np.nan])
    assert s["median"] == 2 and s["n"] == 3 and s["min"] == 1
