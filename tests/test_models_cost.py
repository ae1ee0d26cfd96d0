"""Layer cost: experts touched, FLOPs, bytes, roofline times, parallelism, memory plan."""

from __future__ import annotations

import math

import pytest

from moeprof.errors import MoeprofError
from moeprof.roofline.cost import (
    expected_experts_touched,
    layer_cost,
    memory_plan,
    min_tp_to_fit,
    model_weight_bytes,
    parse_routing,
    tokens_on_rank,
)

H, I, K = 2880, 2880, 4  # GPT-OSS-120B hidden, expert intermediate, top-k


def test_uniform_experts_touched():
    # 128 * (1 - (1 - 4/128)^64) = 128 * (1 - 0.96875^64) = 128 * (1 - 0.131082) = 111.22
    assert expected_experts_touched(128, 4, 64) == pytest.approx(111.22, abs=0.01)
    assert expected_experts_touched(128, 4, 1) == pytest.approx(4.0)
    assert expected_experts_touched(128, 4, 10**6) == pytest.approx(128.0)


def test_zipf_routing():
    # One token always picks exactly k experts, skewed or not.
    assert expected_experts_touched(128, 8, 1, "zipf:1.2") == pytest.approx(8.0)
    # S = 0 is uniform.
    assert parse_routing("zipf:0").kind == "uniform"
    # Skew concentrates tokens on fewer experts: fewer touched, more so as S grows.
    u = expected_experts_touched(128, 8, 32)
    s1 = expected_experts_touched(128, 8, 32, "zipf:1")
    s2 = expected_experts_touched(128, 8, 32, "zipf:2")
    assert u > s1 > s2 > 8


def test_histogram_routing():
    hist = [2] * 100 + [0] * 28  # 100 experts touched, 200 = 50 tokens * top-4 assignments
    assert expected_experts_touched(128, 4, 50, hist) == 100
    assert layer_cost("gpt-oss-120b", "bf16", "h200", 50, routing=hist).experts_touched == 100
    with pytest.raises(MoeprofError, match="sums to 200, expected batch\\*top_k = 64\\*4 = 256"):
        expected_experts_touched(128, 4, 64, hist)
    with pytest.raises(MoeprofError, match="has 3 bins"):
        expected_experts_touched(128, 4, 1, [1, 1, 2])


@pytest.mark.parametrize("spec", ["zipf:x", "zipf:-1", "hist:1,a", "lumpy"])
def test_bad_routing(spec):
    with pytest.raises(MoeprofError, match="bad routing"):
        parse_routing(spec)


def test_fp8_batch1_record_by_hand():
    c = layer_cost("gpt-oss-120b", "fp8", "h200", 1)
    # One token, top-4: 4 experts touched, 4 token-expert pairs.
    assert c.experts_touched == pytest.approx(4.0) and c.token_expert_pairs == 4
    # FLOPs: gemm1 = 2*1*4*2880*5760 = 132,710,400; gemm2 = 2*1*4*2880*2880 = 66,355,200
    assert c.gemm1_flops == 132_710_400 and c.gemm2_flops == 66_355_200
    assert c.flops == 199_065_600
    # Weights per expert (fp8, per-channel fp32 scales, bf16 biases):
    #   gate_up 5760*2880 = 16,588,800 + scales 5760*4 = 23,040 + bias 5760*2 = 11,520 -> 16,623,360
    #   down    2880*2880 =  8,294,400 + scales 2880*4 = 11,520 + bias 2880*2 =  5,760 ->  8,311,680
    assert c.gemm1_weight_bytes == pytest.approx(4 * 16_623_360)
    assert c.gemm2_weight_bytes == pytest.approx(4 * 8_311_680)
    # Activations (fp8 + fp32 per-token scale): x 2880+4 = 2,884; intermediate 4 rows * 2,884 = 11,536
    # written by gemm1 and read by gemm2; y in bf16 2880*2 = 5,760.
    assert c.gemm1_act_bytes == pytest.approx(2_884 + 11_536)
    assert c.gemm2_act_bytes == pytest.approx(11_536 + 5_760)
    total = 4 * (16_623_360 + 8_311_680) + 2_884 + 2 * 11_536 + 5_760  # = 99,771,876
    assert c.bytes == pytest.approx(total) and total == 99_771_876
    # Times on H200: 99,771,876 B / 4.8e12 B/s = 20.786 us; 199,065,600 / 1978.9e12 = 0.1006 us
    assert c.t_memory_s * 1e6 == pytest.approx(20.78581, rel=1e-6)
    assert c.t_compute_s * 1e6 == pytest.approx(0.100594, rel=1e-5)
    assert c.t_roofline_s == c.t_memory_s and c.bound == "memory"
    assert c.intensity_flop_per_byte == pytest.approx(199_065_600 / 99_771_876)
    assert c.mma_path == "fp8"
    rec = c.as_record()
    assert rec["t_roofline_us"] == pytest.approx(20.78581, rel=1e-6) and rec["bound"] == "memory"


