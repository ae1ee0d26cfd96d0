"""The prefill MXFP4 kernels (kernels/mx_wgmma.cu): their operand layouts on the CPU, the kernels on the GPU.

The CPU test does not trust the packer's description: it emulates what the kernel does with the bytes
(unpack_word's masks and shifts, the bf16x2 multiply by 2^(S-1) with the scale byte of the step's MX
group) and places the values where PTX's wgmma m64nNk16 register fragment for A says they sit (per warp,
that of mma.m16n8k16), against activations read in their natural K order (the kernel's shared memory
tile is the activation rows as they are). The GEMM that results must equal the dequantized weights times
the activations exactly (fp64).
"""

import math

import pytest

torch = pytest.importorskip("torch")

from moeprof.models import quant as q  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
M = 0x81C081C0


def _bf16(h: int) -> float:
    return torch.tensor([h - 0x10000 if h >= 0x8000 else h], dtype=torch.int16).view(torch.bfloat16).double().item()


def _words(w: torch.Tensor) -> torch.Tensor:
    """The lanes' little-endian 32-bit words: [Nt, Kc, 32, 16] bytes -> [Nt, Kc, 32, 4] (int64)."""
    by = w.to(torch.int64)
    return by[..., 0::4] | (by[..., 1::4] << 8) | (by[..., 2::4] << 16) | (by[..., 3::4] << 24)


def _dequantized_times(codes, scales, gated_half, act) -> torch.Tensor:
    """What an emulation must give: the dequantized weights in tile-row order (zero padding rows) times the
    activations, fp64."""
    rows = q.mma_tile_rows(codes.shape[0], gated_half)
    want = torch.zeros(rows.numel(), act.shape[0], dtype=torch.float64)
    ok = rows >= 0
    want[ok] = q.dequant_mxfp4(codes, scales).double()[rows[ok]] @ act.double().t()
    return want


def _emulate(w: torch.Tensor, s: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """[Nt * 16, tokens] in fp64 from the packed bytes (act [tokens, Kc * 64])."""
    nt, kc = w.shape[0], w.shape[1]
    words = _words(w)
    out = torch.zeros(nt * 16, act.shape[0], dtype=torch.float64)
    for t in range(nt):
        A = torch.zeros(16, kc * 64, dtype=torch.float64)
        for c in range(kc):
            for st in range(4):
                for lane in range(32):
                    r, qq = lane // 4, lane % 4
                    x = int(words[t, c, lane, st])
                    # scale bytes: (r, group 0), (r + 8, group 0), (r, group 1), (r + 8, group 1)
                    grp = st // 2
                    f_r = 2.0 ** (int(s[t, c, lane, 2 * grp]) - 1)
                    f_r8 = 2.0 ** (int(s[t, c, lane, 2 * grp + 1]) - 1)
                    ta = x & M
                    tb = (x << 3) & M
                    tc = (x << 6) & M
                    td = ((x >> 4) & 0x00C000C0) | ((x >> 5) & 0x01000100) | ((x << 1) & 0x80008000)
                    # a0 = ta (row r, k 2q, 2q+1), a1 = tc (r + 8, same), a2 = tb (r, 2q + 8, + 9),
                    # a3 = td (r + 8, 2q + 8, + 9); K of MMA step st = 64 c + 16 st + k
                    base = 64 * c + 16 * st
                    for v, f, row, col in ((ta, f_r, r, 2 * qq), (tc, f_r8, r + 8, 2 * qq),
                                           (tb, f_r, r, 2 * qq + 8), (td, f_r8, r + 8, 2 * qq + 8)):
                        v &= 0xFFFFFFFF
                        A[row, base + col] = _bf16(v & 0xFFFF) * f
                        A[row, base + col + 1] = _bf16(v >> 16) * f
        out[16 * t:16 * t + 16] = A @ act.double().t()
    return out


@pytest.mark.parametrize("n,k,gated_half", [(24, 128, None), (2 * 12, 64, 12), (16, 192, None)])
def test_emulated_kernel_matches_dequantized_weights(n, k, gated_half):
    """Rows not a multiple of 16 (padding rows), one to three chunks, the gated row order; codes cover
    every E2M1 value including 0.5 (subnormal bf16) and -0, and the two MX groups of a chunk get
    different scales."""
    g = torch.Generator().manual_seed(17)
    codes = torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8)
    codes[0, :16] = torch.arange(16, dtype=torch.uint8)
    codes[1, 32:48] = torch.arange(16, dtype=torch.uint8)
    scales = torch.randint(110, 129, (n, k // 32), generator=g, dtype=torch.uint8)
    tokens = 3
    act = torch.randn(tokens, k, generator=g).bfloat16()
    w, s = q.wg_mx_weights(codes, scales, gated_half)
    assert w.dtype == torch.uint8 and w.shape[2:] == (32, 16) and s.dtype == torch.uint8 and s.shape[2:] == (32, 4)
    got = _emulate(w, s, act)
    want = _dequantized_times(codes, scales, gated_half, act)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12), (got - want).abs().max()


def _e4m3_value(b: int) -> float:
    """An e4m3 byte's value from the format's definition (sign, 4 exponent bits with bias 7, 3 mantissa
    bits; exponent 0: subnormal m/8 * 2^-6)."""
    sign = -1.0 if b & 0x80 else 1.0
    e, m = (b >> 3) & 0xF, b & 7
    return sign * (m / 8 * 2.0 ** -6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7))


