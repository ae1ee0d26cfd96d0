"""PyTorch profiler trace reader on a real trace (torch.cuda.nvtx ranges are not in it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from moeprof.errors import MoeprofError
from moeprof.profiler.collectors import torch_trace
from moeprof.profiler.collectors.table import kernel_columns

FIX = Path(__file__).parent / "fixtures"


def test_kernels_from_trace():
    k = torch_trace.read_trace(FIX / "torch_trace_nvtx_only.json")
    assert list(k.columns) == kernel_columns()
    assert len(k) == 36 and set(k["collector"]) == {"torch"}
    assert (k["nvtx_path"] == "").all()  # nvtx push/pop is invisible to the PyTorch profiler
    assert (k["duration_ns"] > 0).all() and k["grid_x"].notna().all() and k["stream_id"].notna().all()
    assert k["kernel_name"].str.contains("nvjet_sm90").sum() == 4


def test_not_a_trace(tmp_path):
    p = tmp_path / "t.json"
    p.write_text("[1, 2]")
    with pytest.raises(MoeprofError, match="not a chrome trace"):
        torch_trace.read_trace(p)


def test_record_function_ranges_give_paths():
    # one toy layer call (bf16, batch 64) captured by the runner's torch collector on an H100
    k = torch_trace.read_trace(FIX / "torch_trace_record_function.json")
    assert len(k) == 50
    assert set(k["format"]) == {"bf16"} and set(k["batch"]) == {64} and set(k["repeat"]) == {0}
    counts = k["phase"].value_counts().to_dict()
    assert counts == {"combine": 16, "act": 8, "gemm1": 8, "sort": 7, "route": 5, "gemm2": 4, "": 2}
    assert (k.loc[k["phase"] == "", "nvtx_path"] == "moe/bf16/64").all()