def test_mxfp4_batch1_bytes_by_hand():
    c = layer_cost("gpt-oss-120b", "mxfp4", "h200", 1)
    # gate_up: 5760*2880/2 = 8,294,400 + e8m0 scales 5760*(2880/32) = 518,400 + bias 11,520 = 8,824,320
    # down:    2880*2880/2 = 4,147,200 + 2880*90 = 259,200 + bias 5,760 = 4,412,160
    # acts (bf16): x 5,760 + intermediate 4*2880*2 = 23,040 twice + y 5,760
    assert c.bytes == pytest.approx(4 * (8_824_320 + 4_412_160) + 5_760 + 2 * 23_040 + 5_760)
    assert c.mma_path == "bf16" and c.peak_flops_per_s == 989.4e12


def test_large_batch_turns_compute_bound_first_for_mxfp4():
    # mxfp4 runs BF16 MMA (half the FP8 rate) on fewer bytes: it hits the compute roof first.
    m4 = layer_cost("gpt-oss-120b", "mxfp4", "h200", 4096)
    f8 = layer_cost("gpt-oss-120b", "fp8", "h200", 4096)
    assert m4.bound == "compute" and f8.bound == "memory"
    assert m4.t_compute_s == pytest.approx(2 * f8.t_compute_s, rel=1e-4)  # 1978.9 vs 2 x 989.4
    # gemm1 is twice gemm2 (gate and up are both [I, H])
    assert m4.gemm1_flops == 2 * m4.gemm2_flops
    assert m4.gemm_t_roofline_s("gemm1") + m4.gemm_t_roofline_s("gemm2") >= m4.t_roofline_s


def test_tensor_parallel_splits_intermediate():
    c1 = layer_cost("gpt-oss-120b", "bf16", "h200", 256)
    c2 = layer_cost("gpt-oss-120b", "bf16", "h200", 256, tp=2)
    assert c2.flops == pytest.approx(c1.flops / 2)
    assert c2.gemm1_weight_bytes == pytest.approx(c1.gemm1_weight_bytes / 2)  # bf16 has no per-row scales
    assert c2.experts_touched == c1.experts_touched
    with pytest.raises(MoeprofError, match="tp=7 does not divide .* 2880"):
        layer_cost("gpt-oss-120b", "bf16", "h200", 1, tp=7)


def test_expert_parallel_average_rank():
    c = layer_cost("gpt-oss-120b", "bf16", "h200", 64, ep=4)
    full = layer_cost("gpt-oss-120b", "bf16", "h200", 64)
    assert c.token_expert_pairs == 64 * 4 / 4
    assert c.experts_touched == pytest.approx(full.experts_touched / 4)
    assert c.flops == pytest.approx(full.flops / 4)
    # Tokens with >= 1 of their 4 experts among a rank's 32: 1 - C(96,4)/C(128,4)
    #   = 1 - (96*95*94*93)/(128*127*126*125) = 1 - 79,727,040/256,032,000 = 0.688603
    assert tokens_on_rank(1, 128, 4, 4) == pytest.approx(1 - 79_727_040 / 256_032_000)
    assert tokens_on_rank(1, 128, 4, 4) == pytest.approx(1 - math.comb(96, 4) / math.comb(128, 4))
    with pytest.raises(MoeprofError, match="ep=3 does not divide .* 128"):
        layer_cost("gpt-oss-120b", "bf16", "h200", 1, ep=3)


def test_shared_expert_flops():
    c = layer_cost("deepseek-v3", "fp8-block", "h200", 1)
    # one shared expert, I = 2048: gemm1 2*1*7168*4096 + gemm2 2*1*2048*7168 = 88,080,384
    assert c.shared_flops == 88_080_384
    assert c.experts_touched == pytest.approx(8.0)
    assert layer_cost("gpt-oss-120b", "fp8", "h200", 1).shared_flops == 0


@pytest.mark.parametrize("batch", [0, -3, 1.5, True])
def test_bad_batch(batch):
    with pytest.raises(MoeprofError, match="batch must be a positive integer"):
        layer_cost("gpt-oss-120b", "bf16", "h200", batch)


