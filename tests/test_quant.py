import pytest

torch = pytest.importorskip("torch")

from moeprof.models import quant as q  # noqa: E402


def test_e2m1_round_rne_and_saturation():
    x = torch.tensor([0.0, 0.24, 0.25, 0.26, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 5.1, 7.0, 100.0, -0.75, -3.0])
    got = q.e2m1_decode(q.e2m1_round(x))
    want = torch.tensor([0, 0, 0, .5, 1, 1, 2, 2, 4, 4, 6, 6, 6, -1, -3.0])
    assert torch.equal(got, want)


def test_mxfp4_scale_is_ocp():
    w = torch.zeros(1, 32)
    w[0, 0] = 5.0  # amax 5 -> floor(log2 5) = 2 -> shared_exp = 0 -> scale 2^0
    codes, s = q.quant_mxfp4(w)
    assert int(s[0, 0]) == 127
    assert q.dequant_mxfp4(codes, s)[0, 0] == 4.0  # 5 -> RNE tie to 4


def test_mxfp4_roundtrip_and_pack():
    torch.manual_seed(0)
    w = torch.randn(3, 16, 96)
    codes, s = q.quant_mxfp4(w)
    d = q.dequant_mxfp4(codes, s)
    assert ((d - w).norm() / w.norm()) < 0.15
    p = q.pack_mxfp4(codes)
    assert p.shape == (3, 16, 48)
    assert torch.equal(q.unpack_mxfp4(p), codes)
    assert torch.equal(q.dequant_packed_mxfp4(p, s), d)


def test_fp8_quantizers():
    torch.manual_seed(0)
    w = torch.randn(2, 200, 300)
    for qf, dqf in [(q.quant_fp8_rowwise, q.dequant_fp8_rowwise), (q.quant_fp8_blocks, q.dequant_fp8_blocks),
                    (q.quant_fp8_groups, q.dequant_fp8_groups)]:
        qq, s = qf(w)
        assert ((dqf(qq, s) - w).norm() / w.norm()) < 0.05


def test_mxfp4_layouts_roundtrip():
    torch.manual_seed(1)
    codes = torch.randint(0, 16, (2, 7, 128), dtype=torch.uint8)
    for layout in q.MX_LAYOUTS:
        p = q.pack_mxfp4(codes, layout)
        assert p.shape == (2, 7, 64) and p.dtype == torch.uint8
        assert torch.equal(q.unpack_mxfp4(p, layout), codes)
    # every lane bit belongs to exactly one element bit
    assert torch.equal(q.pack_mxfp4(torch.full((1, 32), 15, dtype=torch.uint8), "lanes"),
                       torch.full((1, 16), 255, dtype=torch.uint8))
    assert q.mx_layout("mxfp4") == "lanes" and q.mx_layout("mxfp4-w4a8") == "nibbles"


def _bf16_bits_to_f32(h):
    return (h.to(torch.int32) << 16).view(torch.float32)


def _lanes_asm_emulated(x, b):
    """The bit ops of moe_gemm's _e2m1_lanes_bf16_asm on int64 words (32-bit), b: bias word.
    Returns the four result words as fp32 pairs [..., 4, 2] (lo half, hi half)."""
    M = 0xFFFFFFFF
    qa = x & 0x81C081C0
    qb = (x << 3) & M & 0x81C081C0
    qc = (x << 6) & M & 0x81C081C0
    u = (x >> 4) & 0x00C000C0
    u |= (x >> 5) & 0x01000100
    u |= (x << 1) & M & 0x80008000
    outs = []
    for t in (qa, qb, qc, u):
        lo = _bf16_bits_to_f32(t & 0xFFFF) * _bf16_bits_to_f32(b & 0xFFFF)
        hi = _bf16_bits_to_f32(t >> 16) * _bf16_bits_to_f32((b >> 16) & 0xFFFF)
        outs.append(torch.stack([lo, hi], -1))
    return torch.stack(outs, -2)


