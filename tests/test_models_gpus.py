"""GPU specs: datasheet numbers, derived per-SM rates, ridge points, lookup by name and CUDA name."""

from __future__ import annotations

import pytest

from moeprof.errors import MoeprofError
from moeprof.roofline.gpus import all_gpus, get_gpu, gpu_names, match_gpu


def test_h200_ridge_points():
    h200 = get_gpu("h200")
    # BF16: 989.4e12 FLOP/s / 4.8e12 B/s = 206.125 FLOP/B; FP8: 1978.9e12 / 4.8e12 = 412.27 FLOP/B
    assert h200.ridge_flop_per_byte("bf16") == pytest.approx(206.125)
    assert h200.ridge_flop_per_byte("fp8") == pytest.approx(412.2708, rel=1e-6)


def test_h100_and_h200_share_compute_not_memory():
    h100, h200 = get_gpu("h100-sxm"), get_gpu("h200-sxm")
    assert h100.bf16_flops_per_s == h200.bf16_flops_per_s == 989.4e12
    assert h100.fp8_flops_per_s == h200.fp8_flops_per_s == 1978.9e12
    assert (h100.hbm_bandwidth_bytes_per_s, h200.hbm_bandwidth_bytes_per_s) == (3.35e12, 4.8e12)
    assert h100.sm_count == h200.sm_count == 132
    assert h100.l2_bytes == 50 * 2**20 and h200.l2_bytes == 60 * 2**20  # as CUDA reports them


def test_per_sm_per_cycle_tensor_rates():
    h100 = get_gpu("h100")
    # 989.4e12 / (132 SMs * 1.83e9 Hz) = 4095.9 ~ 4 tensor cores x 512 FMA x 2 = 4096 FLOP/clk/SM
    assert h100.tensor_flops_per_cycle_per_sm("bf16") == pytest.approx(4096, rel=1e-3)
    assert h100.tensor_flops_per_cycle_per_sm("fp8") == pytest.approx(8192, rel=1e-3)
    # Rebuilt at the 1980 MHz max clock: 4096 * 132 * 1.98e9 = 1070.5 TFLOP/s
    assert h100.tensor_flops_per_s_at("bf16", 1.98e9) == pytest.approx(1070.5e12, rel=1e-3)
    b200 = get_gpu("b200")
    # 2.25e15 / (148 * 1.856e9) = 8191 ~ 8192 FLOP/clk/SM (2x Hopper per SM)
    assert b200.tensor_flops_per_cycle_per_sm("bf16") == pytest.approx(8192, rel=1e-3)


def test_fp4_only_where_native():
    assert get_gpu("b200").native_fp4_mma and get_gpu("b200").tensor_flops_per_s("fp4") == 9e15
    for name in ("h100-sxm", "h100-pcie", "h200-sxm", "h20"):
        gpu = get_gpu(name)
        assert not gpu.native_fp4_mma
        with pytest.raises(MoeprofError, match="no native FP4"):
            gpu.tensor_flops_per_s("fp4")


def test_all_specs_are_consistent():
    assert set(gpu_names()) >= {"h100-sxm", "h100-pcie", "h200-sxm", "h20", "b200"}
    for g in all_gpus():
        assert g.fp8_flops_per_s == pytest.approx(2 * g.bf16_flops_per_s, rel=1e-3)
        assert g.max_sm_clock_hz >= g.boost_clock_hz > 1e9
        assert g.hbm_bytes > 64e9 and g.sm_count > 0 and g.l2_bytes > 0


def test_h20_numbers():
    h20 = get_gpu("H20")
    assert (h20.bf16_flops_per_s, h20.fp8_flops_per_s, h20.sm_count) == (148e12, 296e12, 78)
    assert h20.hbm_bandwidth_bytes_per_s == 4.0e12


@pytest.mark.parametrize("name", ["h200", "H200", "h200-sxm", "H200_SXM", "NVIDIA H200", " h200sxm "])
def test_get_gpu_aliases(name):
    assert get_gpu(name).name == "h200-sxm"


def test_get_gpu_unknown_lists_valid_names():
    with pytest.raises(MoeprofError) as err:
        get_gpu("a100")
    msg = str(err.value)
    assert "a100" in msg and all(n in msg for n in gpu_names())


@pytest.mark.parametrize(
    "cuda_name, expected",
    [
        ("NVIDIA H200", "h200-sxm"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H20", "h20"),
        ("NVIDIA B200", "b200"),
        ("NVIDIA H100 NVL", None),
        ("NVIDIA H200 NVL", None),
        ("NVIDIA A100-SXM4-80GB", None),
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", None),
    ],
)
def test_match_gpu(cuda_name, expected):
    spec = match_gpu(cuda_name)
    assert (spec.name if spec else None) == expected
