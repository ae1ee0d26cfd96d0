"""Triton MoE kernels vs the fp32 reference (CPU: TRITON_INTERPRET=1 at tiny shapes; GPU: real shapes)."""

import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

HAS_CUDA = torch.cuda.is_available()
INTERP = os.environ.get("TRITON_INTERPRET", "0") == "1"
DEV = "cuda" if HAS_CUDA else "cpu"

from moeprof.models.reference import ERROR_BOUNDS as BOUNDS  # noqa: E402  (per-format rel. error bounds)

pytestmark = pytest.mark.skipif(not (HAS_CUDA or INTERP), reason="needs CUDA or TRITON_INTERPRET=1")


def _check(fmt, batch, *, h, i, e, k, routing="uniform", tp=1, ep=1, seed=0, kernel="triton"):
    from moeprof.models.reference import poisoned_call, rel_err
    from moeprof.models.layer import build_layer

    layer = build_layer(hidden_size=h, intermediate_size=i, num_experts=e, top_k=k, fmt=fmt, batch=batch,
                        tp=tp, ep=ep, routing=routing, seed=seed, device=DEV, kernel=kernel, cache_weights=False)
    out = poisoned_call(layer)
    assert torch.isfinite(out.float()).all(), "unwritten (NaN-poisoned) or non-finite output"
    ref = layer.reference()
    assert ref.abs().sum() > 0
    err = rel_err(out, ref)
    assert err < BOUNDS[fmt], f"{fmt} batch={batch}: rel err {err:.3e} >= {BOUNDS[fmt]}"
    return layer, err


FMTS = ["bf16", "fp8", "fp8-block", "mxfp4", "mxfp4-w4a8"]


@pytest.mark.parametrize("fmt", FMTS)
def test_tiny_uniform(fmt):
    # 8 experts, 13 tokens, top-2: ragged loads; K=96 (3 MX groups; not a multiple of 64 / 128)
    _check(fmt, 13, h=96, i=64, e=8, k=2, seed=1)


@pytest.mark.parametrize("per_group", [False, True])
def test_act_quant_as_bf16_holds_the_e4m3_values(per_group):
    """as_bf16 (for kernels that read bf16 activations) writes the same e4m3 values, converted by torch
    here, and the same scales: through the kernel and, on the CPU, the torch quantizer too."""
    from moeprof.models.kernels import moe_gemm as mg

    g = torch.Generator(device=DEV).manual_seed(5)
    x = (torch.randn(7, 300, generator=g, device=DEV) * 3).bfloat16()
    x[2] = 0          # a zero row (the scale's floor)
    x[4, 7] = 900.0   # one large value: the rest of the row far below it, some subnormal in e4m3
    for force in ((False, True) if INTERP else (False,)):
        q, s = mg.act_quant(x, per_group, force_kernel=force)
        qb, sb = mg.act_quant(x, per_group, force_kernel=force, as_bf16=True)
        assert q.dtype == torch.float8_e4m3fn and qb.dtype == torch.bfloat16
        assert torch.equal(qb, q.to(torch.bfloat16)), force
        assert torch.equal(sb, s), force


@pytest.mark.parametrize("fmt", ["bf16", "fp8-block", "mxfp4"])
def test_tiny_skew_empty_experts(fmt):
    # strong skew: most of the 16 experts get no token
    layer, _ = _check(fmt, 5, h=64, i=96, e=16, k=2, routing="skew:4", seed=2)
    assert layer.experts_touched < 16


@pytest.mark.parametrize("fmt", ["bf16", "mxfp4"])
def test_tiny_tp_ep(fmt):
    _check(fmt, 9, h=64, i=192, e=8, k=2, tp=2, seed=3)
    _check(fmt, 9, h=64, i=64, e=8, k=2, ep=2, seed=4)


def test_poison_detects_unwritten():
    """The poison check itself works: a NaN left in the output fails rel_err."""
    from moeprof.models.reference import rel_err

    a = torch.ones(4, 4)
    a[1, 2] = float("nan")
    assert rel_err(a, torch.ones(4, 4)) == float("inf")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("batch", [1, 32, 37, 1024])
