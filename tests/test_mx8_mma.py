"""The CUDA W4A8 kernel (kernels/mx_mma.cu: mx_w4a8_body): its operand layout on the CPU, the kernel on the GPU.

The CPU test does not trust the packer's own description: it emulates what the kernel does with the
bytes (the masks and shifts of unpack8_word, the scale bytes shifted into an fp32 exponent field, the
lane -> K addressing of the activation loads, the skipped second step of a half chunk) and puts the
values where PTX's mma.m16n8k32 .e4m3 fragment definition says lane L's registers sit in the 16x32 A
and 32x8 B tiles. The GEMM that results must equal the dequantized weights times the e4m3 activations
exactly (fp64).
"""

import math
import struct

import pytest

torch = pytest.importorskip("torch")

from moeprof.models import quant as q  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
M = 0x9C9C9C9C


def _e4m3_bytes(reg: int) -> list[float]:
    """A 32-bit register -> its four e4m3 values, byte 0 first (little-endian), as PTX reads them."""
    by = torch.tensor([(reg >> (8 * i)) & 0xFF for i in range(4)], dtype=torch.uint8)
    return by.view(torch.float8_e4m3fn).double().tolist()


def _f32(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0]


def _f16_split(A: torch.Tensor, B: torch.Tensor, regs_a, regs_b) -> torch.Tensor:
    """The F16MMA build's step: two m16n8k16 f16 MMAs. regs_a[lane] = (a0, a1, a2, a3), regs_b[lane] =
    (b0, b1) e4m3 registers; MMA h takes bytes 2h, 2h + 1 of each (cvt e4m3x2 -> f16x2, exact) and puts
    them where PTX's m16n8k16 .f16 fragments sit: A a0 (row g, k 2t..2t+1), a1 (g + 8, same),
    a2 (g, 2t + 8..), a3 (g + 8, 2t + 8..); B b0 (k 2t..2t+1, n g), b1 (k 2t + 8.., n g)."""
    out = torch.zeros(16, 8, dtype=torch.float64)
    for h in range(2):
        A16 = torch.zeros(16, 16, dtype=torch.float64)
        B16 = torch.zeros(16, 8, dtype=torch.float64)
        for lane in range(32):
            g, t = lane // 4, lane % 4
            for reg, row, col in zip(regs_a[lane], (g, g + 8, g, g + 8), (2 * t, 2 * t, 2 * t + 8, 2 * t + 8)):
                A16[row, col:col + 2] = torch.tensor(_e4m3_bytes(reg)[2 * h:2 * h + 2], dtype=torch.float64)
            if regs_b[lane] is not None:
                for reg, kk in zip(regs_b[lane], (2 * t, 2 * t + 8)):
                    B16[kk:kk + 2, g] = torch.tensor(_e4m3_bytes(reg)[2 * h:2 * h + 2], dtype=torch.float64)
        out += A16 @ B16
    return out