def _e4m3_group(words_tc: torch.Tensor, grp: int, regs) -> torch.Tensor:
    """One MX group's 16 x 32 weights of a tile and chunk (words_tc [32, 4]) as the kernel's e4m3 A operand
    holds them: regs(x, r, half) -> the lane's two registers (lo, hi) from its word x of row r + 8 half;
    PTX's wgmma m64nNk32 .e4m3 A fragment (per warp, that of mma.m16n8k32) puts lo's bytes at row
    r + 8 half, K 4 q .. 4 q + 3 and hi's at K 16 + 4 q .. (lane = 4 r + q)."""
    A = torch.zeros(16, 32, dtype=torch.float64)
    for lane in range(32):
        r, qq = lane // 4, lane % 4
        for half in range(2):   # words (grp, r), (grp, r + 8)
            lo, hi = regs(int(words_tc[lane, 2 * grp + half]), r, half)
            for byte in range(4):
                A[r + 8 * half, 4 * qq + byte] = _e4m3_value((lo >> (8 * byte)) & 0xFF)
                A[r + 8 * half, 16 + 4 * qq + byte] = _e4m3_value((hi >> (8 * byte)) & 0xFF)
    return A


def _emulate8(w: torch.Tensor, s: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """[Nt * 16, tokens] in fp64 from the e4m3 kernel's bytes: the unpack's masks and shifts on each word,
    the e4m3 values placed where PTX's wgmma m64nNk32 .e4m3 A fragment puts a lane's registers (per warp,
    that of mma.m16n8k32: register 0 row r, K 4 q .. 4 q + 3; 1 row r + 8; 2 / 3 the same at K + 16), and
    the kernel's scale arithmetic: the sums multiplied by 2^(S_prev - S) before each MX group and by
    2^(S + 6 - 127) after the last, S + 6 being the stored byte."""
    nt, kc = w.shape[0], w.shape[1]
    words = _words(w)
    act = act.double()
    out = torch.zeros(nt * 16, act.shape[0], dtype=torch.float64)
    for t in range(nt):
        acc = torch.zeros(16, act.shape[0], dtype=torch.float64)
        prev = None
        for c in range(kc):
            for grp in range(2):
                A = _e4m3_group(words[t, c], grp, lambda x, r, half: (
                    x & 0x9C9C9C9C, ((x >> 2) ^ (x << 2)) & 0xFFFFFFFF & 0x9C9C9C9C))
                # stored bytes S + 6 of rows r (index 2 grp) and r + 8 (2 grp + 1), the same for every q
                cur = torch.tensor([int(s[t, c, rr % 8, 2 * grp + rr // 8]) for rr in range(16)], dtype=torch.float64)
                if prev is not None:
                    acc = acc * (2.0 ** (prev - cur))[:, None]
                acc = acc + A @ act[:, 64 * c + 32 * grp: 64 * c + 32 * grp + 32].t()
                prev = cur
        out[16 * t:16 * t + 16] = acc * (2.0 ** (prev - 127))[:, None]
    return out


@pytest.mark.parametrize("n,k,gated_half", [(24, 128, None), (2 * 12, 64, 12), (16, 192, None)])
def test_emulated_e4m3_kernel_matches_dequantized_weights(n, k, gated_half):
    """The e4m3 prefill kernel's layout (quant.wg8_mx_weights) through _emulate8: every E2M1 value
    including 0.5 (an e4m3 subnormal) and -0, scales that differ between the groups of a row by up to 40
    octaves (the sums change units at every group), padding rows; equal to the dequantized weights times
    the activations exactly (fp64)."""
    g = torch.Generator().manual_seed(23)
    codes = torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8)
    codes[0, :16] = torch.arange(16, dtype=torch.uint8)
    codes[1, 32:48] = torch.arange(16, dtype=torch.uint8)
    scales = torch.randint(100, 141, (n, k // 32), generator=g, dtype=torch.uint8)
    scales[2, 0], scales[2, -1] = 100, 140
    tokens = 3
    act = torch.randn(tokens, k, generator=g).to(torch.float8_e4m3fn).double()   # e4m3 activation values
    w, s = q.wg8_mx_weights(codes, scales, gated_half)
    assert w.dtype == torch.uint8 and w.shape[2:] == (32, 16) and s.dtype == torch.uint8 and s.shape[2:] == (8, 4)
    got = _emulate8(w, s, act)
    want = _dequantized_times(codes, scales, gated_half, act)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12), (got - want).abs().max()


def test_e4m3_layout_refuses_k_not_a_multiple_of_64_and_measures_spread():
    codes = torch.zeros(16, 96, dtype=torch.uint8)
    with pytest.raises(ValueError, match="K % 64"):
        q.wg8_mx_weights(codes, torch.full((16, 3), 127, dtype=torch.uint8))
    sc = torch.full((4, 6), 120, dtype=torch.uint8)
    sc[1, 2], sc[3, 0] = 200, 90   # row 1 spans 80, row 3 spans 30: the largest of one row counts
    assert q.mx_scale_spread(sc) == 80
    assert q.mx_scale_spread(sc[:0]) == 0


def _e4m3_byte(v: float) -> int:
    """The e4m3 byte of a value that e4m3 holds exactly and normally (sign, exponent field e + 7, 3 mantissa
    bits), from the format's definition; 0 -> 0."""
    if v == 0:
        return 0
    s = 0x80 if v < 0 else 0
    m, e = math.frexp(abs(v))            # abs(v) = m * 2^e, 0.5 <= m < 1
    field, mant = e - 1 + 7, (m * 2 - 1) * 8
    assert 1 <= field <= 15 and mant == int(mant), v
    return s | (field << 3) | int(mant)


def _kernel_tables(qb: int) -> tuple[int, int]:
    """The two table words lut_word computes from byte Q, with the constants read from the kernel source."""
    import re

    from moeprof.models.kernels import mx_cuda

    src = mx_cuda.WG_SOURCE.read_text()
    out = []
    for name in ("t0", "t1"):
        m = re.search(name + r" = Q \* (0x[0-9A-Fa-f]+)u \+ \((0x[0-9A-Fa-f]+)u - (\d+)u \* (0x[0-9A-Fa-f]+)u\)", src)
        assert m, name
        mul, base, bias, mul2 = int(m[1], 16), int(m[2], 16), int(m[3]), int(m[4], 16)
        assert mul == mul2 and bias == q.WG8_LUT_Q_BIAS
        out.append((qb * mul + base - bias * mul) & 0xFFFFFFFF)
    return out[0], out[1]


def test_lut_tables_are_the_e4m3_bytes_of_the_scaled_magnitudes():
    """The kernel's two multiply-adds (lut_word, constants read from its source) give, for every stored
    byte Q, the e4m3 bytes of 0, 0.5, 1, 1.5 | 2, 3, 4, 6 times 2^(Q - 5), derived here from the e4m3
    definition."""
    for qb in range(q.WG8_LUT_SCALE_SPREAD + 1):
        t0, t1 = _kernel_tables(qb)
        f = 2.0 ** (qb - q.WG8_LUT_Q_BIAS)
        want = [_e4m3_byte(v * f) for v in (0, 0.5, 1, 1.5, 2, 3, 4, 6)]
        got = [(t0 >> (8 * i)) & 0xFF for i in range(4)] + [(t1 >> (8 * i)) & 0xFF for i in range(4)]
        assert got == want, (qb, got, want)


def _prmt(a: int, b: int, sel: int) -> int:
    """PTX prmt.b32 (default mode) with selector nibbles' bit 3 clear: byte i of the result is byte
    (sel >> 4 i) & 7 of b:a."""
    pool = [(a >> (8 * i)) & 0xFF for i in range(4)] + [(b >> (8 * i)) & 0xFF for i in range(4)]
    return sum(pool[(sel >> (4 * i)) & 7] << (8 * i) for i in range(4))


def _emulate8_lut(w: torch.Tensor, s: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """[Nt * 16, tokens] in fp64 from the table form's bytes: per word and its (row, group) byte Q the
    kernel's tables, selectors, prmt and sign bits, the e4m3 values placed as in _emulate8, the sums of
    each row times 2^(Sref - 127) at the end (Sref from the chunk after the last)."""
    nt, kc = w.shape[0], w.shape[1]
    words = _words(w)
    act = act.double()
    out = torch.zeros(nt * 16, act.shape[0], dtype=torch.float64)
    for t in range(nt):
        acc = torch.zeros(16, act.shape[0], dtype=torch.float64)
        for c in range(kc):
            for grp in range(2):
                def regs(x, r, half, t=t, c=c, grp=grp):
                    t0, t1 = _kernel_tables(int(s[t, c, r, 2 * grp + half]))
                    return (_prmt(t0, t1, x & 0x7777) | (x & 0x80808080),
                            _prmt(t0, t1, (x >> 16) & 0x7777) | ((x << 4) & 0x80808080))

                A = _e4m3_group(words[t, c], grp, regs)
                acc = acc + A @ act[:, 64 * c + 32 * grp: 64 * c + 32 * grp + 32].t()
        ref = torch.tensor([int(s[t, kc, rr % 8, rr // 8]) for rr in range(16)], dtype=torch.float64)
        out[16 * t:16 * t + 16] = acc * (2.0 ** (ref - 127))[:, None]
    return out


@pytest.mark.parametrize("n,k,gated_half", [(24, 128, None), (2 * 12, 64, 12), (16, 192, None)])
def test_emulated_e4m3_table_kernel_matches_dequantized_weights(n, k, gated_half):
    """The table form (quant.wg8_lut_mx_weights) through _emulate8_lut: every E2M1 value including 0.5
    and -0, rows whose scale bytes spread over the full WG8_LUT_SCALE_SPREAD, a row of the smallest bytes
    (0-2), padding rows; exact (fp64)."""
    g = torch.Generator().manual_seed(31)
    codes = torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8)
    codes[0, :16] = torch.arange(16, dtype=torch.uint8)
    codes[1, 32:48] = torch.arange(16, dtype=torch.uint8)
    scales = torch.randint(118, 124, (n, k // 32), generator=g, dtype=torch.uint8)
    scales[2, 0] = 118 + q.WG8_LUT_SCALE_SPREAD   # row 2 spans exactly the widest spread the form takes
    scales[2, -1] = 118
    scales[3] = torch.arange(k // 32, dtype=torch.uint8) % 3   # row 3: bytes 0-2 (its reference clamps to 1)
    tokens = 3
    act = torch.randn(tokens, k, generator=g).to(torch.float8_e4m3fn).double()
    w, s = q.wg8_lut_mx_weights(codes, scales, gated_half)
    assert w.shape[2:] == (32, 16) and s.shape == (w.shape[0], w.shape[1] + 1, 8, 4)
    got = _emulate8_lut(w, s, act)
    want = _dequantized_times(codes, scales, gated_half, act)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12), (got - want).abs().max()


def test_table_form_refuses_scales_beyond_its_spread():
    codes = torch.zeros(16, 64, dtype=torch.uint8)
    ok = torch.full((16, 2), 120, dtype=torch.uint8)
    assert q.wg8_lut_eligible(ok)
    wide = ok.clone()
    wide[3, 1] = 120 + q.WG8_LUT_SCALE_SPREAD + 1
    assert not q.wg8_lut_eligible(wide)
    with pytest.raises(ValueError, match="spread"):
        q.wg8_lut_mx_weights(codes, wide)
    # rows of the smallest bytes take the form too: their reference clamps to 1 (2^-126, a normal fp32)
    tiny = torch.tensor([[0, 3]] * 16, dtype=torch.uint8)
    assert q.wg8_lut_eligible(tiny)
    _, s = q.wg8_lut_mx_weights(codes, tiny)
    # Sref = 1; Q = S - Sref + 5
    assert s[0, 1, 0, 0] == 1 and s[0, 0, 0, 0] == 4 and s[0, 0, 0, 2] == 7


def test_layout_differs_from_the_decode_layout_only_in_k_order():
    """The same codes in both layouts: equal bytes where the K permutation is the identity (nowhere
    here, as the decode layout keeps one lane on one MX group), so the packers must disagree; and the
    decode packer's inverse does not recover the codes from the prefill bytes."""
    g = torch.Generator().manual_seed(5)
    codes = torch.randint(1, 16, (16, 64), generator=g, dtype=torch.uint8)
    scales = torch.full((16, 2), 127, dtype=torch.uint8)
    w_wg, _ = q.wg_mx_weights(codes, scales)
    w_mma, _ = q.mma_mx_weights(codes, scales)
    assert not torch.equal(w_wg, w_mma)
    back, _ = q.unmma_mx_weights(w_wg, torch.zeros(1, 1, 16, 2, dtype=torch.uint8), 16, 64)
    assert not torch.equal(back, codes)


def test_config_routes_prefill_to_the_kernel(monkeypatch):
    """With the CUDA kernels available (stubbed: this checks the routing), mxfp4 takes the decode kernel up
    to WG_MIN_ROWS_PER_EXPERT rows per expert and the prefill kernel above (narrow token tiles up to
    WG_FEW_ROWS_PER_EXPERT) when both K are multiples of 64, the dequantize path otherwise; the
    configuration names the variant the launcher builds."""
    from moeprof.models.kernels import moe_gemm as mg
    from moeprof.models.kernels import mx_cuda

    monkeypatch.setattr(mg, "INTERPRET", False)
    monkeypatch.setattr(mx_cuda, "available", lambda device=None: True)
    monkeypatch.setattr(mx_cuda, "wg_unavailable_reason", lambda device=None: None)
    m = 128
    cfg = mg.default_config("mxfp4", m, 2880, 2880, True, slots=int(m * 128), experts=128, local_experts=128)
    assert cfg["KERNEL"] == "wg"
    v = mx_cuda.variant_of(cfg)
    assert isinstance(v, mx_cuda.WgVariant) and v.NWG == mg.WG_SHAPE["NWG"] and v.BT == mg.WG_SHAPE["BT"]
    assert "-DWG_NWG=%d" % v.NWG in v.defines() and "-DWG_BT=128" in v.defines()
    few = mg.default_config("mxfp4", mg.WG_FEW_ROWS_PER_EXPERT, 2880, 2880, True, slots=16 * 128, experts=128,
                            local_experts=128)
    assert few["KERNEL"] == "wg" and mx_cuda.variant_of(few).BT == mg.WG_SHAPE_FEW["BT"] < v.BT
    at = mg.default_config("mxfp4", mg.WG_MIN_ROWS_PER_EXPERT, 2880, 2880, True, slots=8 * 128, experts=128,
                           local_experts=128)
    assert at["KERNEL"] == "mma"
    # K % 64 == 32 at prefill (128 rows per expert): the dequantize path
    odd = mg.default_config("mxfp4", 128, 2880, 2912, True, slots=128 * 128, experts=128, local_experts=128)
    assert odd.get("KERNEL") != "wg" and odd.get("DEQUANT_BF16") == 1
    # mxfp4-w4a8: the decode kernels up to W4A8_MMA_MAX_ROWS_PER_EXPERT, the prefill kernel up to
    # W4A8_WG_MAX_ROWS_PER_EXPERT, then its dequantize-to-e4m3 fp8 GEMM
    w8 = lambda m: mg.default_config("mxfp4-w4a8", m, 2880, 2880, True, slots=int(m * 128), experts=128,
                                     local_experts=128)
    assert w8(mg.W4A8_MMA_MAX_ROWS_PER_EXPERT)["KERNEL"] in ("mma", "mma8")
    assert w8(mg.W4A8_MMA_MAX_ROWS_PER_EXPERT * 2)["KERNEL"] == mg.W4A8_WG_KERNEL == "wg8"
    assert w8(mg.W4A8_WG_MAX_ROWS_PER_EXPERT)["KERNEL"] == "wg8"
    assert isinstance(mx_cuda.variant_of(w8(mg.W4A8_WG_MAX_ROWS_PER_EXPERT)), mx_cuda.WgVariant)
    # its CTA shapes by rows per expert (W4A8_WG8_SHAPES), the table form by default
    assert [w8(m)["BT"] for m in (8, 16, 32, 64, 128)] == [32, 32, 64, 64, 128]
    assert w8(32)["LUT"] == mg.W4A8_WG8_LUT == 1
    assert mx_cuda.variant_of(w8(128)) == mx_cuda.WgVariant(NWG=2, BT=128, S=5, MINB=2, IF=1)
    assert w8(512)["KERNEL"] == "wg8" and mx_cuda.variant_of(w8(64)).IF == 0
    big8 = w8(mg.W4A8_WG_MAX_ROWS_PER_EXPERT * 2)
    assert big8.get("DEQUANT_FP8") == 1 and "KERNEL" not in big8
    # no sm_90a build: the dequantize path
    monkeypatch.setattr(mx_cuda, "wg_unavailable_reason", lambda device=None: "build failed: test")
    assert mg.default_config("mxfp4", 128, 2880, 2880, True, slots=128 * 128, experts=128,
                             local_experts=128).get("DEQUANT_BF16") == 1
    monkeypatch.setattr(mx_cuda, "wg_unavailable_reason", lambda device=None: None)
    for fmt in ("bf16", "fp8"):
        assert mg.default_config(fmt, m, 2880, 2880, True, slots=int(m * 128), experts=128,
                                 local_experts=128).get("KERNEL") != "wg"


def test_shared_memory_matches_the_kernel_formula():
    """Stage bytes written out by hand for the default shape: 128 token rows x 128 bytes of activations,
    8 warps x (512 bytes of weights + 128 of scales) = 21504, already a multiple of 1024; 4 stages plus
    the 1024 that align the first. Two CTAs of it fit an H200 SM's 228 KB."""
    from moeprof.models.kernels import mx_cuda

    assert mx_cuda.wg_smem_bytes(mx_cuda.WgVariant(NWG=2, BT=128, S=4)) == 4 * 21504 + 1024
    # one warpgroup: 16384 + 4 * 640 = 18944 -> 19456 (19 x 1024)
    assert mx_cuda.wg_smem_bytes(mx_cuda.WgVariant(NWG=1, BT=128, S=3)) == 3 * 19456 + 1024
    assert mx_cuda.WgVariant(NWG=2).threads() == 256
    assert 2 * (mx_cuda.wg_smem_bytes(mx_cuda.WgVariant()) + 1024) <= 228 * 1024
    # e4m3: 128 rows x 64 bytes + 8 x (512 + 32) = 12544 -> 13312 (13 x 1024)
    assert mx_cuda.wg_smem_bytes(mx_cuda.WgVariant(NWG=2, BT=128, S=4), e4m3=True) == 4 * 13312 + 1024


# ----------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("shape", [dict(), dict(NWG=1, S=2, MINB=3), dict(BT=64), dict(NWG=4, S=3, MINB=1),
                                   dict(BT=32, S=6)])
@pytest.mark.parametrize("case", ["crowded", "ep", "big", "w4a8"])
def test_gpu_wg_kernel_against_reference(shape, case):
    """Small shapes with K = 192 / 128 (three and two chunks): skewed routing so that experts hold 0 to
    several hundred rows (passes of every width, a last pass mostly padding), EP foreign rows, a scale
    byte above 128 (the two-step multiply)."""
    from moeprof.models.kernels import moe_gemm as mg
    from moeprof.models.kernels import mx_cuda
    from moeprof.models.layer import build_layer
    from moeprof.models.reference import ERROR_BOUNDS
    from helpers.mx_layers import reference_error

    if not mx_cuda.available():
        pytest.skip(mx_cuda.unavailable_reason())
    c = mg.wg_config(**shape)
    kw = dict(hidden_size=192, intermediate_size=128, num_experts=8, top_k=2, fmt="mxfp4", batch=700,
              routing="skew:2", seed=19, device="cuda", cache_weights=False, cfg=(c, dict(c)))
    if case == "ep":
        kw.update(ep=2, routing="uniform", batch=301)
    if case == "w4a8":   # e4m3 activations (exact in bf16) with their row scales applied in the epilogue
        kw.update(fmt="mxfp4-w4a8")
    layer = build_layer(**kw)
    if case == "big":
        from helpers.mx_layers import with_scale_bytes

        def big(wt):
            wt.w1_s[0, :4, 0] = 131
            wt.w2_s[1, :3, 1] = 133

        layer = with_scale_bytes(layer, "wg", (c, dict(c)), big)
        assert layer._big
    assert layer._wg
    # w4a8: the quantizer writes the e4m3 values as bf16 for this kernel
    assert layer._act_bf16 == (case == "w4a8")
    err = reference_error(layer, finite_outputs=True)
    assert err < ERROR_BOUNDS[kw["fmt"]], (shape, case, err)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("shape", [dict(), dict(NWG=1, S=2, MINB=3), dict(BT=64), dict(NWG=4, S=3, MINB=1),
                                   dict(BT=32, S=6), dict(IF=1), dict(IF=1, S=5)])
@pytest.mark.parametrize("case", ["crowded", "ep", "spread", "too-wide", "lut-edge"])
@pytest.mark.parametrize("lut", [0, 1])
def test_gpu_wg8_kernel_against_reference(shape, case, lut):
    """The e4m3 prefill kernels (mxfp4-w4a8, cfg KERNEL "wg8"; LUT=1: the table form) on small shapes as
    above; "spread": rows whose scale bytes differ by WG8_SCALE_SPREAD (the widest the rescaling kernel
    takes, the sums changing units by 2^96 between two groups; beyond the table form, which must give way
    to it); "too-wide": one byte further, so the layer must take the bf16 kernel; "lut-edge": a row spread
    over exactly WG8_LUT_SCALE_SPREAD, which the table form takes."""
    if lut == 0 and case == "lut-edge":
        pytest.skip("the table form's edge")
    from moeprof.models import quant
    from moeprof.models.kernels import moe_gemm as mg
    from moeprof.models.kernels import mx_cuda
    from moeprof.models.layer import build_layer
    from moeprof.models.reference import ERROR_BOUNDS
    from helpers.mx_layers import reference_error

    if not mx_cuda.available():
        pytest.skip(mx_cuda.unavailable_reason())
    c = mg.wg_config(kernel="wg8", LUT=lut, **shape)
    kw = dict(hidden_size=192, intermediate_size=128, num_experts=8, top_k=2, fmt="mxfp4-w4a8", batch=700,
              routing="skew:2", seed=29, device="cuda", cache_weights=False, cfg=(c, dict(c)))
    if case == "ep":
        kw.update(ep=2, routing="uniform", batch=301)
    layer = build_layer(**kw)
    if case in ("spread", "too-wide"):
        from helpers.mx_layers import with_scale_bytes

        extra = 0 if case == "spread" else 1

        def widen(wt):
            # (the reference dequantizes the same bytes.) Gate row 5 of expert 0: its last group SPREAD
            # above the row's smallest byte, with zero codes: the sums drop by up to 2^-96 before it and
            # must come back exact. Down row 3 of expert 1: its last group SPREAD below the row's largest:
            # the sums grow by up to 2^96 before it. Both outputs stay of ordinary size.
            wt.w1_s[0, 5, -1] = int(wt.w1_s[0, 5, :-1].min()) + quant.WG8_SCALE_SPREAD + extra
            wt.w1[0, 5, -16:] = 0   # the last MX group's 32 codes (16 bytes in either packing)
            wt.w2_s[1, 3, -1] = int(wt.w2_s[1, 3, :-1].max()) - quant.WG8_SCALE_SPREAD - extra

        layer = with_scale_bytes(layer, "wg8", (c, dict(c)), widen)
    if case == "lut-edge":
        from helpers.mx_layers import with_scale_bytes

        def edge(wt):
            # row 5 of expert 0's gate rows: its last group WG8_LUT_SCALE_SPREAD below its largest byte
            wt.w1_s[0, 5, -1] = int(wt.w1_s[0, 5, :-1].max()) - quant.WG8_LUT_SCALE_SPREAD

        layer = with_scale_bytes(layer, "wg8", (c, dict(c)), edge)
    assert layer._wg8 == (case != "too-wide") and layer._wg == (case == "too-wide")
    assert layer._wg8_lut == bool(lut and case in ("crowded", "ep", "lut-edge"))
    err = reference_error(layer, finite_outputs=True)
    assert err < ERROR_BOUNDS[kw["fmt"]], (shape, case, err)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("batch", [256, 512, 1024, 4096])
def test_gpu_wg8_real_shapes(batch):
    """gpt-oss-120b shapes, mxfp4-w4a8's default configuration (the e4m3 prefill kernel), fresh seed."""
    from moeprof.models.kernels import mx_cuda
    from moeprof.models.reference import ERROR_BOUNDS
    from helpers.mx_layers import real_shape_layer, reference_error

    if not mx_cuda.available():
        pytest.skip(mx_cuda.unavailable_reason())
    layer = real_shape_layer("mxfp4-w4a8", batch, seed=41)
    assert layer._wg8 and layer._wg8_lut == bool(layer.cfg1.get("LUT"))
    err = reference_error(layer)
    assert math.isfinite(err) and err < ERROR_BOUNDS["mxfp4-w4a8"], (batch, err)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("batch", [4096, 16384])
def test_gpu_wg_real_shapes(batch):
    """gpt-oss-120b shapes, the default configuration (the prefill kernel), fresh seed."""
    from moeprof.models.kernels import mx_cuda
    from moeprof.models.reference import ERROR_BOUNDS
    from helpers.mx_layers import real_shape_layer, reference_error

    if not mx_cuda.available():
        pytest.skip(mx_cuda.unavailable_reason())
    layer = real_shape_layer("mxfp4", batch, seed=37)
    assert layer._wg
    err = reference_error(layer)
    assert math.isfinite(err) and err < ERROR_BOUNDS["mxfp4"], (batch, err)


def test_kernel_sources_ship_with_the_package():
    """Both CUDA sources and every file they include match the package-data patterns (an installed
    package compiles them on first use)."""
    import fnmatch
    import re
    import tomllib
    from pathlib import Path

    from moeprof.models.kernels import mx_cuda

    root = Path(__file__).resolve().parent.parent
    pats = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["moeprof"]
    for src in (mx_cuda.SOURCE, mx_cuda.WG_SOURCE):
        names = [src.name] + re.findall(r'#include "([^"]+)"', src.read_text())
        assert len(names) >= 2, src   # each includes the shared header
        for name in names:
            rel = f"models/kernels/{name}"
            assert (src.parent / name).is_file() and any(fnmatch.fnmatch(rel, p) for p in pats), rel
