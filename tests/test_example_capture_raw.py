"""The shipped example captures (H200, and the earlier H100 one) re-parse to themselves: its raw ncu CSV exports, read again with the ncu
collector's reader, give exactly the counter rows of its normalized kernel table."""

from __future__ import annotations

from pathlib import Path

import functools

import numpy as np
import pytest

from moeprof.analysis.load import example_capture_path, load_capture
from moeprof.profiler.collectors import ncu

EXAMPLE = example_capture_path()
H100 = EXAMPLE.parent / "example_capture_h100"
COUNTERS = ["gpu_time_ns", "dram_read_bytes", "dram_write_bytes", "tensor_ops_bf16_hgmma", "tensor_pipe_active_cycles"]


@pytest.fixture(scope="module")
def capture():
    return load_capture(EXAMPLE)


@functools.lru_cache(maxsize=None)
def _load(folder: Path):
    return load_capture(folder)


@pytest.mark.parametrize("name", ["bf16_b1", "fp8_b64", "mxfp4_b1024"])
def test_raw_ncu_csv_matches_kernel_table(capture, name: str):
    raw, present = ncu.read_csv(EXAMPLE / "raw" / "ncu" / f"{name}.csv")
    fmt, batch = name.split("_b")
    assert ncu.missing_after([ncu.COUNTER_METRICS[c] for c in COUNTERS], present) == []
    table = capture.kernels[(capture.kernels["collector"] == "ncu") & (capture.kernels["format"] == fmt)
                            & (capture.kernels["batch"] == int(batch))]
    assert len(raw) == len(table) > 0
    # Only the expert GEMMs were replayed under ncu (NVTX filter moe/*/*/gemm1/ and gemm2/).
    assert set(raw["phase"]) == {"gemm1", "gemm2"}
    for col in COUNTERS:
        np.testing.assert_allclose(raw[col].to_numpy(float), table[col].to_numpy(float), rtol=1e-9)


def test_manifest_describes_the_run(capture):
    m = capture.manifest
    assert m.gpu.name.startswith("NVIDIA H")
    assert m.collector("ncu").option_dict["clock_control"] == "none"
    assert m.status == "complete"
    # Files dropped for size are listed, and no listed raw file is silently missing.
    dropped = set(m.extra.get("shipped", {}).get("dropped", []))
    for info in m.collectors.values():
        for f in info.files or ():
            assert f in dropped or (EXAMPLE / f).exists(), f


def test_points_cover_the_sweep(capture):
    w = capture.manifest.workload
    got = capture.points.groupby(["format", "batch"]).size()
    assert len(got) == len(w.formats) * len(w.batches)
    assert (got == w.repeats).all()
    assert (capture.points["layer_time_ns"] > 0).all()
    assert Path(EXAMPLE / "manifest.json").is_file()


# The tensor-op columns behind the MMA-path claims (H100 capture: fp8 on FP16-source MMAs up to batch 1024,
# on FP8 MMAs above; H200 capture, swapped small-batch tiles: FP8 MMAs at every batch), checked against the raw ncu exports read with plain pandas, not the collector's reader.
TENSOR_COLUMNS = {"tensor_ops_fp16": "sm__ops_path_tensor_src_fp16.sum",
                  "tensor_ops_fp8": "sm__ops_path_tensor_src_fp8_sparsity_off.sum",
                  "tensor_ops_bf16_hmma": "sm__ops_path_tensor_op_hmma_src_bf16_dst_fp32_sparsity_off.sum",
                  "tensor_ops_bf16_hgmma": "sm__ops_path_tensor_op_hgmma_src_bf16_dst_fp32_sparsity_off.sum",
                  "tensor_inst_executed": "sm__inst_executed_pipe_tensor.sum"}


@pytest.mark.parametrize("raw_file", sorted((EXAMPLE / "raw" / "ncu").glob("*.csv")) + sorted((H100 / "raw" / "ncu").glob("*.csv")),
                         ids=lambda p: f"{p.parents[2].name}-{p.stem}")
def test_tensor_op_columns_match_raw_ncu_export(raw_file: Path):
    import pandas as pd

    capture = _load(raw_file.parents[2])

    raw = pd.read_csv(raw_file, skiprows=[1], thousands=",", low_memory=False)  # row 2 holds the units
    fmt, batch = raw_file.stem.split("_b")
    table = capture.kernels[(capture.kernels["collector"] == "ncu") & (capture.kernels["format"] == fmt)
                            & (capture.kernels["batch"] == int(batch))]
    assert len(raw) == len(table) > 0
    for col, metric in TENSOR_COLUMNS.items():
        np.testing.assert_allclose(np.sort(raw[metric].astype(float).to_numpy()),
                                   np.sort(table[col].to_numpy(float)), rtol=1e-9, err_msg=col)
    if fmt == "fp8":  # the claim itself: one MMA type per batch (H100: FP16-source below 4096, FP8 from it)
        on_fp8 = raw[TENSOR_COLUMNS["tensor_ops_fp8"]].sum() > 0
        on_fp16 = raw[TENSOR_COLUMNS["tensor_ops_fp16"]].sum() > 0
        assert on_fp8 != on_fp16
        assert on_fp8 == (int(batch) >= 4096 if raw_file.parents[2] == H100 else True)
