"""The CUDA MXFP4 kernel (kernels/mx_mma.cu): its operand layout on the CPU, the kernel on the GPU.

The CPU test does not trust the packer's own description: it emulates what the kernel does with the
bytes, step by step (the bit masks and shifts of unpack_word, the bf16x2 multiply by 2^(S-1), the
lane -> K addressing of the activation loads) and puts the values where PTX's mma.m16n8k16 fragment
definition says lane L's registers sit in the 16x16 A and 16x8 B tiles. The GEMM that results must
equal the dequantized weights times the activations exactly (fp64).
"""

import math

import pytest

torch = pytest.importorskip("torch")

from moeprof.models import quant as q  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def _bf16_halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 words -> (low, high) 16-bit halves read as bf16, in fp64."""
    lo = (x & 0xFFFF).to(torch.int32)
    hi = ((x >> 16) & 0xFFFF).to(torch.int32)
    as_bf16 = lambda h: torch.where(h >= 0x8000, h - 0x10000, h).to(torch.int16).view(torch.bfloat16).double()
    return as_bf16(lo), as_bf16(hi)


def _emulate(w: torch.Tensor, s: torch.Tensor, act: torch.Tensor, k: int) -> torch.Tensor:
    """The kernel's arithmetic for every tile and token: [Nt * 16, tokens] in fp64 (act [tokens, k])."""
    nt, kc = w.shape[0], w.shape[1]
    tokens = act.shape[0]
    M = 0x81C081C0
    assert tokens <= 8
    out = torch.zeros(nt * 16, 8, dtype=torch.float64)
    by = w.to(torch.int64)
    words = by[..., 0::4] | (by[..., 1::4] << 8) | (by[..., 2::4] << 16) | (by[..., 3::4] << 24)  # [Nt,Kc,32,4]
    actp = torch.zeros(tokens, kc * 64 + 64, dtype=torch.float64)
    actp[:, :k] = act.double()
    for t in range(nt):
        for c in range(kc):
            for st in range(4):
                A = torch.zeros(16, 16, dtype=torch.float64)
                B = torch.zeros(16, 8, dtype=torch.float64)
                for lane in range(32):
                    r, qq = lane // 4, lane % 4
                    x = int(words[t, c, lane, st])
                    s_r, s_r8 = int(s[t, c, 2 * r + qq // 2, 0]), int(s[t, c, 2 * r + qq // 2, 1])   # lane's MX group qq // 2
                    ta = x & M
                    tb = (x << 3) & M
                    tc = (x << 6) & M
                    td = ((x >> 4) & 0x00C000C0) | ((x >> 5) & 0x01000100) | ((x << 1) & 0x80008000)
                    regs = []
                    for v, sc in ((ta, s_r), (tc, s_r8), (tb, s_r), (td, s_r8)):   # a0, a1, a2, a3
                        lo, hi = _bf16_halves(torch.tensor([v & 0xFFFFFFFF]))
                        f = 2.0 ** (sc - 1)
                        regs.append((float(lo) * f, float(hi) * f))
                    # PTX m16n8k16 .bf16 A fragment: a0 (row g, k 2q..2q+1), a1 (g + 8, same),
                    # a2 (g, 2q + 8..), a3 (g + 8, 2q + 8..); g = lane / 4
                    for (row, col), (v0, v1) in zip(((r, 2 * qq), (r + 8, 2 * qq), (r, 2 * qq + 8),
                                                     (r + 8, 2 * qq + 8)), regs):
                        A[row, col], A[row, col + 1] = v0, v1
                    # B fragment: b0 (k 2q..2q+1, n g), b1 (k 2q + 8.., n g); the kernel hands the
                    # activation elements 64 c + 16 q + 4 st + (0, 1) and (2, 3) of token g
                    if r < tokens:
                        base = 64 * c + 16 * qq + 4 * st
                        if base >= k:      # K % 64 == 32: the kernel reads finite data of the same row
                            base = 16 * qq + 4 * st
                        B[2 * qq, r], B[2 * qq + 1, r] = actp[r, base], actp[r, base + 1]
                        B[2 * qq + 8, r], B[2 * qq + 9, r] = actp[r, base + 2], actp[r, base + 3]
                out[16 * t:16 * t + 16] += A @ B
    return out[:, :tokens]


@pytest.mark.parametrize("n,k,gated_half", [(24, 96, None), (2 * 12, 64, 12), (16, 160, None)])
def test_emulated_kernel_matches_dequantized_weights(n, k, gated_half):
    """Odd shapes: rows not a multiple of 16 (padding rows), K = 96 / 160 (K % 64 == 32: half chunk),
    gated row order. Codes cover every E2M1 value including 0.5 (subnormal bf16) and -0."""
    g = torch.Generator().manual_seed(11)
    codes = torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8)
    codes[0, :16] = torch.arange(16, dtype=torch.uint8)
    scales = torch.randint(110, 129, (n, k // 32), generator=g, dtype=torch.uint8)
    tokens = 5
    act = torch.randn(tokens, k, generator=g).bfloat16()
    w, s = q.mma_mx_weights(codes, scales, gated_half)
    assert w.dtype == torch.uint8 and w.shape[2:] == (32, 16) and s.shape[2:] == (16, 2)
    got = _emulate(w, s, act, k)
    ref_w = q.dequant_mxfp4(codes, scales).double()                 # [n, k]
    rows = q.mma_tile_rows(n, gated_half)
    want = torch.zeros(rows.numel(), tokens, dtype=torch.float64)
    ok = rows >= 0
    want[ok] = ref_w[rows[ok]] @ act.double().t()
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12), (got - want).abs().max()
    # the gated order puts gate row j and up row I + j in the same lane (rows r and r + 8 of a tile)
    if gated_half is not None:
        assert rows[:8].tolist() == list(range(8)) and rows[8:16].tolist() == list(range(gated_half, gated_half + 8))


def test_mma_layout_round_trip_and_padding():
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 16, (40, 192), generator=g, dtype=torch.uint8)
    scales = torch.randint(0, 255, (40, 6), generator=g, dtype=torch.uint8)
    w, s = q.mma_mx_weights(codes, scales)
    assert w.shape == (3, 3, 32, 16)
    c2, s2 = q.unmma_mx_weights(w, s, 40, 192)
    assert torch.equal(c2, codes) and torch.equal(s2, scales)
    # rows 40..47 of the last tile are padding: zero codes
    assert q.mma_tile_rows(40).tolist()[40:] == [-1] * 8
    with pytest.raises(ValueError, match="K % 32"):
        q.mma_mx_weights(codes[:, :100], scales)


def test_cpu_config_never_picks_the_cuda_kernel():
    import dataclasses

    from moeprof.models.kernels import moe_gemm as mg
    from moeprof.models.kernels import mx_cuda

    # the kernel's default build (what available() compiles) is the decode default shape
    assert dataclasses.asdict(mx_cuda.Variant()) == {**mg.MMA_SHAPE, "ASMEM": 0}

    if not HAS_CUDA:
        assert mx_cuda.unavailable_reason() is not None
        assert "KERNEL" not in mg.default_config("mxfp4", 2.0, 2880, 2880, True, slots=64, experts=32)
    cfg = mg.mma_config(8.0, experts=128)
    assert cfg["KERNEL"] == "mma" and cfg["BM"] == 8 and cfg["G"] == 2 and cfg["MT"] == 2
    assert mg.mma_config(0.5)["G"] == 1 and mg.mma_config(0.03, experts=4)["WK"] == 2
    # the down GEMM (half the row tiles of gemm1) takes more warps per tile while few experts have rows
    warps_per_tile = lambda c: c["WK"] / c["MT"]
    for experts in (4, 12):
        assert warps_per_tile(mg.mma_config(1.0, experts=experts, gated=False)) > \
            warps_per_tile(mg.mma_config(1.0, experts=experts, gated=True))
    assert mg.mma_config(2.0, experts=100, gated=False) == mg.mma_config(2.0, experts=100, gated=True)
    # two token groups per pass take every loop option; the option bits reach the kernel's build
    assert cfg["FL"] == mg.MMA_FLAGS_G2 and mx_cuda.variant_of(cfg).FL == mg.MMA_FLAGS_G2
    assert f"-DMX_FLAGS={mg.MMA_FLAGS_G2}" in mx_cuda.variant_of(cfg).defines()


# ----------------------------------------------------------------------------- GPU
def _mma_cfg(g, **shape):
    from moeprof.models.kernels import moe_gemm as mg

    c = mg.mma_config(1.0, **{"MT": 1, "ASMEM": 0, **shape})
    c["G"] = g
    return c


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("g", [1, 2, 4])
@pytest.mark.parametrize("shape", [dict(WN=2, WK=4, D=4), dict(WN=4, WK=2, D=2), dict(WN=1, WK=8, D=6),
                                   dict(WN=2, WK=2, D=4, MT=2), dict(WN=2, WK=2, D=4, MT=2, ASMEM=1),
                                   # one warp per K range with every option bit (per-warp expert scan,
                                   # barrier-free epilogue), one with an odd ring
                                   dict(WN=2, WK=1, D=4, MT=2, FL=15), dict(WN=2, WK=1, D=3, MT=1, FL=15)])
@pytest.mark.parametrize("case", ["ragged", "ep", "big", "w4a8"])
def test_gpu_mma_kernel_against_reference(g, shape, case):
    """Tiny and odd shapes through the CUDA kernel: K = 160 (half chunk), I = 96, skewed routing (empty
    and crowded experts: more rows than one pass), EP foreign rows, a scale byte above 128."""
    from moeprof.models.kernels import mx_cuda
    from moeprof.models.layer import build_layer
    from moeprof.models.reference import ERROR_BOUNDS
    from helpers.mx_layers import reference_error

    if not mx_cuda.available():
        pytest.skip(mx_cuda.unavailable_reason())
    c = _mma_cfg(g, **shape)
    kw = dict(hidden_size=160, intermediate_size=96, num_experts=8, top_k=2, fmt="mxfp4", batch=45,
              routing="skew:2", seed=9, device="cuda", cache_weights=False, cfg=(c, dict(c)))
    if case == "ep":
        kw.update(ep=2, routing="uniform")
    if case == "w4a8":   # e4m3 activations (exact in bf16) with their row scales applied in the epilogue
        kw.update(fmt="mxfp4-w4a8")
    layer = build_layer(**kw)
    if case == "big":
        # a few groups whose E8M0 byte exceeds 128 (the kernel's two-step multiply)
        from helpers.mx_layers import with_scale_bytes

        def big(wt):
            wt.w1_s[0, :4, 0] = 131

        layer = with_scale_bytes(layer, "mma", (c, dict(c)), big)
        assert layer._big
    assert layer._mma
    err = reference_error(layer, finite_outputs=True)
    assert err < ERROR_BOUNDS[kw["fmt"]], (g, shape, case, err)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("batch", [1, 16, 256, 1024])
def test_gpu_mma_real_shapes(batch):
    """gpt-oss-120b shapes, default configuration (the CUDA kernel at decode), fresh seed."""
    from moeprof.models.kernels import mx_cuda
    from moeprof.models.reference import ERROR_BOUNDS
    from helpers.mx_layers import real_shape_layer, reference_error

    if not mx_cuda.available():
        pytest.skip(mx_cuda.unavailable_reason())
    layer = real_shape_layer("mxfp4", batch, seed=31)
    # the decode kernel up to 8 rows per expert, the prefill kernel (tests/test_mx_wgmma.py) above
    assert (layer._mma and not layer._wg) == (layer.m_per_expert <= 8)
    err = reference_error(layer)
    assert math.isfinite(err) and err < ERROR_BOUNDS["mxfp4"], (batch, err)


def test_default_config_routes_by_rows_when_the_kernel_is_available(monkeypatch):
    """With the CUDA kernel available (stubbed: this checks the routing, not the kernel), mxfp4 takes it
    up to MMA_MAX_ROWS_PER_EXPERT rows per expert and the Triton kernel above; mxfp4-w4a8 takes the W4A8
    kernel ("mma8") up to W4A8_MMA_MAX_ROWS_PER_EXPERT and the dequantize-to-e4m3 fp8 GEMM above; other
    formats never."""
    from moeprof.models.kernels import moe_gemm as mg
    from moeprof.models.kernels import mx_cuda

    monkeypatch.setattr(mg, "INTERPRET", False)
    monkeypatch.setattr(mx_cuda, "available", lambda device=None: True)
    # without the prefill kernel (its routing: tests/test_mx_wgmma.py)
    monkeypatch.setattr(mx_cuda, "wg_unavailable_reason", lambda device=None: "not built (test)")
    cfg = lambda fmt, m, **kw: mg.default_config(fmt, m, 2880, 2880, True, slots=int(m * 128), experts=64,
                                                 local_experts=128, **kw)
    assert cfg("mxfp4", 2.0)["KERNEL"] == "mma"
    assert cfg("mxfp4", mg.MMA_MAX_ROWS_PER_EXPERT)["KERNEL"] == "mma"
    assert "KERNEL" not in cfg("mxfp4", mg.MMA_MAX_ROWS_PER_EXPERT * 2)
    assert cfg("mxfp4-w4a8", 1.0)["KERNEL"] == "mma8" and cfg("mxfp4-w4a8", 16.0)["KERNEL"] == "mma"
    # without the prefill kernel, the decode kernel up to W4A8_MMA_MAX_ROWS_WITHOUT_WG
    assert cfg("mxfp4-w4a8", mg.W4A8_MMA_MAX_ROWS_WITHOUT_WG)["KERNEL"] == "mma"
    big = cfg("mxfp4-w4a8", mg.W4A8_MMA_MAX_ROWS_WITHOUT_WG * 2)
    assert big.get("DEQUANT_FP8") == 1 and "KERNEL" not in big
    for fmt in ("bf16", "fp8", "fp8-block"):
        assert "KERNEL" not in cfg(fmt, 2.0)
    # more local experts than the kernel's expert scan: the Triton kernel
    assert "KERNEL" not in mg.default_config("mxfp4", 2.0, 2880, 2880, True, slots=256, experts=64, local_experts=512)


def test_asmem_shared_memory_matches_the_kernel_formula():
    """The launcher's dynamic shared memory for the ring-activation variant: per lane and stage, 16 bytes
    of weights and 1 of scales (32 bytes per warp: 16 rows x 2 MX groups) per tile, and 32 * G bytes of
    activations, against the partial-sum buffer (written out by hand)."""
    from moeprof.models.kernels import mx_cuda

    v = mx_cuda.Variant(WN=8, WK=1, D=4, MT=2, ASMEM=1)
    assert mx_cuda.smem_bytes(v, 1) == 8 * 4 * 32 * (2 * 17 + 32) == 67584
    assert mx_cuda.smem_bytes(v, 2) == 8 * 4 * 32 * (2 * 17 + 64)
    assert mx_cuda.smem_bytes(mx_cuda.Variant(), 2) == 0     # static buffer without ASMEM
