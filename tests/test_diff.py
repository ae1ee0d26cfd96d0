"""diff: self-diff shows nothing, comparability checks, significance from repeats, added/removed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moeprof.analysis.diff import DiffOptions, diff
from moeprof.analysis.load import load_capture
from moeprof.errors import MoeprofError

FIXTURE = Path(__file__).parent / "data" / "analysis_probe2"


def _copy(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copytree(FIXTURE, dst, ignore=shutil.ignore_patterns("raw", "build.py"))
    return dst


def _edit_manifest(folder: Path, fn) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    fn(m)
    (folder / "manifest.json").write_text(json.dumps(m))


def test_self_diff_reports_no_change():
    cap = load_capture(FIXTURE)
    d = diff(cap, cap)
    assert not d.errors and not d.warnings
    assert set(d.rows["status"]) == {"unchanged"}
    assert (d.rows["change_pct"] == 0).all()
    assert {"layer", "route", "gemm1", "act"} <= set(d.rows["role"])


def test_different_gpu_refused_unless_forced(tmp_path):
    b = _copy(tmp_path, "b")
    _edit_manifest(b, lambda m: m["gpu"].update(name="NVIDIA H100 80GB HBM3", spec="h100"))
    with pytest.raises(MoeprofError, match="different GPUs"):
        diff(load_capture(FIXTURE), load_capture(b))
    d = diff(load_capture(FIXTURE), load_capture(b), DiffOptions(force=True))
    assert d.errors and set(d.rows["status"]) == {"unchanged"}


def test_different_model_refused_and_soft_differences_warn(tmp_path):
    b = _copy(tmp_path, "b")
    _edit_manifest(b, lambda m: m["workload"].update(hidden_size=4096))
    with pytest.raises(MoeprofError, match="workload hidden_size"):
        diff(load_capture(FIXTURE), load_capture(b))
    c = _copy(tmp_path, "c")
    _edit_manifest(c, lambda m: m["collectors"]["ncu"]["options"].update(clock_control="base"))
    d = diff(load_capture(FIXTURE), load_capture(c))
    assert any("clock_control" in w for w in d.warnings)


def test_slower_gemm_with_two_repeats_is_found(tmp_path):
    b = _copy(tmp_path, "b")
    k = pd.read_csv(b / "kernels.csv")
    sel = (k["collector"] == "nsys") & (k["phase"] == "gemm1") & (k["format"] == "fp8")
    k.loc[sel, "duration_ns"] *= 1.5
    k.to_csv(b / "kernels.csv", index=False)
    d = diff(load_capture(FIXTURE), load_capture(b))
    row = d.rows.set_index(["format", "role"])
    assert row.loc[("fp8", "gemm1"), "status"] == "slower"
    assert row.loc[("fp8", "gemm1"), "change_pct"] == pytest.approx(50.0)
    assert row.loc[("fp8", "gemm1"), "ci_low_pct"] > row.loc[("fp8", "gemm1"), "threshold_pct"]
    assert row.loc[("bf16", "gemm1"), "status"] == "unchanged"


def test_significance_from_repeats_and_added_removed(tmp_path):
    a, b = _copy(tmp_path, "a"), _copy(tmp_path, "b")
    pts = lambda fmt, ts: pd.DataFrame({"format": fmt, "batch": 256, "repeat": range(len(ts)),  # noqa: E731
                                         "layer_time_ns": ts, "experts_touched": 1, "kernel": "x"})
    base = [t * 1e3 for t in (100.0, 101.0, 99.0, 100.5, 99.5, 100.2, 99.8, 100.1)]  # ~100 µs layer calls
    pd.concat([pts("fp8", base), pts("bf16", base)]).to_csv(a / "points.csv", index=False)
    pd.concat([pts("fp8", [t * 0.9 for t in base]), pts("bf16", [t * 1.01 for t in base])]).to_csv(
        b / "points.csv", index=False)
    d = diff(load_capture(a), load_capture(b))
    lay = d.rows[d.rows["role"] == "layer"].set_index("format")
    assert lay.loc["fp8", "status"] == "faster" and lay.loc["fp8", "ci_high_pct"] < -3.0
    assert lay.loc["bf16", "status"] == "unchanged"  # a clear +1% but under the 3% minimum effect
    assert lay.loc["bf16", "ci_low_pct"] > 0 and lay.loc["bf16", "threshold_pct"] == pytest.approx(3.0)

    k = pd.read_csv(b / "kernels.csv")
    k = k[~((k["format"] == "bf16") & (k["phase"] == "act"))]
    k2 = k[(k["format"] == "fp8") & (k["phase"] == "act")]
    k2 = k2.assign(phase="combine", nvtx_path=k2["nvtx_path"].str.replace("/act", "/combine"), start_ns=k2["start_ns"] + 1)
    pd.concat([k, k2]).to_csv(b / "kernels.csv", index=False)
    d = diff(load_capture(a), load_capture(b))
    st = d.rows.set_index(["format", "role"])["status"]
    assert st[("bf16", "act")] == "removed" and st[("fp8", "combine")] == "added"


def test_sub_microsecond_changes_are_not_significant():
    from moeprof.analysis.diff import DiffOptions, _judge

    rng = np.random.default_rng(0)
    a = 5000.0 + rng.normal(0, 5, 20)            # a 5 µs kernel
    b = a * 0.95                                 # 5% faster = 0.25 µs: clear in the test, below the floor
    assert _judge(a, b, DiffOptions())["status"] == "unchanged"
    assert _judge(a, b, DiffOptions(min_abs_ns=100.0))["status"] == "faster"
    big = 500_000.0 + rng.normal(0, 500, 20)     # a 0.5 ms GEMM 5% faster: 25 µs
    assert _judge(big, big * 0.95, DiffOptions())["status"] == "faster"
