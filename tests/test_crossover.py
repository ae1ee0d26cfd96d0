"""One crossover definition (moeprof.roofline.crossover): the bracketing batches, the estimate and its method."""

from __future__ import annotations

import math

import pytest

from moeprof.roofline import crossover
from moeprof.roofline.cost import layer_cost


def test_interval_and_loglog_estimate():
    # a/b time ratio 2 at batch 16 and 1/2 at batch 256: log ratio is linear in log batch and crosses 0
    # half way in log space, at sqrt(16 * 256) = 64.
    [c] = crossover.find([1, 16, 256, 4096], [20, 20, 50, 100], [10, 10, 100, 400], "a", "b")
    assert (c.lo, c.hi, c.before, c.after, c.method) == (16, 256, "b", "a", "log-log interpolation")
    assert c.estimate == pytest.approx(64.0)
    assert c.describe() == "between 16 and 256 (estimate ~64, log-log interpolation)"
    assert c.method_detail == "log-log interpolation of the time ratio between measured batches 16 and 256"


def test_every_change_is_reported_and_ties_keep_the_winner():
    batches = [1, 2, 4, 8, 16]
    ta = [1.0, 3.0, 3.0, 3.0, 1.0]
    tb = [2.0, 2.0, 3.0, 2.0, 2.0]  # b wins at 2 and 8, tie at 4 (no change), a again at 16
    cs = crossover.find(batches, ta, tb, "a", "b")
    assert [(c.lo, c.hi, c.before, c.after) for c in cs] == [(1, 2, "a", "b"), (8, 16, "b", "a")]
    # a tie that keeps the winner is not a crossover; a tie between two winners is the estimate
    [c] = crossover.find([1, 2, 4], [1.0, 2.0, 3.0], [2.0, 2.0, 1.0], "a", "b")
    assert (c.lo, c.hi, c.estimate, c.method) == (1, 4, 2.0, "tie")
    assert crossover.find([1, 2, 4], [1.0, 2.0, 1.0], [2.0, 2.0, 2.0], "a", "b") == []


def test_missing_times_are_skipped_not_crossings():
    cs = crossover.find([1, 2, 4], [1.0, math.nan, 3.0], [2.0, 2.0, 2.0], "a", "b")
    assert [(c.lo, c.hi) for c in cs] == [(1, 4)]


def test_bisection_finds_the_first_integer_batch():
    # time a = 100 + batch, time b = 2 * batch: b is faster below 100, a from 101 on.
    def t(fmt, batch):
        return 100.0 + batch if fmt == "a" else 2.0 * batch
    [c] = crossover.find([64, 128], [t("a", 64), t("a", 128)], [t("b", 64), t("b", 128)], "a", "b", basis="model")
    c = crossover.bisect(c, t)
    assert (c.lo, c.hi, c.estimate, c.method, c.batch_exact) == (64, 128, 101.0, "bisection", 101)


def test_model_crossover_matches_hand_derivation():
    # H200, gpt-oss-120b: fp8 memory-bound and mxfp4 compute-bound on the BF16 MMA tie at
    # B = 3,191,685,120 / (4.8e12 * 199,065,600 / 989.4e12 - 31,716) = 3417.06 (test_models_roofline.py).
    grid = crossover.doubling_grid(1, 65536)
    times = {f: [layer_cost("gpt-oss-120b", f, "h200", b).t_roofline_s for b in grid] for f in ("fp8", "mxfp4")}
    [c] = crossover.find(grid, times["fp8"], times["mxfp4"], "fp8", "mxfp4", basis="roofline model")
    assert (c.lo, c.hi, c.after) == (2048, 4096, "fp8")
    b_star = 3_191_685_120 / (4.8e12 * 199_065_600 / 989.4e12 - 31_716)
    assert c.lo < b_star < c.hi and abs(math.log(c.estimate / b_star)) < math.log(2)
    exact = crossover.bisect(c, lambda f, b: layer_cost("gpt-oss-120b", f, "h200", b).t_roofline_s)
    assert exact.estimate == math.floor(b_star) + 1
