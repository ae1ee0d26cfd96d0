"""End to end on a slice of the real H100 capture (tests/data/example_slice: batches 1 and 64 of
moeprof/data/example_capture; build.py documents how it was cut).

Expected values are recomputed here from the raw kernels.csv columns, not copied from a report.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from moeprof.analysis.diff import diff
from moeprof.analysis.load import load_capture
from moeprof.analysis.pipeline import analyze
from moeprof.cli import main

SLICE = Path(__file__).parent / "data" / "example_slice"


@pytest.fixture(scope="module")
def result():
    return analyze(load_capture(SLICE))


def _row(a, fmt, batch):
    lay = a.layer.set_index(["format", "batch"])
    return lay.loc[(fmt, batch)]


def _raw_gemm_ncu(fmt: str, batch: int) -> pd.DataFrame:
    k = pd.read_csv(SLICE / "kernels.csv.gz")
    return k[(k["collector"] == "ncu") & (k["format"] == fmt) & (k["batch"] == batch)
             & k["phase"].isin(["gemm1", "gemm2"])]


def test_padding_share_at_bf16_batch1_from_raw_columns(result):
    raw = _raw_gemm_ncu("bf16", 1)
    executed = raw[["tensor_ops_fp8", "tensor_ops_bf16_hgmma", "tensor_ops_bf16_hmma"]].sum().sum()
    shape = result.capture.manifest.workload.shape
    h, i, k = shape.hidden_size, shape.expert_intermediate_size, shape.top_k
    useful = 2 * 1 * k * (h * 2 * i + i * h)  # batch 1: top_k expert rows through gemm1 (gate+up) and gemm2
    r = _row(result, "bf16", 1)
    assert r["useful_flops"] == pytest.approx(useful)
    assert r["tensor_ops"] == pytest.approx(executed)
    assert r["padding_pct"] == pytest.approx((executed - useful) / executed * 100)
    assert 0 <= r["padding_pct"] < 100
    text = " ".join(next(v for v in result.verdicts if v.batch == 1).reasons)
    # bf16 is not in the fp8-vs-mxfp4 pair: its padding shows in the table; the pair's mxfp4 line is checked
    mx = _row(result, "mxfp4", 1)
    assert (f"mxfp4: executed tensor ops are {mx['tensor_ops'] / mx['useful_flops']:.1f}x the useful FLOPs "
            f"({mx['padding_pct']:.0f}% padding") in text
    assert "of executed tensor ops are padding" not in text


def test_mxfp4_batch64_is_latency_issue_bound(result):
    r = _row(result, "mxfp4", 64)
    assert r["dram_bw_pct_of_peak"] < 60 and r["tensor_busy_pct"] < 60
    assert r["bound_measured"] == "latency/issue"
    assert _row(result, "fp8", 64)["bound_measured"] == "memory"
    v = next(v for v in result.verdicts if v.batch == 64)
    assert (v.winner, v.runner_up) == ("fp8", "mxfp4")
    assert v.headline.startswith("Why: mxfp4 moves 0.")
    assert f"reach only {r['dram_bw_pct_of_peak']:.0f}% of DRAM peak" in v.headline
    assert "latency/issue-bound, not memory-bound" in v.headline
    assert "mxfp4: expert GEMMs are memory-bound" not in " ".join(v.reasons)


def test_mma_path_na_without_fp16_counters(result):
    r = _row(result, "fp8", 1)
    assert r["tensor_path"] == "n/a"
    text = " ".join(next(v for v in result.verdicts if v.batch == 1).reasons)
    assert ("fp8: MMA path n/a (no FP8/BF16 tensor ops counted; FP16-source ops were not collected in this capture)"
            in text)
    assert "NONE" not in text and "executed no tensor-core" not in text
    assert "fp8: padding waste n/a (no tensor ops counted)" in text
    assert "-100" not in text and "no padding waste (executed tensor ops 0" not in text
    # the roofline peak is the format's expected path, not a "none" path
    assert r["peak_tensor_flop_per_s"] == pytest.approx(result.peaks.tensor("fp8"))


def _with_counters(tmp_path: Path, fp16: float, inst: float) -> Path:
    """The slice with the newer capture's two counter columns filled on the fp8 GEMM rows."""
    dst = tmp_path / "cap"
    shutil.copytree(SLICE, dst, ignore=shutil.ignore_patterns("build.py"))
    k = pd.read_csv(dst / "kernels.csv.gz")
    gemm = (k["collector"] == "ncu") & k["phase"].isin(["gemm1", "gemm2"])
    k["tensor_ops_fp16"] = float("nan")
    k["tensor_inst_executed"] = float("nan")
    k.loc[gemm, ["tensor_ops_fp16", "tensor_inst_executed"]] = 0.0
    k.loc[gemm, "tensor_inst_executed"] = 1000.0  # every GEMM issued tensor instructions
    fp8 = gemm & (k["format"] == "fp8") & (k["batch"] == 1)
    # fp8 at batch 1 ran FP16-source MMAs: as many ops as bf16 counts for the same GEMM
    bf16_ops = k[gemm & (k["format"] == "bf16") & (k["batch"] == 1)].set_index("phase")["tensor_ops_bf16_hmma"]
    k.loc[fp8, "tensor_ops_fp16"] = k.loc[fp8, "phase"].map(bf16_ops).to_numpy() * fp16
    k.loc[fp8, "tensor_inst_executed"] = inst
    k.to_csv(dst / "kernels.csv.gz", index=False)
    return dst


