"""diff statistics on the shipped capture (H100, 20 repeats per point, timings that drift within the run).

A/A comparisons (the capture against itself, against subsets of its own repeats) must never report
faster or slower; a change planted in a copy (one role's kernel durations and the layer times scaled)
must be found at 20 and at 3 repeats per side. Expected values come from the planted factor.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moeprof.analysis.diff import DiffOptions, _judge, diff
from moeprof.analysis.load import example_capture_path, load_capture
from moeprof.analysis.stats import block_bootstrap_medians, run_drift

SRC = example_capture_path().parent / "example_capture_h100"  # the H100 capture the slice and pins were cut from


def _write(tmp_path: Path, name: str, repeats: list[int] | None = None, fmt: str | None = None,
           phase: str | None = None, factor: float = 1.0) -> Path:
    """A copy of the shipped capture: only `repeats` (all if None); `phase` kernels and layer times of `fmt` x factor."""
    dst = tmp_path / name
    dst.mkdir()
    shutil.copy(SRC / "manifest.json", dst / "manifest.json")
    k = pd.read_csv(SRC / "kernels.csv.gz", keep_default_na=False, na_values=[""], dtype={"format": str})
    p = pd.read_csv(SRC / "points.csv", keep_default_na=False, na_values=[""], dtype={"format": str})
    if repeats is not None:
        k = k[k["repeat"].isin(repeats)]
        p = p[p["repeat"].isin(repeats)]
    if fmt is not None:
        sel = (k["format"] == fmt) & (k["phase"] == phase)
        k.loc[sel, "duration_ns"] *= factor
        p.loc[p["format"] == fmt, "layer_time_ns"] *= factor
    k.to_csv(dst / "kernels.csv.gz", index=False)
    p.to_csv(dst / "points.csv", index=False)
    return dst


@pytest.fixture(scope="module")
def shipped():
    return load_capture(SRC)


def _moved(d) -> pd.DataFrame:
    return d.rows[d.rows["status"].isin(["faster", "slower"])]


def test_aa_capture_against_itself(shipped):
    d = diff(shipped, shipped)
    assert set(d.rows["status"]) == {"unchanged"}
    assert "block-bootstrap" in d.decision_rule


@pytest.mark.parametrize("repeats", [[0, 1, 2], [0], [19], [0, 1], list(range(10))], ids=str)
def test_aa_subsets_of_own_repeats_never_move(shipped, tmp_path, repeats):
    """The audit's cases: its own first 3 repeats (a -4.1% 'faster' layer under Mann-Whitney) and 20 vs 1."""
    d = diff(shipped, load_capture(_write(tmp_path, "sub", repeats)))
    assert _moved(d).empty, _moved(d)[["format", "batch", "role", "change_pct", "ci_low_pct", "ci_high_pct"]]
    assert set(d.rows["status"]) <= {"unchanged", "inconclusive"}


@pytest.mark.parametrize("factor", [1.05, 1.10])
def test_planted_change_on_one_role_is_found_at_20_repeats(shipped, tmp_path, factor):
    d = diff(shipped, load_capture(_write(tmp_path, "b", fmt="fp8", phase="gemm1", factor=factor)))
    rows = d.rows.set_index(["format", "batch", "role"])
    target = rows.xs(("fp8", "gemm1"), level=("format", "role"))
    assert target["change_pct"].to_numpy() == pytest.approx(np.full(len(target), (factor - 1) * 100), abs=1e-6)
    # Found wherever the run's own drift leaves room for it; never the wrong way.
    quiet = target[target["threshold_pct"] < (factor - 1) * 100 * 0.8]
    assert len(quiet) >= 7 and (quiet["status"] == "slower").all()
    assert (target["status"] != "faster").all()
    untouched = d.rows[(d.rows["format"] != "fp8")]
    assert set(untouched["status"]) == {"unchanged"}


def test_planted_ten_percent_found_with_three_repeats_per_side(tmp_path):
    a = load_capture(_write(tmp_path, "a", [0, 1, 2]))
    b = load_capture(_write(tmp_path, "b", [0, 1, 2], fmt="fp8", phase="gemm1", factor=1.10))
    d = diff(a, b)
    gemm1 = d.rows[(d.rows["format"] == "fp8") & (d.rows["role"] == "gemm1")]
    assert (gemm1["status"] == "slower").all() and len(gemm1) == 8
    assert _moved(d).query("format != 'fp8'").empty


def test_one_repeat_per_side_small_change_is_inconclusive():
    assert _judge(np.array([100_000.0]), np.array([102_000.0]), DiffOptions())["status"] == "inconclusive"
    assert _judge(np.array([100_000.0]), np.array([120_000.0]), DiffOptions())["status"] == "slower"


def test_drift_sets_the_threshold():
    """A run that drifts 8% over its repeats cannot support a 5% verdict against a single call."""
    a = np.linspace(100_000.0, 108_000.0, 20)
    assert run_drift(a) == pytest.approx((np.median(a[15:]) - np.median(a[:5])) / np.median(a))
    r = _judge(a, np.array([a[0]]), DiffOptions())
    assert r["status"] in ("unchanged", "inconclusive") and r["threshold_pct"] >= 7.0


def test_bootstrap_is_deterministic_and_keeps_values():
    x = np.arange(1.0, 21.0)
    m1 = block_bootstrap_medians(x, 500, np.random.default_rng(1))
    m2 = block_bootstrap_medians(x, 500, np.random.default_rng(1))
    assert np.array_equal(m1, m2) and m1.min() >= 1 and m1.max() <= 20
    assert (block_bootstrap_medians([7.0], 10, np.random.default_rng(0)) == 7.0).all()
