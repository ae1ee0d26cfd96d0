"""Metrics on the real H200 probe: tensor ops vs FLOPs, padding, MMA path, peaks from the capture's clocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moeprof.analysis import classify, expected, load, metrics

FIXTURE = Path(__file__).parent / "data" / "analysis_probe2"
M, N, K = 256, 5760, 2880  # the probe's gemm1: [256, 2880] x [5760, 2880]^T


@pytest.fixture(scope="module")
def tables():
    cap = load.load_capture(FIXTURE)
    k = classify.classify(cap.kernels)
    exp = expected.expectations(cap.manifest, [("bf16", 256), ("fp8", 256)])
    costs = exp.costs
    pk = metrics.peaks(k, cap.manifest, exp.gpu)
    roles = metrics.role_table(k, costs, pk, "nsys")
    layer = metrics.layer_table(k, cap.points, costs, pk, "nsys")
    return k, pk, roles, layer


def test_ncu_counts_fma_as_two_ops():
    # The raw ncu page: the BF16 GEMM's tensor ops are exactly 2*M*N*K (one FMA = 2 ops),
    # so executed ops and analytic FLOPs can be compared directly.
    raw = pd.read_csv(FIXTURE / "raw" / "ncu" / "p2.csv", skiprows=[1], thousands=",", low_memory=False)
    bf16 = raw["sm__ops_path_tensor_op_hgmma_src_bf16_dst_fp32_sparsity_off.sum"].astype(float)
    assert (bf16[bf16 > 0] == 2 * M * N * K).all()


def test_gemm1_padding_and_path(tables):
    _, _, roles, _ = tables
    g = roles[roles["role"] == "gemm1"].set_index("format")
    assert g.loc["bf16", "useful_flops"] == 2 * M * N * K
    assert g.loc["bf16", "padding_pct"] == pytest.approx(0.0)
    # FP8 tiles are 128 deep: K = 2880 runs as 2944: executed ops are 2944/2880 of the useful FLOPs, and
    # (2944 - 2880) / 2944 = 2.2% of the executed tensor ops are padding.
    assert g.loc["fp8", "executed_over_useful"] == pytest.approx(2944 / 2880)
    assert g.loc["fp8", "padding_pct"] == pytest.approx((2944 - 2880) / 2944 * 100)
    assert g.loc["bf16", "tensor_path"] == "bf16" and g.loc["fp8", "tensor_path"] == "fp8"
    assert (g["dram_bw_source"] == "ncu counters").all()


def test_peaks_from_capture_clocks(tables):
    k, pk, _, _ = tables
    ncu = k[k["collector"] == "ncu"]
    assert pk.tensor_flops_per_s["fp8"] == pytest.approx(1_081_344 * ncu["sm_clock_hz"].median())
    assert pk.tensor_flops_per_s["bf16"] * 2 == pytest.approx(pk.tensor_flops_per_s["fp8"])
    assert pk.dram_bytes_per_s == pytest.approx(1504 * ncu["dram_clock_hz"].median())
    assert "capture" in pk.tensor_source and "capture" in pk.dram_source


def test_role_times_and_shares(tables):
    _, _, roles, _ = tables
    assert set(roles["role"].astype(str)) == {"route", "gemm1", "act"}
    assert roles.groupby("format")["share_pct"].sum().round(6).eq(100).all()
    assert (roles["n_calls"] == 2).all()
    # with 2 calls per role, p10 and p90 are the linear interpolation 10% / 90% of the way between them
    lo, hi = roles["time_median_ns"] - roles["time_p10_ns"], roles["time_p90_ns"] - roles["time_median_ns"]
    np.testing.assert_allclose(lo, hi)
    assert (roles["time_p90_ns"] - roles["time_p10_ns"] > 0).any()


def test_layer_counts_only_measured_gemms(tables):
    _, _, _, layer = tables
    lay = layer.set_index("format")
    assert (lay["gemms_measured"] == "gemm1").all()
    assert lay.loc["bf16", "useful_flops"] == 2 * M * N * K
    assert lay.loc["bf16", "layer_time_source"].startswith("sum of nsys")
    assert lay.loc["fp8", "gemm_time_median_ns"] < lay.loc["bf16", "gemm_time_median_ns"]


def test_analytic_bandwidth_without_counters(tables):
    k, pk, _, _ = tables
    no_ncu = k[k["collector"] != "ncu"]
    costs = expected.expectations(load.load_capture(FIXTURE).manifest, [("bf16", 256), ("fp8", 256)]).costs
    roles = metrics.role_table(no_ncu, costs, pk, "nsys")
    g = roles[roles["role"] == "gemm1"]
    assert (g["dram_bw_source"] == "analytic bytes / measured time").all()
    assert g["tensor_path"].eq("").all() and g["padding_pct"].isna().all()
    assert np.isfinite(g["dram_bw_bytes_per_s"]).all()


def test_points_give_layer_times():
    # points.csv (CUDA events) take precedence over kernel sums.
    pts = pd.DataFrame({"format": ["fp8"] * 3, "batch": pd.array([8] * 3, dtype="Int64"),
                        "repeat": pd.array([0, 1, 2], dtype="Int64"), "layer_time_ns": [100.0, 110.0, 120.0],
                        "experts_touched": pd.array([30, 31, 29], dtype="Int64"), "kernel": ["x"] * 3})
    k = classify.classify(load.load_capture(FIXTURE).kernels.iloc[:0])
    lay = metrics.layer_table(k, pts, pd.DataFrame(), metrics.Peaks(), None)
    assert lay["layer_time_median_ns"].iloc[0] == 110 and lay["repeats"].iloc[0] == 3
    assert lay["experts_touched"].iloc[0] == 30


# ------------------------------------------------------------------------------------------------
# bound class with a stated margin around BUSY_PCT

@pytest.mark.parametrize("dram, tensor, expected", [
    (59.9, 9.5, "memory (borderline)"),      # the shipped capture's fp8 batch 1 (ncu itself says 60.0%)
    (60.0, 9.5, "memory (borderline)"),      # the other side of the mark: the same sentence
    (61.9, 9.5, "memory (borderline)"),
    (62.0, 9.5, "memory"),
    (57.9, 9.5, "latency/issue"),
    (58.0, 9.5, "memory (borderline)"),
    (9.5, 59.0, "compute (borderline)"),
    (9.5, 75.0, "compute"),
    (70.0, 90.0, "compute"),                 # both busy: the busier unit
    (90.0, 70.0, "memory"),
    (float("nan"), 70.0, "compute"),         # a busy tensor pipe bounds it whatever DRAM did
    (float("nan"), 30.0, ""),                # DRAM unknown and tensor pipe idle: no class
])
def test_bound_class_margin_both_sides(dram, tensor, expected):
    from moeprof.analysis.metrics import BOUND_MARGIN_PCT, BUSY_PCT, bound_class, classify_bound

    assert (BUSY_PCT, BOUND_MARGIN_PCT) == (60.0, 2.0)  # the values the cases above are written for
    got = classify_bound(pd.Series([dram]), pd.Series([tensor])).iloc[0]
    assert got == expected
    assert bound_class(got) == expected.removesuffix(" (borderline)")


def test_shipped_fp8_batch1_is_borderline_memory_not_latency():
    from moeprof.analysis.load import example_capture_path, load_capture
    from moeprof.analysis.pipeline import analyze

    # The H100 capture's fp8 batch-1 GEMMs sit at 59.9% of DRAM peak, just under the 60% mark.
    a = analyze(load_capture(example_capture_path().parent / "example_capture_h100"))
    row = a.layer[(a.layer["format"] == "fp8") & (a.layer["batch"] == 1)].iloc[0]
    assert 59.0 < row["dram_bw_pct_of_peak"] < 60.0 and row["bound_measured"] == "memory (borderline)"
    v = next(v for v in a.verdicts if v.batch == 1)
    assert any("fp8: expert GEMMs are memory-bound as measured" in r and "borderline" in r for r in v.reasons)
