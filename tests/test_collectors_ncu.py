"""ncu collector: metric list checks, raw-page CSV reader (real slice), command line, failure reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from moeprof.errors import MoeprofError
from moeprof.profiler.collectors import ncu
from moeprof.profiler.collectors.table import kernel_columns
from moeprof.capture_folder import COUNTER_METRICS

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def parsed():
    return ncu.read_csv(FIX / "ncu_raw_base_slice.csv")


def test_query_metrics_base_names():
    names = ncu.parse_query_metrics((FIX / "ncu_query_metrics_gh100_slice.txt").read_text())
    assert "sm__ops_path_tensor_src_fp8_sparsity_off" in names
    assert "ctc__rx_bytes" in names  # 'CTC.TriageCompute.' prefix stripped
    assert not any(n.startswith("==") or n == "Metric" for n in names)


def test_unknown_metrics_detected_before_run():
    names = ncu.parse_query_metrics((FIX / "ncu_query_metrics_gh100_slice.txt").read_text())
    wanted = ncu.metrics() + ["bogus__metric_name.sum"]
    assert ncu.unknown_metrics(wanted, names) == ["bogus__metric_name.sum"]
    assert ncu.base_name("sm__ops_path_tensor_src_fp8_sparsity_off.sum.peak_sustained") == "sm__ops_path_tensor_src_fp8_sparsity_off"


def test_metric_list_has_peaks_and_cycles():
    m = ncu.metrics()
    for need in ("sm__ops_path_tensor_src_fp8_sparsity_off.sum.peak_sustained",
                 "sm__ops_path_tensor_op_hgmma_src_bf16_dst_fp32_sparsity_off.sum.peak_sustained",
                 "sm__cycles_elapsed.max", "launch__grid_dim_x"):
        assert need in m


def test_csv_reader(parsed):
    k, present = parsed
    assert list(k.columns) == kernel_columns()
    assert len(k) == 20  # units row skipped
    # The probe predates the two FP16/tensor-instruction counters; everything else it asked for came back.
    newer = ["sm__ops_path_tensor_src_fp16.sum", "sm__inst_executed_pipe_tensor.sum"]
    assert ncu.missing_after(list(COUNTER_METRICS.values()), present) == newer
    assert (k["nvtx_path"].iloc[:6] == "").all()
    assert k["nvtx_path"].iloc[6] == "moe/bf16/256/route"
    g1 = k[(k["phase"] == "gemm1") & (k["format"] == "bf16")].iloc[0]
    # real values from the slice (thousands separators removed, base units)
    assert g1["duration_ns"] == 15936 and g1["dram_read_bytes"] == 34674176
    assert g1["tensor_ops_bf16_hgmma"] == pytest.approx(8.493466e9, rel=1e-6)
    assert g1["tensor_ops_bf16_hgmma_peak_per_cycle"] == 540672 and g1["sm_count"] == 132
    assert (g1["grid_x"], g1["block_x"], g1["registers_per_thread"]) == (8, 384, 168)
    assert g1["kernel_name"].startswith("nvjet_sm90_tst")
    assert k["start_ns"].isna().all()  # ncu has no timeline


def test_repeats_from_phase_order(parsed):
    k, _ = parsed
    bf = k[k["format"] == "bf16"]
    assert set(bf["repeat"]) == {0}
    assert (bf["phase"].tolist()[:9] == ["route"] * 7 + ["gemm1", "act"])


def test_missing_after_catches_dropped_metric(parsed):
    _, present = parsed
    assert ncu.missing_after(["bogus__metric_name.sum", "dram__bytes_read.sum"], present) == ["bogus__metric_name.sum"]


def test_nvtx_cell():
    cell = ('569  "<default domain>:moe:none:none:none:none:none:none"  '
            '"<default domain>:bf16:none:none:none:none:none:none"  "<default domain>:a:b:none:none:none:none:none:none" ')
    assert ncu.nvtx_path_from_cell(cell) == "moe/bf16/a:b"
    assert ncu.nvtx_path_from_cell("") == ""


def test_not_a_csv(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("==ERROR== something\n")
    with pytest.raises(MoeprofError, match="not an ncu raw-page CSV"):
        ncu.read_csv(p)


def test_profile_command():
    cmd = ncu.profile_command("ncu", Path("/o/fp8_b8"), ["python", "x.py"], ["a.sum", "b.max"],
                              nvtx_include=["moe/"], launch_count=50)
    s = " ".join(cmd)
    assert "--clock-control none" in s and "--cache-control all" in s and "--metrics a.sum,b.max" in s
    assert "--nvtx --nvtx-include moe/" in s and "--launch-count 50" in s and cmd[-2:] == ["python", "x.py"]
    bare = ncu.profile_command("ncu", Path("/o/x"), ["p"], ["a.sum"])
    assert "--nvtx" in bare and "--nvtx-include" not in bare  # NVTX state recorded even unfiltered


def test_failure_reasons():
    assert "ERR_NVGPUCTRPERM" in ncu.failure_reason("==ERROR== ERR_NVGPUCTRPERM - The user does not have permission", 1)
    assert ncu.failure_reason("==ERROR== Could not open report file 'x'.\n", 1).startswith("==ERROR== Could not open")
    assert "no kernels were profiled" in ncu.failure_reason("==WARNING== No kernels were profiled.\n", 0)