def test_gpu_real_shapes(fmt, batch):
    layer, _ = _check(fmt, batch, h=2880, i=2880, e=32, k=4, seed=5)
    if fmt == "mxfp4-w4a8" and batch == 32:
        # 4 rows per expert: the W4A16 decode kernel on the quantizer's bf16-held e4m3 values
        assert layer._act_bf16 and layer._mma and not layer._mma8


# swapped A/B (MXV=2) and split-K configs, forced (the defaults pick them at real decode shapes only)
def _cfg(**kw):
    c = dict(BM=16, BN=16, BK=64, GROUP_M=1, num_warps=4, num_stages=1)
    c.update(kw)
    return c


@pytest.mark.parametrize("fmt,kw,routing,ep", [
    ("mxfp4", dict(MXV=2), "skew:3", 1),
    ("mxfp4", dict(MXV=2, SPLIT_K=2), "uniform", 2),
    ("mxfp4", dict(MXV=1, SPLIT_K=3), "skew:3", 1),
    ("mxfp4", dict(GPI=3), "skew:3", 1),            # no MXV given: the launcher runs the MXV=1 loop
    ("mxfp4", dict(BM=32, BN=32, BK=128, MXV=1), "uniform", 1),
    # row-major weights / scales (the layout before tiling; what WTILE=0 / STILE=0 select)
    ("mxfp4", dict(MXV=1, WTILE=0, STILE=0), "skew:3", 1),
    ("mxfp4", dict(MXV=1, WTILE=0), "uniform", 2),
    ("mxfp4", dict(MXV=1, STILE=0, SPLIT_K=2), "uniform", 1),
    ("mxfp4", dict(BK=128, num_warps=2, MXV=1), "skew:3", 1),   # BK = 128: one scale tile per step
    ("mxfp4", dict(BK=128, MXV=1, SPLIT_K=2), "uniform", 2),
    # swapped A/B, two K tiles per step (odd tile counts: K = 160 is 3 tiles of 64; split chunks of 2 and 1)
    ("mxfp4", dict(MXV=2, KPAIR=1), "skew:3", 1),
    ("mxfp4", dict(MXV=2, KPAIR=1, SPLIT_K=2), "uniform", 2),
    ("mxfp4", dict(MXV=2, KPAIR=1, WTILE=0, STILE=0), "uniform", 1),
    # bf16 / fp8 swapped A/B (weight rows as the MMA's M side); K = 160 ragged against BK = 64
    ("fp8", dict(BK=32, SWAP_AB=1), "skew:3", 1),
    ("fp8", dict(BK=64, SWAP_AB=1), "uniform", 2),
    ("fp8", dict(BK=32, SWAP_AB=1, SPLIT_K=2), "uniform", 1),
    ("bf16", dict(BK=64, SWAP_AB=1, SPLIT_K=3), "skew:3", 1),
    # mxfp4 prefill path: weights dequantized to bf16 by the kernel, then the bf16 GEMM
    ("mxfp4", dict(DEQUANT_BF16=1), "skew:3", 1),
    ("mxfp4", dict(DEQUANT_BF16=1, BK=32), "uniform", 2),
    ("fp8", dict(BK=32, SPLIT_K=2), "uniform", 1),
    # mxfp4-w4a8 prefill path: weights dequantized to e4m3 with a scale per row, then the fp8 GEMM
    ("mxfp4-w4a8", dict(DEQUANT_FP8=1), "skew:3", 1),
    ("mxfp4-w4a8", dict(DEQUANT_FP8=1, BK=32), "uniform", 2),
    # gate and up in one dot over interleaved weight rows (split after the loop); BN = 64 leaves the
    # second gate/up tile of I = 96 half past the end
    ("fp8", dict(BK=32, GU_ONE_DOT=1), "skew:3", 1),
    ("fp8", dict(BK=32, BN=64, GU_ONE_DOT=1), "uniform", 2),
    ("bf16", dict(BK=64, BN=32, GU_ONE_DOT=1, SPLIT_K=2), "uniform", 1),
    ("fp8-block", dict(BK=32, SPLIT_K=4), "skew:3", 1),
    # gemm1 as one plain GEMM over the gate|up rows, then the SwiGLU kernel; BN = 64 puts a tile across
    # the gate/up boundary of I = 96; through the bf16 dequantization (mxfp4) and the e4m3 one (w4a8)
    ("fp8", dict(BK=32, BN=64, GLU_APART=1), "skew:3", 1),
    ("bf16", dict(BK=64, GLU_APART=1), "uniform", 2),
    ("mxfp4", dict(DEQUANT_BF16=1, BN=64, GLU_APART=1), "uniform", 1),
    ("mxfp4-w4a8", dict(DEQUANT_FP8=1, GLU_APART=1), "skew:3", 2),
    # gemm1 over gate|up rows paired in blocks of BN/2, SwiGLU in its epilogue: I = 96 is 6 blocks of 16,
    # 3 of 32, and 2 of 64 with the last half padded
    ("fp8", dict(BK=32, BN=32, GU_PAIRED=1), "skew:3", 1),
    ("bf16", dict(BK=64, BN=64, GU_PAIRED=1), "uniform", 2),
    ("fp8", dict(BK=32, BN=128, GU_PAIRED=1), "uniform", 1),
    # mxfp4 prefill: the bf16 dequantization written in the paired order (not a default: not measured)
    ("mxfp4", dict(DEQUANT_BF16=1, BN=32, GU_PAIRED=1), "skew:3", 1),
    ("mxfp4", dict(DEQUANT_BF16=1, BN=128, GU_PAIRED=1), "uniform", 2),
    ("bf16", dict(BK=32, SPLIT_K=3), "uniform", 2),
])
def test_tiny_swap_ab_split_k(fmt, kw, routing, ep):
    """Split configs split both GEMMs (gemm1 -> fp32 gate|up + swiglu, gemm2 -> fused combine).
    K = 160 (5 MX groups; ragged against BK=64); skew leaves experts empty; ep=2 has foreign rows."""
    from moeprof.models.reference import poisoned_call, rel_err
    from moeprof.models.layer import build_layer

    c = _cfg(**kw)
    layer = build_layer(hidden_size=160, intermediate_size=96, num_experts=8, top_k=2, fmt=fmt, batch=7,
                        ep=ep, routing=routing, seed=9, device=DEV, cache_weights=False, cfg=(c, dict(c)))
    assert layer._split1 == layer._split2 == (c.get("SPLIT_K", 1) > 1)
    assert layer._dequant8 == bool(c.get("DEQUANT_FP8"))
    if fmt == "mxfp4":  # which operand layouts the kernel was handed
        assert (layer._w1.dim() == 4) == bool(c.get("WTILE", 1))
        assert (layer._s1.dim() == 4) == bool(c.get("STILE", 1))
    assert (layer.glu_buf is not None) == bool(c.get("GLU_APART"))
    out = poisoned_call(layer)
    assert torch.isfinite(out.float()).all()
    err = rel_err(out, layer.reference())
    assert err < BOUNDS[fmt], (fmt, kw, routing, ep, err)