def test_memory_plan_gpt_oss_mxfp4_on_h200():
    plan = memory_plan("gpt-oss-120b", "mxfp4", "h200")
    experts = 36 * 128 * (8_824_320 + 4_412_160)  # per-expert mxfp4 bytes from the batch-1 test
    non_expert = 2_127_555_648 * 2               # bf16
    assert plan.weight_bytes_per_gpu == pytest.approx(experts + non_expert)  # ~65.2 GB
    hbm = 143156 * 2**20
    assert plan.free_bytes_per_gpu == pytest.approx(hbm * 0.9 - experts - non_expert)
    assert plan.fits
    assert model_weight_bytes("gpt-oss-120b", "mxfp4") == pytest.approx(experts + non_expert)


def test_bf16_gpt_oss_does_not_fit_one_h200():
    plan = memory_plan("gpt-oss-120b", "bf16", "h200")
    # 36 * 128 * 24,891,840 params * 2 B = 229.4 GB of experts alone > 150 GB of HBM
    assert not plan.fits and plan.free_bytes_per_gpu < 0
    assert min_tp_to_fit("gpt-oss-120b", "bf16", "h200") == 2
    assert memory_plan("gpt-oss-120b", "bf16", "h200", tp=2).fits


def test_memory_plan_parallel_split():
    one = memory_plan("qwen3-30b-a3b", "bf16", "h100")
    ep4 = memory_plan("qwen3-30b-a3b", "bf16", "h100", ep=4)
    assert ep4.num_gpus == 4
    assert ep4.expert_weight_bytes_per_gpu == pytest.approx(one.expert_weight_bytes_per_gpu / 4)
    assert ep4.non_expert_weight_bytes_per_gpu == one.non_expert_weight_bytes_per_gpu  # replicated


def test_zipf_routing_every_expert_picked():
    # top_k == experts: every token picks every expert (used to divide by zero)
    assert expected_experts_touched(1, 1, 256, "zipf:1") == pytest.approx(1.0)
    assert expected_experts_touched(8, 8, 3, "zipf:2") == pytest.approx(8.0)


# ------------------------------------------------------------------------------------------------
# as-built traffic (the shipped kernels' separate passes), derived by hand for one small shape

def _tiny() -> "MoeModel":
    from moeprof.roofline.shapes import MoeModel

    return MoeModel(name="tiny", hidden_size=64, expert_intermediate_size=32, num_experts=4, top_k=2,
                    num_moe_layers=1, num_layers=1)


def test_as_built_bytes_fp8_by_hand():
    """batch 2, top-2 of 4 experts: 2 token rows, 4 (token, expert) pairs, H = 64, I = 32.
    FP8 activations carry one fp32 scale per row.
      quant x      read 2*64*2 = 256 (bf16)      write 2*64 + 2*4 = 136         -> 392
      gemm1        read 136 (fp8 x)              write 4*32*2 = 256 (bf16 inter) -> 392
      quant inter  read 256                      write 4*32 + 4*4 = 144         -> 400
      gemm2        read 144                      write 4*64*2 = 512 (per pair)   -> 656
      combine      read 512                      write 2*64*2 = 256             -> 768
    Ideal: gemm1 136 + 144 (inter in fp8), gemm2 144 + 256 (y) = 680."""
    c = layer_cost(_tiny(), "fp8", "h100", 2)
    assert (c.tokens, c.token_expert_pairs) == (2, 4)
    assert c.quant_bytes_as_built == 392 + 400
    assert c.gemm1_act_bytes_as_built == 392 and c.gemm2_act_bytes_as_built == 656
    assert c.combine_bytes_as_built == 768
    assert c.act_bytes == 680
    assert c.bytes_as_built - c.bytes == (392 + 392 + 400 + 656 + 768) - 680
    assert c.t_as_built_s == pytest.approx(max(c.t_compute_s, c.bytes_as_built / c.hbm_bytes_per_s))


def test_as_built_bytes_bf16_by_hand():
    """BF16: no quant passes. gemm1 256 + 256, gemm2 256 + 512, combine 512 + 256; ideal 512 + 512."""
    c = layer_cost(_tiny(), "bf16", "h100", 2)
    assert c.quant_bytes_as_built == 0
    assert (c.gemm1_act_bytes_as_built, c.gemm2_act_bytes_as_built, c.combine_bytes_as_built) == (512, 768, 768)
    assert c.act_bytes == 1024 and c.bytes_as_built - c.bytes == 2048 - 1024


