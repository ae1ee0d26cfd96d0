import pytest

torch = pytest.importorskip("torch")

from moeprof.profiler import quant as q  # noqa: E402


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