def test_split_k_heuristic():
    from moeprof.models.kernels import moe_gemm as mg

    c = dict(BM=16, BN=64, BK=128)
    # batch 1 of gpt-oss-120b: 4 experts, 45 N tiles -> split; batch 64: 109 experts -> none
    assert mg.split_k_for(c, 2880, 2880, experts=4, slots=4) > 1
    assert mg.split_k_for(c, 2880, 2880, experts=109, slots=256) == 1
    assert mg.split_k_for(c, 2880, 2880, experts=None, slots=None) == 1


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("t,h,e,k", [(1, 96, 8, 2), (37, 160, 24, 4), (5, 64, 32, 1), (3, 1024, 24, 4)])
def test_fused_route_matches_torch(t, h, e, k, split):
    """The Triton router (kernels/route.py; one launch, or logits over expert blocks + top-k) picks the
    same experts as torch (reference.route), in the same order, with the same softmax weights; E = 24
    exercises the masked expert lanes, t = 37 three token blocks, H = 1024 four K chunks (split)."""
    from moeprof.models import reference
    from moeprof.models.kernels.route import route

    g = torch.Generator(device=DEV).manual_seed(t * 31 + e)
    x = torch.randn(t, h, generator=g, device=DEV).bfloat16()
    w = (torch.randn(e, h, generator=g, device=DEV) / h ** 0.5).bfloat16()
    b = torch.randn(e, generator=g, device=DEV) * 0.1
    ids, wts = route(x, w, b, k, split=split)
    rids, rwts = reference.route(x, w, b, k)
    assert ids.dtype == torch.int32 and ids.shape == (t, k)
    assert torch.equal(ids.cpu(), rids.cpu())
    assert torch.allclose(wts, rwts, rtol=1e-5, atol=1e-6)
    assert torch.allclose(wts.sum(-1), torch.ones(t, device=DEV))