def test_as_built_mx_prefill_dequantization_by_hand():
    """Tiny model, batch 256: 512 (token, expert) pairs over 4 experts = 128 rows per expert (batch 2048:
    1024), every expert touched (to 1e-70); mxfp4-w4a8 dequantizes above 512. Packed mxfp4 gate_up
    [64, 64]: 64*64/2 = 2048 bytes + 64*64/32 = 128 E8M0 bytes = 2176; down [64, 32]: 1024 + 64 = 1088.
    mxfp4 as built reads the packed weights (its prefill kernel unpacks in registers): 4 x 2176 = 8704 and
    4 x 1088 = 4352; if its bf16 fallback's dequantization runs, gemm1 weights = 4 experts x (2176 read +
    64*64*2 = 8192 bf16 written) + 4 x 8192 read by the bf16 GEMM = 74,240 and gemm2 = 4 x (1088 + 4096) +
    4 x 4096 = 37,120. mxfp4-w4a8 at batch 2048 as built writes e4m3 (1 byte) plus a 4-byte row scale:
    gemm1 4 x (2176 + 4096 + 256) + 4 x 4352 = 43,520; gemm2 4 x (1088 + 2048 + 256) + 4 x 2304 = 22,784.
    At batch 1024 (512 rows per expert, at the threshold, not above it), 256 and 64 it does not
    dequantize; bf16 never does."""
    c = layer_cost(_tiny(), "mxfp4", "h200", 256)
    assert c.gemm1_weight_bytes == pytest.approx(4 * 2176) and c.gemm2_weight_bytes == pytest.approx(4 * 1088)
    assert c.gemm1_bytes_as_built - c.gemm1_act_bytes_as_built == pytest.approx(8704)
    assert c.gemm2_bytes_as_built - c.gemm2_act_bytes_as_built == pytest.approx(4352)
    assert c.gemm1_weight_bytes_dequant == pytest.approx(74_240) and c.gemm2_weight_bytes_dequant == pytest.approx(37_120)
    assert c.as_record()["gemm1_weight_bytes_as_built"] == pytest.approx(8704)
    w8 = layer_cost(_tiny(), "mxfp4-w4a8", "h200", 2048)
    assert w8.gemm1_bytes_as_built - w8.gemm1_act_bytes_as_built == pytest.approx(43_520)
    assert w8.gemm2_bytes_as_built - w8.gemm2_act_bytes_as_built == pytest.approx(22_784)
    assert w8.gemm1_weight_bytes_dequant == pytest.approx(43_520)
    for fmt, batch in (("mxfp4", 64), ("mxfp4-w4a8", 64), ("mxfp4-w4a8", 256), ("mxfp4-w4a8", 1024), ("bf16", 256)):
        d = layer_cost(_tiny(), fmt, "h200", batch)
        assert d.gemm1_bytes_as_built - d.gemm1_act_bytes_as_built == pytest.approx(d.gemm1_weight_bytes), fmt
    assert layer_cost(_tiny(), "bf16", "h200", 256).gemm1_weight_bytes_dequant == pytest.approx(
        layer_cost(_tiny(), "bf16", "h200", 256).gemm1_weight_bytes)
    assert w8.bytes_as_built > w8.bytes and w8.t_as_built_s >= w8.t_roofline_s


def test_as_built_dequant_thresholds_match_the_kernel_defaults(monkeypatch):
    """The roofline's as-built rule (pure Python) and the kernels' default configuration (on sm_90 with the
    CUDA kernels built: stubbed available here) agree on where prefill dequantizes: mxfp4-w4a8 above 512
    rows per expert; mxfp4 never (its prefill kernel unpacks in registers)."""
    pytest.importorskip("triton")
    from moeprof.models.kernels import moe_gemm as mg
    from moeprof.models.kernels import mx_cuda
    from moeprof.roofline.cost import AS_BUILT_DEQUANT

    monkeypatch.setattr(mg, "INTERPRET", False)
    monkeypatch.setattr(mx_cuda, "available", lambda device=None: True)
    monkeypatch.setattr(mx_cuda, "wg_unavailable_reason", lambda device=None: None)
    assert "mxfp4" not in AS_BUILT_DEQUANT
    for m in (16.0, 64.0, 128.0, 512.0):
        c = mg.default_config("mxfp4", m, 2880, 2880, True, slots=int(m * 128), experts=128, local_experts=128)
        assert c["KERNEL"] == "wg" and not c.get("DEQUANT_BF16"), (m, c)

    flag = {"mxfp4-w4a8": "DEQUANT_FP8"}
    for fmt, (rows, _, _) in AS_BUILT_DEQUANT.items():
        for m, want in ((rows, False), (rows * 1.01, True)):
            c = mg.default_config(fmt, m, 2880, 2880, True, slots=int(m * 128), experts=128, local_experts=128)
            assert bool(c.get(flag[fmt])) == want, (fmt, m, c)
