"""The verdicts moeprof ships (moeprof/data/example_capture, H200, 2026-11-30, and the earlier H100 capture
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


def test_mxfp4_prefill_reason_names_its_dequantization(src):
    """The H200 capture's mxfp4 at 4096 tokens (128 rows per expert on gpt-oss-120b, above the 64 where the
    shipped kernels dequantize to bf16). Derived by hand: packed gate_up per expert 5760*2880/2 + 5760*90
    E8M0 + 5760*2 bias = 8,824,320 bytes, down 2880*2880/2 + 2880*90 + 2880*2 = 4,412,160; bf16 copies
    (5760 + 2880)*2880*2 = 49,766,400. Weight traffic as built = 128 experts x (13,236,480 read +
    49,766,400 written) + 128 touched x 49,766,400 read = 14.43 GB, for 1.69 GB of packed weights. fp8
    never dequantizes, and mxfp4 at 64 tokens (2 rows per expert) does not."""
    if src != example_capture_path():
        pytest.skip("the H100 capture predates the dequantizing prefill")
    res = analyze(load_capture(src))
    by = {(v.batch): v for v in res.verdicts}
    text = " ".join(by[4096].reasons)
    assert "mxfp4: expert GEMMs reach" in text
    assert "dequantize the weights per call: 14.43 GB of weight traffic for 1.69 GB of packed weights" in text
    assert "fp8: expert GEMMs reach" in text and text.count("dequantize the weights per call") == 1
    assert "dequantize the weights per call" not in " ".join(by[64].reasons)


def test_as_built_dequantization_counts_only_where_it_ran():
    """The H100 capture (2026-11-26) ran mxfp4 prefill through the direct Triton loop: no dequantization
    kernel in it, so its as-built weight traffic stays the packed weights and no reason claims one; the
    H200 capture's mxfp4 at 4096 ran dequant_mx_kernel and counts it (14.43 GB, derived above)."""
    h100 = analyze(load_capture(H100))
    lay = h100.layer.set_index(["format", "batch"])
    for b in (4096, 16384):
        row = lay.loc[("mxfp4", b)]
        assert row["weight_bytes_as_built"] == pytest.approx(row["gemm1_weight_bytes"] + row["gemm2_weight_bytes"])
    assert not any("dequantize the weights per call" in r for v in h100.verdicts for r in v.reasons)
    h200 = analyze(load_capture(example_capture_path())).layer.set_index(["format", "batch"])
    assert h200.loc[("mxfp4", 4096), "weight_bytes_as_built"] == pytest.approx(14.43e9, rel=1e-3)
    assert h200.loc[("fp8", 4096), "weight_bytes_as_built"] == pytest.approx(
        h200.loc[("fp8", 4096), "gemm1_weight_bytes"] + h200.loc[("fp8", 4096), "gemm2_weight_bytes"])