def _emulate(w: torch.Tensor, s: torch.Tensor, act: torch.Tensor, k: int, f16_split: bool = False) -> torch.Tensor:
    """The kernel's arithmetic for every tile and token: [Nt * 16, tokens] in fp64 (act e4m3 [tokens, k]).
    f16_split: each step as the F16MMA build computes it (two f16 MMAs), else as one e4m3 MMA."""
    nt, kc = w.shape[0], w.shape[1]
    tokens = act.shape[0]
    assert tokens <= 8
    by = w.to(torch.int64)
    words = by[..., 0::4] | (by[..., 1::4] << 8) | (by[..., 2::4] << 16) | (by[..., 3::4] << 24)  # [Nt,Kc,32,4]
    sw = s.to(torch.int64)
    sword = sw[..., 0] | (sw[..., 1] << 8) | (sw[..., 2] << 16) | (sw[..., 3] << 24)             # [Nt,Kc,8]
    abytes = act.view(torch.uint8).to(torch.int64)
    out = torch.zeros(nt * 16, 8, dtype=torch.float64)
    for t in range(nt):
        for c in range(kc):
            for st in range(2):
                if 64 * c + 32 * st >= k:          # K % 64 == 32: the kernel skips the second step
                    continue
                A = torch.zeros(16, 32, dtype=torch.float64)
                B = torch.zeros(32, 8, dtype=torch.float64)
                f = torch.zeros(16, dtype=torch.float64)
                regs_a, regs_b = [], []
                for lane in range(32):
                    g, tt = lane // 4, lane % 4
                    regs = []
                    for x in (int(words[t, c, lane, 2 * st]), int(words[t, c, lane, 2 * st + 1])):
                        lo = x & M
                        hi = (((x >> 2) ^ (x << 2)) & 0xFFFFFFFF) & M
                        regs.append((lo, hi))
                    a0, a2 = regs[0]          # row g: K elements 0-3, 4-7 of the lane's 8
                    a1, a3 = regs[1]          # row g + 8
                    regs_a.append((a0, a1, a2, a3))
                    regs_b.append(None)
                    # PTX m16n8k32 .e4m3 A fragment: a0 (row g, k 4t..4t+3), a1 (g + 8, same),
                    # a2 (g, 16 + 4t..), a3 (g + 8, 16 + 4t..); byte i of a register is k + i
                    for reg, row, col in ((a0, g, 4 * tt), (a1, g + 8, 4 * tt), (a2, g, 16 + 4 * tt),
                                          (a3, g + 8, 16 + 4 * tt)):
                        A[row, col:col + 4] = torch.tensor(_e4m3_bytes(reg), dtype=torch.float64)
                    # B fragment: b0 (k 4t..4t+3, n g), b1 (k 16 + 4t.., n g): the kernel loads the 8
                    # bytes 64 c + 32 st + 8 t .. + 7 of token g as (b0, b1)
                    if g < tokens:
                        base = 64 * c + 32 * st + 8 * tt
                        b = [int(abytes[g, base + i]) for i in range(8)]
                        b0 = b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24
                        b1 = b[4] | b[5] << 8 | b[6] << 16 | b[7] << 24
                        B[4 * tt:4 * tt + 4, g] = torch.tensor(_e4m3_bytes(b0), dtype=torch.float64)
                        B[16 + 4 * tt:16 + 4 * tt + 4, g] = torch.tensor(_e4m3_bytes(b1), dtype=torch.float64)
                        regs_b[-1] = (b0, b1)
                    # scales: byte 2 st (row g) and 2 st + 1 (row g + 8) of the row pair's word
                    wv = int(sword[t, c, g])
                    sh = lambda j: ((wv << (23 - 8 * j)) if j < 3 else (wv >> 1)) & 0x7F800000
                    f[g], f[g + 8] = _f32(sh(2 * st)), _f32(sh(2 * st + 1))
                prod = _f16_split(A, B, regs_a, regs_b) if f16_split else A @ B
                out[16 * t:16 * t + 16] += prod * f[:, None]
    return out[:, :tokens]


def test_e2m1_codes_become_e4m3_times_2_pow_minus_6():
    """Sign to bit 7, e1 e0 m to bits 4..2: every code, including 0.5 (an e4m3 subnormal) and -0."""
    codes = torch.arange(16, dtype=torch.uint8)
    got = q._e2m1_to_e4m3_bits(codes).to(torch.uint8).view(torch.float8_e4m3fn).double()
    want = torch.tensor([v for v in q.E2M1_VALUES] + [-v for v in q.E2M1_VALUES], dtype=torch.float64) / 64
    assert torch.equal(got, want)
    assert torch.signbit(got[8])