def test_mma_path_with_fp16_and_instruction_counters(tmp_path):
    a = analyze(load_capture(_with_counters(tmp_path, fp16=1.0, inst=5000.0)))
    r = _row(a, "fp8", 1)
    assert r["tensor_path"] == "fp16"
    assert r["padding_pct"] == pytest.approx(_row(a, "bf16", 1)["padding_pct"])
    text = " ".join(next(v for v in a.verdicts if v.batch == 1).reasons)
    assert "fp8: expert GEMMs ran on the FP16 MMA path (100% of tensor ops" in text
    assert "not the FP8 path the format allows" in text


def test_mma_path_uncounted_and_none(tmp_path):
    a = analyze(load_capture(_with_counters(tmp_path / "u", fp16=0.0, inst=5000.0)))
    assert _row(a, "fp8", 1)["tensor_path"] == "uncounted"
    assert "tensor ops of an uncounted type" in " ".join(next(v for v in a.verdicts if v.batch == 1).reasons)
    a = analyze(load_capture(_with_counters(tmp_path / "n", fp16=0.0, inst=0.0)))
    assert _row(a, "fp8", 1)["tensor_path"] == "none"
    assert "no tensor-core work at all" in " ".join(next(v for v in a.verdicts if v.batch == 1).reasons)


def test_answer_says_fp8_does_not_fit_one_h100(result):
    ans = result.summary["answer"]
    m = result.memory.set_index("format")
    assert not m.loc["fp8", "fits"] and m.loc["mxfp4", "fits"]
    assert (f"fp8 weights ({m.loc['fp8', 'weight_bytes_per_gpu'] / 1e9:.2f} GB) do not fit one NVIDIA H100 80GB HBM3 "
            f"(needs tp≥2), while mxfp4 fits with {m.loc['mxfp4', 'kv_free_bytes_per_gpu'] / 1e9:.2f} GB left") in ans
    assert "more HBM per GPU" not in ans


def test_pair_is_compared_at_every_batch(result):
    # at batch 1 fp8 is the fastest overall and bf16 the next; the verdict still compares fp8 with mxfp4
    v = next(v for v in result.verdicts if v.batch == 1)
    assert v.pair == ["fp8", "mxfp4"] and v.runner_up == "mxfp4"
    assert v.fastest == "fp8" and v.next_fastest == "bf16"
    assert v.reasons[1].startswith("fp8 is also the fastest of the 3 formats measured here")


def test_self_diff_has_no_faster_or_slower_rows(capsys):
    d = diff(load_capture(SLICE), load_capture(SLICE))
    assert len(d.rows) > 0
    assert d.counts()["faster"] == 0 and d.counts()["slower"] == 0
    assert set(d.rows["status"]) == {"unchanged"}
    assert main(["diff", str(SLICE), str(SLICE), "-f", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"]["faster"] == doc["counts"]["slower"] == 0


def test_cli_outputs_on_real_slice(tmp_path, capsys):
    assert main(["analyze", str(SLICE), "-f", "markdown"]) == 0
    md = capsys.readouterr().out
    assert "### Batch 64: fp8 " in md and "x faster than mxfp4" in md and "latency/issue" in md
    assert main(["analyze", str(SLICE), "-f", "json", "--plot", str(tmp_path / "p")]) == 0
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert "NaN" not in out.out and doc["verdicts"][0]["pair"] == ["fp8", "mxfp4"]
    for stem in ("roofline", "breakdown", "speedup"):
        assert "NVIDIA H100 80GB HBM3" in (tmp_path / "p" / f"{stem}.svg").read_text()
