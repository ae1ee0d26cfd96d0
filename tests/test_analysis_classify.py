"""Kernel roles from NVTX phases (real capture) and from names (real kernel names of MoE engines)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from moeprof.analysis.classify import classify, role_from_name
from moeprof.analysis.load import load_capture

FIXTURE = Path(__file__).parent / "data" / "analysis_probe2"


@pytest.mark.parametrize("name, role", [
    ("fused_moe_kernel", "gemm"),                                    # SGLang / vLLM
    ("_matmul_ogs_NNT_bf16xbf16xmxfp4_128x256x128x1_swiglu", "gemm"),  # triton_kernels, fused SwiGLU epilogue
    ("_p_matmul_ogs_NNT_bf16xbf16xmxfp4_128x256x128x1", "gemm"),
    ("_topk_forward", "route"),
    ("topk_softmax", "route"),
    ("sbtopk::gatherTopK<float, unsigned int, 2, 0>", "route"),
    ("moe_align_block_size_kernel", "sort"),
    ("count_and_sort_expert_tokens_kernel", "sort"),
    ("at::bitonicSortKVInPlace<2, (int)-1, 16, 16, float, long, at::GTOp<float, 1>, unsigned int>", "sort"),
    ("_per_token_group_quant_fp8", "quant"),
    ("dynamic_per_token_scaled_fp8_quant_kernel", "quant"),
    ("scaled_fp8_quant", "quant"),
    ("silu_and_mul_kernel", "act"),
    ("act_and_mul_kernel", "act"),
    ("moe_sum_kernel", "combine"),
    ("_finalize_matmul", "combine"),
    ("marlin_moe_wna16::Marlin<>", "gemm"),
    ("deep_gemm::fp8_gemm_kernel", "gemm"),
    ("cutlass::device_kernel<GroupedGemm>", "gemm"),
    ("nvjet_sm90_qqtst_128x128_128x6_1x1_h_bz_coopA_algo2_ovscale_TNT", "gemm"),
    ("at::native::vectorized_elementwise_kernel<(int)4, at::native::FillFunctor<float>, std::array<char *, (unsigned long)1>>", "other"),
])
def test_role_from_name(name, role):
    assert role_from_name(name) == role


def test_nvtx_phases_win_on_real_capture():
    k = classify(load_capture(FIXTURE).kernels)
    inside = k[k["batch"].notna()]
    assert (inside["role_source"] == "nvtx").all()
    assert (inside["role"].astype(str) == inside["phase"]).all()
    # outside the NVTX ranges names decide: the fp8 cast of the setup is quantization
    outside = k[k["batch"].isna()]
    assert (outside["role_source"] == "name").all()
    assert "quant" in set(outside["role"].astype(str))
    # two layer calls per (collector, format): distinct call ids
    assert inside.groupby(["collector", "format"])["call_id"].nunique().eq(2).all()


def _launches(names: list[str]) -> pd.DataFrame:
    n = len(names)
    return pd.DataFrame({"collector": ["nsys"] * n, "format": [""] * n, "batch": pd.array([pd.NA] * n, dtype="Int64"),
                         "repeat": pd.array([pd.NA] * n, dtype="Int64"), "phase": [""] * n, "kernel_name": names,
                         "start_ns": range(0, 1000 * n, 1000), "duration_ns": [1000.0] * n})


def test_gemm_order_without_nvtx():
    # An SGLang-style layer, twice, no NVTX: router GEMM, topk, align, gemm, act, gemm, sum.
    call = ["nvjet_sm90_tst_96x128_64x7_4x2_h_bz_TNN", "topk_softmax", "moe_align_block_size_kernel",
            "fused_moe_kernel", "silu_and_mul_kernel", "fused_moe_kernel", "moe_sum_kernel"]
    k = classify(_launches(call + call))
    roles = list(k["role"].astype(str))
    assert roles == ["route", "route", "sort", "gemm1", "act", "gemm2", "combine"] * 2
    assert k["call_id"].nunique() == 2
    assert (k["role_source"] == "name").all()


def test_split_k_reduce_follows_its_gemm():
    call = ["topk_softmax", "moe_align_block_size_kernel", "nvjet_sm90_tst_96x128_64x7_4x2_h_bz_TNN",
            "cublasLt::splitKreduce_kernel<32, 16, int, float>", "silu_and_mul_kernel",
            "nvjet_sm90_tst_96x128_64x7_4x2_h_bz_TNN"]
    roles = list(classify(_launches(call))["role"].astype(str))
    assert roles == ["route", "sort", "gemm1", "gemm1", "act", "gemm2"]
