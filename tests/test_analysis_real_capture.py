"""End to end on a slice of the shipped H100 capture (tests/data/example_slice: batches 1 and 64 of
moeprof/data/example_capture_h100, cut by its build.py; test_slice_matches_its_source checks it still is).

Expected values are recomputed here from the raw rows of kernels.csv and points.csv with plain
pandas, never copied from a report or built from the result under test.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moeprof.analysis.diff import diff
from moeprof.analysis.load import example_capture_path, load_capture
from moeprof.analysis.pipeline import analyze
from moeprof.cli import main
from moeprof.roofline import cost

SLICE = Path(__file__).parent / "data" / "example_slice"
SOURCE = example_capture_path().parent / "example_capture_h100"  # the H100 capture the slice and pins were cut from
TENSOR_OPS = ["tensor_ops_fp8", "tensor_ops_bf16_hgmma", "tensor_ops_bf16_hmma", "tensor_ops_fp16"]


@pytest.fixture(scope="module")
def result():
    return analyze(load_capture(SLICE))


def _row(a, fmt, batch):
    return a.layer.set_index(["format", "batch"]).loc[(fmt, batch)]


def _raw_kernels() -> pd.DataFrame:
    return pd.read_csv(SLICE / "kernels.csv.gz")


def _raw_gemm_ncu(fmt: str, batch: int) -> pd.DataFrame:
    k = _raw_kernels()
    return k[(k["collector"] == "ncu") & (k["format"] == fmt) & (k["batch"] == batch) & k["phase"].isin(["gemm1", "gemm2"])]


def _medians() -> pd.Series:
    p = pd.read_csv(SLICE / "points.csv")
    return p.groupby(["format", "batch"])["layer_time_ns"].median()


def _useful_flops(batch: int) -> float:
    w = json.loads((SLICE / "manifest.json").read_text())["workload"]
    h, k = w["hidden_size"], w["top_k"]
    i = w.get("expert_intermediate_size", w.get("intermediate_size"))  # version 2 / version 1 spelling
    return 2.0 * batch * k * (h * 2 * i + i * h)  # gemm1 (gate + up) and gemm2 over batch*k token rows


def _dram_peak() -> float:
    n = _raw_kernels().query("collector == 'ncu'")
    return float(n["dram_clock_hz"].median() * n["dram_bytes_per_cycle_peak"].median())


# ------------------------------------------------------------------------------------------------

def test_slice_matches_its_source():
    """Every row of the slice is a row of the shipped capture, and no row of those batches is missing."""
    for name, opener in (("kernels.csv.gz", gzip.open), ("points.csv", open)):
        src = SOURCE / name
        with opener(src, "rt") as fh:
            lines = fh.read().splitlines()
        with opener(SLICE / name, "rt") as fh:
            mine = fh.read().splitlines()
        assert mine[0] == lines[0]
        header = lines[0].split(",")
        col = header.index("batch")
        wanted = [ln for ln in lines[1:] if ln.split(",")[col] in ("1", "64")]
        assert mine[1:] == wanted and len(wanted) > 0
    m_src = json.loads((SOURCE / "manifest.json").read_text())
    m = json.loads((SLICE / "manifest.json").read_text())
    assert (m["started_utc"], m["gpu"], m["collectors"]["ncu"]["options"]) == \
        (m_src["started_utc"], m_src["gpu"], m_src["collectors"]["ncu"]["options"])


def test_winners_and_speedups_from_points_medians(result):
    med = _medians()
    for v in result.verdicts:
        fp8, mx = med[("fp8", v.batch)], med[("mxfp4", v.batch)]
        assert v.winner == ("mxfp4" if mx < fp8 else "fp8")
        assert v.speedup == pytest.approx(max(fp8, mx) / min(fp8, mx), rel=1e-12)
        allf = med.xs(v.batch, level="batch").sort_values()
        assert (v.fastest, v.next_fastest) == (allf.index[0], allf.index[1])
    assert [v.batch for v in result.verdicts] == [1, 64]


def test_padding_share_at_bf16_batch1_from_raw_columns(result):
    raw = _raw_gemm_ncu("bf16", 1)
    executed = raw[TENSOR_OPS].sum().sum()
    useful = _useful_flops(1)
    r = _row(result, "bf16", 1)
    assert r["useful_flops"] == pytest.approx(useful)
    assert r["tensor_ops"] == pytest.approx(executed)
    assert r["padding_pct"] == pytest.approx((executed - useful) / executed * 100)
    mx = _raw_gemm_ncu("mxfp4", 1)[TENSOR_OPS].sum().sum()
    text = " ".join(next(v for v in result.verdicts if v.batch == 1).reasons)
    assert (f"mxfp4: executed tensor ops are {mx / useful:.1f}x the useful FLOPs "
            f"({(mx - useful) / mx * 100:.0f}% padding") in text


def test_mxfp4_batch1_is_latency_issue_bound_from_raw_counters(result):
    raw = _raw_gemm_ncu("mxfp4", 1)
    dram_pct = (raw["dram_read_bytes"] + raw["dram_write_bytes"]).sum() / raw["gpu_time_ns"].sum() * 1e9 / _dram_peak() * 100
    pipe_pct = (raw["tensor_pipe_active_pct"] * raw["gpu_time_ns"]).sum() / raw["gpu_time_ns"].sum()
    assert dram_pct < 50 and pipe_pct < 50  # far below the 60% mark and its borderline band
    r = _row(result, "mxfp4", 1)
    assert r["dram_bw_pct_of_peak"] == pytest.approx(dram_pct)
    assert r["tensor_busy_pct"] == pytest.approx(pipe_pct)
    assert r["bound_measured"] == "latency/issue"
    text = " ".join(next(v for v in result.verdicts if v.batch == 1).reasons)
    assert f"mxfp4: expert GEMMs are latency/issue-bound as measured: neither DRAM ({dram_pct:.0f}% of peak)" in text


def test_batch64_both_memory_bound_from_raw_counters(result):
    for fmt in ("fp8", "mxfp4"):
        raw = _raw_gemm_ncu(fmt, 64)
        dram_pct = (raw["dram_read_bytes"] + raw["dram_write_bytes"]).sum() / raw["gpu_time_ns"].sum() * 1e9 / _dram_peak() * 100
        assert dram_pct > 62  # above the borderline band
        assert _row(result, fmt, 64)["bound_measured"] == "memory"


def test_fp8_ran_fp16_source_mmas_in_the_capture(result):
    """The shipped fp8 kernels at batch 1 and 64 ran FP16-source MMAs: ncu counted them, not FP8 ops."""
    for batch in (1, 64):
        raw = _raw_gemm_ncu("fp8", batch)
        assert (raw["tensor_ops_fp16"] > 0).all() and (raw["tensor_ops_fp8"] == 0).all()
        r = _row(result, "fp8", batch)
        assert r["tensor_path"] == "fp16"
        assert r["tensor_ops"] == pytest.approx(raw["tensor_ops_fp16"].sum())
        executed, useful = raw["tensor_ops_fp16"].sum(), _useful_flops(batch)
        assert r["padding_pct"] == pytest.approx((executed - useful) / executed * 100)
        text = " ".join(next(v for v in result.verdicts if v.batch == batch).reasons)
        assert "fp8: expert GEMMs ran on the FP16 MMA path (100% of tensor ops" in text
        assert "not the FP8 path the format allows" in text
        # FP16-source MMAs run at the BF16 rate: the roofline uses that peak, not FP8's
        assert r["peak_tensor_flop_per_s"] == pytest.approx(result.peaks.tensor("bf16"))


def test_answer_says_fp8_does_not_fit_one_h100(result):
    ans = result.summary["answer"]
    fp8 = cost.memory_plan("gpt-oss-120b", "fp8", "h100-sxm")
    mx = cost.memory_plan("gpt-oss-120b", "mxfp4", "h100-sxm")
    assert not fp8.fits and mx.fits
    assert (f"fp8 weights ({fp8.weight_bytes_per_gpu / 1e9:.2f} GB) do not fit one NVIDIA H100 80GB HBM3 "
            f"(needs tp≥2), while mxfp4 fits with {mx.free_bytes_per_gpu / 1e9:.2f} GB left") in ans
    assert ans.startswith("mxfp4 is faster at every measured batch (1, 64)")


def test_pair_is_compared_at_every_batch(result):
    med = _medians()
    for v in result.verdicts:
        assert v.pair == ["mxfp4", "fp8"] and v.runner_up == "fp8"
        margin = med[("fp8", v.batch)] / med[("mxfp4", v.batch)]
        assert v.reasons[1].startswith(f"mxfp4 is also the fastest of the 3 formats measured here ({margin:.2f}x over fp8")


def test_self_diff_has_no_faster_or_slower_rows(capsys):
    d = diff(load_capture(SLICE), load_capture(SLICE))
    assert len(d.rows) == len(d.rows[["format", "batch", "role"]].drop_duplicates()) > 0
    assert set(d.rows["status"]) == {"unchanged"}
    assert main(["diff", str(SLICE), str(SLICE), "-f", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"]["unchanged"] == len(d.rows) and "decision_rule" in doc


def test_cli_outputs_on_real_slice(tmp_path, capsys):
    med = _medians()
    assert main(["analyze", str(SLICE), "-f", "markdown"]) == 0
    md = capsys.readouterr().out
    assert f"### Batch 64: mxfp4 {med[('fp8', 64)] / med[('mxfp4', 64)]:.2f}x faster than fp8" in md
    assert main(["analyze", str(SLICE), "-f", "csv"]) == 0
    csv = pd.read_csv(io.StringIO(capsys.readouterr().out))
    lay = csv[csv["role"] == "layer"].set_index(["format", "batch"])["layer_time_median_ns"]
    np.testing.assert_allclose(lay.sort_index().to_numpy(), med.sort_index().to_numpy(), rtol=1e-12)
    assert main(["analyze", str(SLICE), "-f", "json", "--plot", str(tmp_path / "p")]) == 0
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert "NaN" not in out.out and doc["verdicts"][0]["pair"] == ["mxfp4", "fp8"]
    for stem in ("roofline", "breakdown", "speedup"):
        assert "NVIDIA H100 80GB HBM3" in (tmp_path / "p" / f"{stem}.svg").read_text()