@pytest.mark.parametrize("f16_split", [False, True])
@pytest.mark.parametrize("n,k,gated_half", [(24, 96, None), (2 * 12, 64, 12), (16, 160, None), (40, 192, None)])
def test_emulated_kernel_matches_dequantized_weights(n, k, gated_half, f16_split):
    """Odd shapes: rows not a multiple of 16 (padding rows), K = 96 / 160 (K % 64 == 32: half chunk),
    gated row order. Codes cover every E2M1 value; scales span 0 (2^-121 as a normal fp32) to 248."""
    g = torch.Generator().manual_seed(13)
    codes = torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8)
    codes[0, :16] = torch.arange(16, dtype=torch.uint8)
    scales = torch.randint(110, 135, (n, k // 32), generator=g, dtype=torch.uint8)
    scales[0], scales[1] = 0, q.MMA8_SCALE_MAX      # whole rows: compared at their own magnitude
    tokens = 5
    act = (torch.randn(tokens, k, generator=g) * 50).to(torch.float8_e4m3fn)
    w, s = q.mma8_mx_weights(codes, scales, gated_half)
    assert w.dtype == torch.uint8 and w.shape[2:] == (32, 16) and s.shape[2:] == (8, 4)
    got = _emulate(w, s, act, k, f16_split)
    ref_w = q.dequant_mxfp4(codes, scales).double()                 # [n, k]
    rows = q.mma_tile_rows(n, gated_half)
    want = torch.zeros(rows.numel(), tokens, dtype=torch.float64)
    ok = rows >= 0
    want[ok] = ref_w[rows[ok]] @ act.double().t()
    # each row relative to its own magnitude (rows 0 and 1: 2^-127 and 2^121 times E2M1)
    scale_of = want.abs().amax(dim=1, keepdim=True).clamp_min(1e-300)
    assert torch.allclose(got / scale_of, want / scale_of, rtol=0, atol=1e-12), (got - want).abs().max()
    assert torch.isfinite(got).all()


def test_mma8_layout_round_trip_and_limits():
    g = torch.Generator().manual_seed(5)
    codes = torch.randint(0, 16, (40, 192), generator=g, dtype=torch.uint8)
    scales = torch.randint(0, q.MMA8_SCALE_MAX + 1, (40, 6), generator=g, dtype=torch.uint8)
    w, s = q.mma8_mx_weights(codes, scales, gated_half=20)
    assert w.shape == (3, 3, 32, 16) and s.shape == (3, 3, 8, 4)
    c2, s2 = q.unmma8_mx_weights(w, s, 40, 192, gated_half=20)
    assert torch.equal(c2, codes) and torch.equal(s2, scales)
    # the stored scale byte is S + 6: an fp32 exponent field of 2^(S - 121)
    assert int(s[0, 0, 0, 0]) == int(scales[0, 0]) + 6
    scales[3, 2] = q.MMA8_SCALE_MAX + 1
    with pytest.raises(ValueError, match="scales above 248"):
        q.mma8_mx_weights(codes, scales)
    with pytest.raises(ValueError, match="K % 32"):
        q.mma8_mx_weights(codes[:, :100], scales)


def test_default_config_picks_the_w4a8_kernel_for_w4a8_decode(monkeypatch):
    """With the CUDA kernels available (stubbed: this checks the routing, not the kernel), mxfp4-w4a8
    decode takes KERNEL="mma8", mxfp4 keeps "mma"; mma_config can still ask for the W4A16 kernel."""
    from moeprof.models.kernels import moe_gemm as mg
    from moeprof.models.kernels import mx_cuda

    monkeypatch.setattr(mg, "INTERPRET", False)
    monkeypatch.setattr(mx_cuda, "available", lambda device=None: True)
    cfg = lambda fmt, m: mg.default_config(fmt, m, 2880, 2880, True, slots=int(m * 128), experts=64,
                                           local_experts=128)
    assert cfg("mxfp4-w4a8", 1.0)["KERNEL"] == "mma8"
    assert cfg("mxfp4-w4a8", mg.W4A8_MMA8_MAX_ROWS_PER_EXPERT)["KERNEL"] == "mma8"
    # with two token groups per pass the W4A16 kernel on the converted activations takes over
    assert cfg("mxfp4-w4a8", 8.0)["KERNEL"] == "mma" and cfg("mxfp4-w4a8", 8.0)["G"] == 2
    assert cfg("mxfp4-w4a8", mg.W4A8_MMA_MAX_ROWS_PER_EXPERT)["KERNEL"] == "mma"
    assert cfg("mxfp4", 1.0)["KERNEL"] == "mma"
    assert mg.mma_config(1.0, kernel="mma")["KERNEL"] == "mma"
    with pytest.raises(ValueError, match="unknown CUDA"):
        mg.mma_config(1.0, kernel="mma9")


def test_w4a8_kernel_config_is_refused_for_bf16_activations():
    from moeprof.models.kernels import moe_gemm as mg
    from moeprof.models.layer import build_layer

    c = mg.mma_config(1.0, kernel="mma8")
    with pytest.raises(ValueError, match="e4m3 activations"):
        build_layer(hidden_size=64, intermediate_size=64, num_experts=4, top_k=2, fmt="mxfp4", batch=2,
                    device="cpu", cache_weights=False, cfg=(c, dict(c)))


# ----------------------------------------------------------------------------- GPU
def _mma8_cfg(g, f16=0, **shape):
    from moeprof.models.kernels import moe_gemm as mg

    c = mg.mma_config(1.0, kernel="mma8", **{"MT": 1, "ASMEM": 0, **shape}, F16MMA=f16)
    c["G"] = g
    return c


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("g", [1, 2, 4])
@pytest.mark.parametrize("shape", [dict(WN=2, WK=4, D=4), dict(WN=4, WK=2, D=2), dict(WN=1, WK=8, D=6),
                                   dict(WN=2, WK=2, D=4, MT=2), dict(WN=8, WK=1, D=4, MT=2)])
@pytest.mark.parametrize("case", ["ragged", "ep", "k64"])
@pytest.mark.parametrize("f16", [0, 1])
def test_gpu_mma8_kernel_against_reference(g, shape, case, f16):
    """Tiny and odd shapes through the W4A8 kernel: K = 160 (half chunk: the last chunk's warp skips a
    step), I = 96, skewed routing (empty and crowded experts: more rows than one pass), EP foreign rows,
    K a multiple of 64."""
    from moeprof.models.kernels import mx_cuda
    from moeprof.models.layer import build_layer
    from moeprof.models.reference import ERROR_BOUNDS
    from helpers.mx_layers import reference_error

    if not mx_cuda.available():
        pytest.skip(mx_cuda.unavailable_reason())
    c = _mma8_cfg(g, f16, **shape)
    kw = dict(hidden_size=160, intermediate_size=96, num_experts=8, top_k=2, fmt="mxfp4-w4a8", batch=45,
              routing="skew:2", seed=9, device="cuda", cache_weights=False, cfg=(c, dict(c)))
    if case == "ep":
        kw.update(ep=2, routing="uniform")
    if case == "k64":
        kw.update(hidden_size=192, intermediate_size=128)
    layer = build_layer(**kw)
    assert layer._mma8 and layer._mma8_f16 == bool(f16)
    err = reference_error(layer, finite_outputs=True)
    assert err < ERROR_BOUNDS["mxfp4-w4a8"], (g, shape, case, err)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("f16", [0, 1])
def test_gpu_mma8_equals_the_w4a16_kernel_on_the_same_e4m3_activations(f16):
    """Each GEMM of the two CUDA kernels on the same e4m3 activations (exact in bf16) and weights: the
    sums agree to fp32 summation order and bf16 output rounding, far inside the format's error bound."""
    from moeprof.models.kernels import moe_gemm as mg
    from moeprof.models.kernels import mx_cuda
    from moeprof.models.kernels import route as mg_route
    from moeprof.models.layer import MoeLayer, build_layer
    from moeprof.models.reference import rel_err

    if not mx_cuda.available():
        pytest.skip(mx_cuda.unavailable_reason())
    c8 = _mma8_cfg(2, f16, WN=4, WK=2, D=4)
    layer8 = build_layer(hidden_size=320, intermediate_size=192, num_experts=8, top_k=2, fmt="mxfp4-w4a8",
                         batch=40, seed=4, device="cuda", cache_weights=False, cfg=(c8, dict(c8)))
    c16 = {k: v for k, v in c8.items() if k != "F16MMA"} | {"KERNEL": "mma"}
    layer16 = MoeLayer(wt=layer8.wt, x=layer8.x, router_w=layer8.router_w, router_b=layer8.router_b, top_k=2,
                       num_experts_total=8, fmt="mxfp4-w4a8", batch=40, kernel="triton", cfg=(c16, dict(c16)))
    assert layer8._mma8 and layer16._mma and not layer16._mma8
    ids, tw = mg_route.route(layer8.x, layer8.router_w, layer8.router_b, 2)
    sids, eids, npp, counts = mg.moe_align(ids, 8, 8, 0)
    tw = tw.reshape(-1)
    a, a_s = mg.act_quant(layer8.x, per_group=False)
    for layer in (layer8, layer16):
        layer.inter_buf.fill_(float("nan"))
        layer._gemm1(a, a_s, tw, sids, eids, npp, counts)
    assert rel_err(layer8.inter_buf, layer16.inter_buf) < 2e-3
    a2, a2s = mg.act_quant(layer8.inter_buf, per_group=False)
    for layer in (layer8, layer16):
        layer.out_sorted.fill_(float("nan"))
        layer._gemm2(a2, a2s, tw, sids, eids, npp, counts)
    assert rel_err(layer8.out_sorted, layer16.out_sorted) < 2e-3


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("batch", [1, 16, 256])
@pytest.mark.parametrize("f16", [0, 1])
def test_gpu_mma8_real_shapes(batch, f16, monkeypatch):
    """gpt-oss-120b shapes, default configuration (the W4A8 kernel at decode; both builds), fresh seed;
    the W4A8 kernel also at batch 256, where the defaults take the W4A16 kernel."""
    from moeprof.models.kernels import moe_gemm as mg
    from moeprof.models.kernels import mx_cuda
    from moeprof.models.reference import ERROR_BOUNDS
    from helpers.mx_layers import real_shape_layer, reference_error

    if not mx_cuda.available():
        pytest.skip(mx_cuda.unavailable_reason())
    monkeypatch.setattr(mg, "W4A8_MMA_F16", f16)
    # the decode kernels up to 8 rows per expert (batch 256), all of it through the W4A8 kernel
    monkeypatch.setattr(mg, "W4A8_MMA_MAX_ROWS_PER_EXPERT", 8)
    monkeypatch.setattr(mg, "W4A8_MMA8_MAX_ROWS_PER_EXPERT", 8)
    layer = real_shape_layer("mxfp4-w4a8", batch, seed=37)
    assert layer._mma8 == (layer.m_per_expert <= 8)
    assert layer._mma8_f16 == bool(f16)
    err = reference_error(layer)
    assert math.isfinite(err) and err < ERROR_BOUNDS["mxfp4-w4a8"], (batch, err)