def test_swap_ab_refused_for_other_formats():
    """SWAP_AB is the bf16 / fp8 loop's option (mxfp4 has MXV=2): asking it elsewhere is an error."""
    from moeprof.models.layer import build_layer

    c = _cfg(SWAP_AB=1)
    layer = build_layer(hidden_size=64, intermediate_size=64, num_experts=4, top_k=2, fmt="fp8-block", batch=3,
                        seed=1, device=DEV, cache_weights=False, cfg=(c, dict(c)))
    with pytest.raises(ValueError, match="SWAP_AB"):
        layer()
    for kw in (dict(GU_ONE_DOT=1), dict(GU_ONE_DOT=1, SWAP_AB=1)):   # the plain bf16 / fp8 loop's option
        c = _cfg(**kw)
        layer = build_layer(hidden_size=64, intermediate_size=64, num_experts=4, top_k=2,
                            fmt="fp8-block" if "SWAP_AB" not in kw else "fp8", batch=3, seed=1, device=DEV,
                            cache_weights=False, cfg=(c, dict(c)))
        with pytest.raises(ValueError, match="GU_ONE_DOT"):
            layer()


@pytest.mark.parametrize("big", [False, True])
def test_dequant_mx_bf16_matches_quant(big):
    """The prefill dequantizer (tiled "lanes" weights -> bf16) gives exactly quant.dequant_packed_mxfp4's
    values (both exact: E2M1 times a power of two fits bf16); K = 160 leaves a partial K tile; big:
    a scale byte above 128 (the kernel's BIG_SCALE path)."""
    from moeprof.models import quant as q
    from moeprof.models.kernels import moe_gemm as mg

    g = torch.Generator(device=DEV).manual_seed(7)
    w = torch.randn(3, 40, 160, generator=g, device=DEV)
    if big:
        w[1, 5, :32] *= 2.0 ** 10
    packed, scales = [], []
    for e in range(3):
        c, s = q.quant_mxfp4(w[e])
        packed.append(q.pack_mxfp4(c, "lanes"))
        scales.append(s)
    p, s = torch.stack(packed), torch.stack(scales)
    assert (int(s.max()) > 128) == big
    out = torch.full((3, 40, 160), float("nan"), dtype=torch.bfloat16, device=DEV)
    mg.dequant_mx_bf16(q.tile_mx_weights(p), q.tile_mx_scales(s), 160, out=out, big_scale=big)
    ref = torch.stack([q.dequant_packed_mxfp4(p[e], s[e], "lanes") for e in range(3)])
    assert torch.equal(out.float(), ref.float())
    # the same rows as gate|up (I = 20) written in the paired order, blocks of 8 (3 blocks, the last padded)
    paired = torch.zeros((3, 48, 160), dtype=torch.bfloat16, device=DEV)
    mg.dequant_mx_bf16(q.tile_mx_weights(p), q.tile_mx_scales(s), 160, out=paired, big_scale=big, pair=(20, 8))
    assert torch.equal(paired.float(), q.pair_gate_up_rows(ref.float(), 20, 8))


