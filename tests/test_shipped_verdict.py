"""The verdicts moeprof ships (moeprof/data/example_capture, H200, 2026-12-02, and the earlier H100 capture
in moeprof/data/example_capture_h100, 2026-11-26) against values recomputed from the raw points.csv rows
with plain pandas: winners, speedups, the crossover interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from moeprof.analysis import metrics, sentences
from moeprof.analysis.load import example_capture_path, load_capture
from moeprof.analysis.pipeline import analyze

H100 = example_capture_path().parent / "example_capture_h100"


@pytest.fixture(scope="module", params=[example_capture_path(), H100], ids=["h200", "h100"])
def src(request):
    return request.param


@pytest.fixture(scope="module")
def shipped(src):
    return analyze(load_capture(src))


@pytest.fixture(scope="module")
def medians(src) -> pd.DataFrame:
    p = pd.read_csv(src / "points.csv")
    return p.groupby(["batch", "format"])["layer_time_ns"].median().unstack("format")


def test_verdict_winners_and_speedups(shipped, medians):
    assert [v.batch for v in shipped.verdicts] == list(medians.index)
    for v in shipped.verdicts:
        row = medians.loc[v.batch]
        winner = "fp8" if row["fp8"] < row["mxfp4"] else "mxfp4"
        loser = "mxfp4" if winner == "fp8" else "fp8"
        assert (v.winner, v.runner_up) == (winner, loser)
        assert v.speedup == pytest.approx(row[loser] / row[winner], rel=1e-12)
        assert v.fastest == row.idxmin()
        assert v.times_ns == pytest.approx(row.to_dict(), rel=1e-12)


def test_summary_winner_runs(shipped, medians):
    mx_wins = [b for b in medians.index if medians.loc[b, "mxfp4"] < medians.loc[b, "fp8"]]
    fp8_wins = [b for b in medians.index if b not in mx_wins]
    assert (mx_wins, fp8_wins) == ([1, 4, 16, 64, 256], [1024, 4096, 16384])  # what the raw rows say
    ans = shipped.summary["answer"]
    assert ans.startswith("mxfp4 at batch 1–256; fp8 at batch 1024–16384")
    for b in mx_wins:
        assert f"{b} ({medians.loc[b, 'fp8'] / medians.loc[b, 'mxfp4']:.2f}x)" in " ".join(shipped.summary["lines"])


def test_crossover_lies_in_the_bracketing_measured_interval(shipped, medians):
    """The data place the crossover only between the two measured batches where the winner changes."""
    sign = np.sign(np.log(medians["fp8"] / medians["mxfp4"]))
    flips = [(lo, hi) for lo, hi, a, b in zip(medians.index[:-1], medians.index[1:], sign[:-1], sign[1:]) if a != b]
    assert flips == [(256, 1024)]
    xs = shipped.summary["measured_crossover_batches"]
    assert len(xs) == 1 and 256 < xs[0] < 1024


def test_percent_of_roofline_basis_is_stated_and_as_built_is_not_below_it(shipped):
    lay = shipped.layer
    assert shipped.summary["roofline_basis"] == "ideal"
    assert any("% of roofline is measured against the ideal bound" in n for n in shipped.notes)
    assert (lay["pct_of_as_built"] >= lay["pct_of_roofline"] - 1e-9).all()
    assert (lay["layer_pct_of_as_built"] >= lay["layer_pct_of_roofline"] - 1e-9).all()
    # where the intermediate is large the separate passes matter: fp8 at 16384 moves much more as built
    big = lay.set_index(["format", "batch"]).loc[("fp8", 16384)]
    assert big["bytes_as_built"] > 1.3 * big["bytes"]


def test_fp8_mma_path_follows_the_counters(shipped, src):
    k = shipped.capture.kernels
    ncu = k[(k["collector"] == "ncu") & (k["format"] == "fp8")]
    by_batch = ncu.groupby("batch")[["tensor_ops_fp8", "tensor_ops_fp16"]].sum()
    expected = {b: ("fp8" if r["tensor_ops_fp8"] > 0 else "fp16") for b, r in by_batch.iterrows()}
    got = shipped.layer[shipped.layer["format"] == "fp8"].set_index("batch")["tensor_path"].to_dict()
    assert got == expected
    # The H100 capture's small-batch fp8 tiles upcast e4m3 to FP16 MMAs; the swapped tiles of the H200
    # capture keep FP8 MMAs at every batch.
    assert set(expected.values()) == ({"fp8", "fp16"} if src == H100 else {"fp8"})


# ------------------------------------------------------------------------------------------------
# MMA paths the shipped capture has no example of: the sentence builder on its own

@pytest.mark.parametrize("fp16, inst, path, words", [
    (0.0, 5000.0, metrics.PATH_UNCOUNTED, "tensor ops of an uncounted type"),
    (0.0, 0.0, metrics.PATH_NONE, "no tensor-core work at all"),
])
def test_uncounted_and_no_tensor_work(fp16, inst, path, words):
    zero = pd.Series([0.0])
    got = metrics.tensor_path(zero, zero, pd.Series([fp16]), pd.Series([inst])).iloc[0]
    assert got == path
    row = pd.Series({"tensor_path": got, "mma_path_model": "fp8", "tensor_inst_executed": inst,
                     "tensor_pipe_active_pct": 0.0, "tensor_ops_fp16": fp16})
    assert words in sentences.path_reason("fp8", row)


def test_as_built_dequantization_counts_only_where_it_ran():
    """Neither shipped capture ran a prefill dequantization kernel (the H100 one predates it, the H200 one
    runs mxfp4 prefill through the warpgroup-MMA kernel), so their as-built weight traffic is the packed
    weights and no reason claims a dequantization; fp8 never dequantizes."""
    for path in (H100, example_capture_path()):
        res = analyze(load_capture(path))
        lay = res.layer.set_index(["format", "batch"])
        for fmt, b in (("mxfp4", 4096), ("mxfp4", 16384), ("fp8", 4096)):
            row = lay.loc[(fmt, b)]
            assert row["weight_bytes_as_built"] == pytest.approx(row["gemm1_weight_bytes"] + row["gemm2_weight_bytes"])
        assert not any("dequantize the weights per call" in r for v in res.verdicts for r in v.reasons)


def test_a_dequantization_kernel_in_the_capture_is_counted():
    """The H200 capture's kernel table with a dequantization launch added at mxfp4, 4096 tokens (as the
    fallback path, without an sm_90a build, runs): the as-built weight traffic there becomes, derived by
    hand, packed gate_up per expert 5760*2880/2 + 5760*90 E8M0 + 5760*2 bias = 8,824,320 bytes, down
    2880*2880/2 + 2880*90 + 2880*2 = 4,412,160; bf16 copies (5760 + 2880)*2880*2 = 49,766,400; 128 experts x
    (13,236,480 read + 49,766,400 written) + 128 touched x 49,766,400 read = 14.43 GB, against 1.69 GB of
    packed weights without it. The other points keep the packed weights."""
    from moeprof.analysis import expected

    cap = load_capture(example_capture_path())
    k = cap.kernels
    points = sorted(set(zip(cap.points["format"], cap.points["batch"].dropna().astype("int64"))))
    costs = expected.expectations(cap.manifest, points).costs
    plain = expected.dequant_as_seen(costs, k).set_index(["format", "batch"])
    assert plain.loc[("mxfp4", 4096), "weight_bytes_as_built"] == pytest.approx(1.6943e9, rel=1e-3)
    extra = k[(k["format"] == "mxfp4") & (k["batch"] == 4096)].head(1).copy()
    extra["kernel_name"] = "dequant_mx_kernel"
    seen = expected.dequant_as_seen(costs, pd.concat([k, extra], ignore_index=True)).set_index(["format", "batch"])
    assert seen.loc[("mxfp4", 4096), "weight_bytes_as_built"] == pytest.approx(14.43e9, rel=1e-3)
    assert seen.loc[("mxfp4", 4096), "t_as_built_spec_s"] > plain.loc[("mxfp4", 4096), "t_as_built_spec_s"]
    for fmt, b in (("mxfp4", 16384), ("fp8", 4096), ("mxfp4", 64)):
        assert seen.loc[(fmt, b), "weight_bytes_as_built"] == pytest.approx(
            seen.loc[(fmt, b), "gemm1_weight_bytes"] + seen.loc[(fmt, b), "gemm2_weight_bytes"])