def test_lanes_unpack_bit_ops_exact():
    """The PTX unpack's bit placement (emulated) gives E2M1 * 2^(S-127) in plane order, for the
    v2 loop (4 consecutive bytes per word) and the register-A regrouping (rows r, r+8 per word)."""
    torch.manual_seed(2)
    codes = torch.randint(0, 16, (8, 32), dtype=torch.uint8)
    codes[0] = torch.arange(32) % 16
    scale = torch.randint(100, 129, (8, 1), dtype=torch.uint8)
    want = q.dequant_mxfp4(codes, scale)                          # [8, 32]
    p = q.pack_mxfp4(codes, "lanes").to(torch.int64)              # [8, 16]
    bias = (scale.to(torch.int64) + 126) << 7                     # [8, 1]
    # v2 loop: word w = bytes 4w..4w+3 of one row
    words = p[:, 0::4] | (p[:, 1::4] << 8) | (p[:, 2::4] << 16) | (p[:, 3::4] << 24)   # [8, 4]
    r = _lanes_asm_emulated(words, bias | (bias << 16))          # [8, 4w, 4 outputs, 2]
    for w in range(4):
        got = r[:, w].reshape(8, 4, 2)
        assert torch.equal(got[:, 0], want[:, [4 * w, 4 * w + 1]])
        assert torch.equal(got[:, 1], want[:, [4 * w + 2, 4 * w + 3]])
        assert torch.equal(got[:, 2], want[:, [4 * w + 16, 4 * w + 17]])
        assert torch.equal(got[:, 3], want[:, [4 * w + 18, 4 * w + 19]])
    # register-A: low 16 bits = row 0's lane L, high 16 bits = row 1's lane L; after the prmt
    # regrouping, plane position 2L (+1) holds slot A (B), hi plane C (D)
    for lane in range(8):
        x = (p[0, 2 * lane] | (p[0, 2 * lane + 1] << 8)) | ((p[1, 2 * lane] | (p[1, 2 * lane + 1] << 8)) << 16)
        b = bias[0, 0] | (bias[1, 0] << 16)
        qs = _lanes_asm_emulated(x, b)                            # [4 slots, 2 rows]
        w, h = lane // 2, lane % 2
        for row in range(2):
            assert qs[0, row] == want[row, 4 * w + h] and qs[1, row] == want[row, 4 * w + 2 + h]
            assert qs[2, row] == want[row, 4 * w + 16 + h] and qs[3, row] == want[row, 4 * w + 18 + h]


def test_tiled_mx_layouts_roundtrip_and_padding():
    """K-tile-major weights [E, Kt, N, 64] and scales [E, Kt, N, 4] hold the row-major bytes, tile by
    tile, zero padded at the end of K (K = 2880: 22.5 tiles of 128)."""
    from moeprof.models import quant as q

    g = torch.Generator().manual_seed(3)
    e, n, k = 3, 40, 2880
    packed = torch.randint(0, 256, (e, n, k // 2), generator=g, dtype=torch.uint8)
    scales = torch.randint(100, 140, (e, n, k // 32), generator=g, dtype=torch.uint8)
    wt = q.tile_mx_weights(packed)
    st = q.tile_mx_scales(scales)
    assert wt.shape == (e, 23, n, 64) and st.shape == (e, 23, n, 4)
    assert torch.equal(q.untile_mx_weights(wt, k // 2), packed)
    assert torch.equal(q.untile_mx_scales(st, k // 32), scales)
    # element (expert, row, byte b) sits at tile b // 64, offset b % 64
    assert int(wt[1, 5, 7, 10]) == int(packed[1, 7, 5 * 64 + 10])
    assert int(st[2, 21, 9, 3]) == int(scales[2, 9, 21 * 4 + 3])
    # the half tile at the end is zero padding: unpacks to zero weights
    assert int(wt[:, 22, :, 32:].sum()) == 0
    assert int(st[:, 22, :, 2:].sum()) == 0
    assert wt.is_contiguous() and st.is_contiguous()