def test_dequant_mx_fp8_matches_quant():
    """The w4a8 prefill dequantizer: e4m3 values times the row scale 2^(Smax - 133) give exactly the
    MXFP4 values for groups within 2^14 of the row's largest scale; a group 2^20 below its row's
    largest rounds (relative to the row's largest value, the error stays below e4m3's 2^-9 step)."""
    from moeprof.models import quant as q
    from moeprof.models.kernels import moe_gemm as mg

    g = torch.Generator(device=DEV).manual_seed(8)
    w = torch.randn(2, 24, 160, generator=g, device=DEV)
    w[1, 3, 64:96] *= 2.0 ** -20          # one MX group far below its row's largest
    packed, scales = [], []
    for e in range(2):
        c, s = q.quant_mxfp4(w[e])
        packed.append(q.pack_mxfp4(c, "nibbles"))
        scales.append(s)
    p, s = torch.stack(packed), torch.stack(scales)
    smax = mg.mx_row_scale_exponents(s)
    assert smax.shape == (2, 24) and int(smax[1, 3]) == int(s[1, 3].max())
    out = torch.full((2, 24, 160), float("nan"), device=DEV).to(torch.float8_e4m3fn)
    mg.dequant_mx_fp8(p, s, smax, 160, out=out)
    got = out.float() * torch.exp2(smax.float() - 133.0)[..., None]
    ref = torch.stack([q.dequant_packed_mxfp4(p[e], s[e], "nibbles") for e in range(2)])
    near = (s.int() >= smax[..., None] - 14).repeat_interleave(32, dim=-1)
    assert not near[1, 3, 64:96].any() and near.float().mean() > 0.9
    assert torch.equal(got[near], ref[near])
    row_max = ref.abs().amax(dim=-1, keepdim=True).expand_as(ref)
    assert ((got - ref).abs()[~near] <= row_max[~near] * 2.0 ** -9).all()


def test_prefill_gemm1_tiles_by_rows_per_expert():
    """fp8 from 128 rows per expert and bf16 above 256: gemm1 over paired gate|up rows in one 256-wide
    tile (GU_PAIRED); the formats that dequantize their weights per call (plain row order) take the same
    tile with the SwiGLU kernel after it (GLU_APART); the down GEMM and shorter batches neither."""
    from moeprof.models.kernels import moe_gemm as mg

    cfg = lambda fmt, m, gated=True: mg.default_config(fmt, m, 2880, 2880, gated)
    assert cfg("fp8", 128.0).get("GU_PAIRED") == 1 and not cfg("fp8", 128.0).get("GLU_APART")
    assert not cfg("fp8", 64.0).get("GU_PAIRED") and not cfg("fp8", 128.0, False).get("GU_PAIRED")
    assert cfg("bf16", 512.0).get("GU_PAIRED") == 1 and not cfg("bf16", 256.0).get("GU_PAIRED")
    for fmt, m, flag in (("mxfp4-w4a8", 128.0, "DEQUANT_FP8"), ("mxfp4", 512.0, "DEQUANT_BF16")):
        c = cfg(fmt, m)
        assert c.get(flag) == 1 and c.get("GLU_APART") == 1 and "GU_PAIRED" not in c, (fmt, c)
    if not mg.INTERPRET:
        assert cfg("fp8", 128.0)["BN"] == cfg("bf16", 512.0)["BN"] == 256


def test_glu_apart_refused_for_mx_formats():
    from moeprof.models.layer import build_layer

    c = _cfg(GLU_APART=1)
    with pytest.raises(ValueError, match="GLU_APART"):
        build_layer(hidden_size=160, intermediate_size=96, num_experts=8, top_k=2, fmt="mxfp4", batch=7,
                    seed=9, device=DEV, cache_weights=False, cfg=(c, dict(c)))()


def test_pair_gate_up_rows_layout():
    """Row b*2h + j*h + r of the paired copy is gate (j = 0) or up (j = 1) row b*h + r, zero past I."""
    from moeprof.models import quant as q

    e, i, h = 2, 5, 2
    t = torch.arange(e * 2 * i * 3, dtype=torch.float32).reshape(e, 2 * i, 3)
    p = q.pair_gate_up_rows(t, i, h)
    assert p.shape == (e, 2 * 3 * h, 3)   # 3 blocks of 2 (5 rounded up to 6)
    for x in range(e):
        for b in range(3):
            for j in range(2):
                for r in range(h):
                    row = b * h + r
                    want = t[x, j * i + row] if row < i else torch.zeros(3)
                    assert torch.equal(p[x, b * 2 * h + j * h + r], want), (x, b, j, r)
    assert torch.equal(q.pair_gate_up_rows(t[:, :, 0], i, h), p[:, :, 0])   # 2-D (scales, bias) alike


def test_gu_paired_refused_for_mx_formats():
    from moeprof.models.layer import build_layer

    c = _cfg(GU_PAIRED=1)
    with pytest.raises(ValueError, match="GU_PAIRED"):
        build_layer(hidden_size=160, intermediate_size=96, num_experts=8, top_k=2, fmt="mxfp4", batch=7,
                    seed=9, device=DEV, cache_weights=False, cfg=(c, dict(c)))
