"""One MoE layer with GPT-OSS semantics, at real shapes, in one weight format, ready to time.

``build_layer(...)`` makes seeded synthetic weights (one bf16 master set, quantized per format with
the real quantizers of models/quant.py), a seeded input batch and its routing, and returns a
``MoeLayer`` whose ``__call__`` runs one layer call (route, sort, quant, gemm1(+act), gemm2,
combine) through the chosen implementation:

  kernel="triton"         moeprof's Triton grouped GEMMs (models/kernels/moe_gemm.py)
  kernel="torch-grouped"  torch._grouped_mm (bf16) / torch._scaled_grouped_mm (fp8 rowwise)
  kernel="torch-loop"     naive per-expert loop of torch matmuls (bf16 weights)

Sharding: one rank's shard. tp splits the intermediate dim (rank 0 holds I/tp columns of gate/up and
rows of down; it adds the down bias, the other ranks would not). ep splits the experts (rank 0 holds
experts [0, E/ep)); tokens routed elsewhere contribute zeros to this rank's partial output.
MXFP4 needs K % 32 == 0: where I/tp is not, the shard is zero-padded up to a multiple of 32 (exact;
the padding's bytes are counted in weight_bytes_read).

Routing: "uniform" (random router, logits ~ N(0, 1)) or "skew:<s>" / "zipf:<s>" (adds -s*ln(1+e) to
expert e's router bias, i.e. scales its odds by (1+e)^-s: expert 0 hottest, the Zipf shape that the
cost model's zipf:<s> assumes, here on top of the random logits). Seeded: same seed -> same weights, input and routing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from moeprof.models.quant import FORMATS

# formats whose GEMMs read e4m3 activations (quantized per row, or per 128 channels for fp8-block)
FP8_ACTIVATION_FORMATS = ("fp8", "fp8-block", "mxfp4-w4a8")
from moeprof.models.routing import parse_skew

def model_shapes(model) -> dict:
    """hidden_size, intermediate_size, num_experts, top_k of a shape dict, a MoeModel or a preset name/config path."""
    if isinstance(model, dict):
        return dict(model)
    if isinstance(model, str):
        from moeprof.roofline.shapes import get_model

        model = get_model(model)
    return dict(hidden_size=model.hidden_size, intermediate_size=model.intermediate_size,
                num_experts=model.num_experts, top_k=model.top_k)


# ----------------------------------------------------------------------------- weights
@dataclass
class ExpertWeights:
    fmt: str
    num_experts: int          # local experts
    hidden: int               # H
    inter: int                # I (shard, padded)
    w1: object                # see kernels/moe_gemm.py for layouts
    w1_s: object
    b1: object                # fp32 [E, 2I]
    w2: object
    w2_s: object
    b2: object                # fp32 [E, H]
    per_expert_bytes: int
    extra: dict = field(default_factory=dict)


def _master(e_local, h, i_shard, i_pad, seed, device, expert_offset):
    """bf16 master weights of the shard, generated per expert from (seed, global expert id)."""
    import torch

    w1 = torch.zeros(e_local, 2 * i_pad, h, dtype=torch.bfloat16, device=device)
    w2 = torch.zeros(e_local, h, i_pad, dtype=torch.bfloat16, device=device)
    b1 = torch.zeros(e_local, 2 * i_pad, dtype=torch.float32, device=device)
    b2 = torch.zeros(e_local, h, dtype=torch.float32, device=device)
    for e in range(e_local):
        g = torch.Generator(device=device)
        g.manual_seed(seed * 100003 + 17 * (e + expert_offset) + 1)
        w1[e, :i_shard] = (torch.randn(i_shard, h, generator=g, device=device) * (1.5 / math.sqrt(h))).bfloat16()
        w1[e, i_pad:i_pad + i_shard] = (torch.randn(i_shard, h, generator=g, device=device) * (1.5 / math.sqrt(h))).bfloat16()
        w2[e, :, :i_shard] = (torch.randn(h, i_shard, generator=g, device=device) * (1.0 / math.sqrt(i_shard))).bfloat16()
        b1[e, :i_shard] = torch.randn(i_shard, generator=g, device=device) * 0.1
        b1[e, i_pad:i_pad + i_shard] = torch.randn(i_shard, generator=g, device=device) * 0.1
        b2[e] = torch.randn(h, generator=g, device=device) * 0.1
    return w1, b1, w2, b2


def quantize_weights(fmt, w1, b1, w2, b2) -> ExpertWeights:
    import torch

    from moeprof.models import quant as q

    e, two_i, h = w1.shape
    i = two_i // 2
    bias_bytes = (two_i + h) * 2  # biases stored bf16 in checkpoints; we keep fp32 copies but count bf16
    if fmt == "bf16":
        return ExpertWeights(fmt, e, h, i, w1.contiguous(), None, b1, w2.contiguous(), None, b2,
                             (two_i * h + h * i) * 2 + bias_bytes)
    if fmt == "fp8":
        q1 = torch.empty_like(w1, dtype=torch.float8_e4m3fn)
        s1 = torch.empty(e, two_i, dtype=torch.float32, device=w1.device)
        q2 = torch.empty_like(w2, dtype=torch.float8_e4m3fn)
        s2 = torch.empty(e, h, dtype=torch.float32, device=w1.device)
        for x in range(e):
            q1[x], s1[x] = q.quant_fp8_rowwise(w1[x])
            q2[x], s2[x] = q.quant_fp8_rowwise(w2[x])
        return ExpertWeights(fmt, e, h, i, q1, s1, b1, q2, s2, b2,
                             (two_i * h + h * i) + (two_i + h) * 4 + bias_bytes)
    if fmt == "fp8-block":
        nbi, nbk, nbh = -(-i // 128), -(-h // 128), -(-h // 128)
        q1 = torch.empty_like(w1, dtype=torch.float8_e4m3fn)
        s1 = torch.empty(e, 2 * nbi, nbk, dtype=torch.float32, device=w1.device)
        q2 = torch.empty_like(w2, dtype=torch.float8_e4m3fn)
        s2 = torch.empty(e, nbh, -(-i // 128), dtype=torch.float32, device=w1.device)
        for x in range(e):
            q1[x, :i], s1[x, :nbi] = q.quant_fp8_blocks(w1[x, :i])
            q1[x, i:], s1[x, nbi:] = q.quant_fp8_blocks(w1[x, i:])
            q2[x], s2[x] = q.quant_fp8_blocks(w2[x])
        return ExpertWeights(fmt, e, h, i, q1, s1, b1, q2, s2, b2,
                             (two_i * h + h * i) + (s1[0].numel() + s2[0].numel()) * 4 + bias_bytes)
    if fmt in ("mxfp4", "mxfp4-w4a8"):
        p1 = torch.empty(e, two_i, h // 2, dtype=torch.uint8, device=w1.device)
        s1 = torch.empty(e, two_i, h // 32, dtype=torch.uint8, device=w1.device)
        p2 = torch.empty(e, h, i // 2, dtype=torch.uint8, device=w1.device)
        s2 = torch.empty(e, h, i // 32, dtype=torch.uint8, device=w1.device)
        for x in range(e):
            c, s1[x] = q.quant_mxfp4(w1[x])
            p1[x] = q.pack_mxfp4(c, q.mx_layout(fmt))
            c, s2[x] = q.quant_mxfp4(w2[x])
            p2[x] = q.pack_mxfp4(c, q.mx_layout(fmt))
        # largest E8M0 byte: the kernel's folded-scale unpack is exact up to 128 (see moe_gemm)
        smax = int(max(int(s1.max()), int(s2.max()))) if e else 0
        # largest spread of one row's E8M0 bytes: the e4m3 prefill kernels take rows within
        # quant.WG8_SCALE_SPREAD, their table form within quant.WG8_LUT_SCALE_SPREAD
        spread = max(q.mx_scale_spread(s1), q.mx_scale_spread(s2))
        lut_ok = q.wg8_lut_eligible(s1) and q.wg8_lut_eligible(s2)
        return ExpertWeights(fmt, e, h, i, p1, s1, b1, p2, s2, b2,
                             (two_i * h + h * i) // 2 + (two_i * h + h * i) // 32 + bias_bytes,
                             extra=dict(mx_scale_max=smax, mx_scale_spread=spread, mx_wg8_lut_ok=lut_ok,
                                        mx_layout=q.mx_layout(fmt),
                                        # the kernel's copy of the scales, K-tile-major (moe_gemm STILE)
                                        **({"w1_s_tiles": q.tile_mx_scales(s1), "w2_s_tiles": q.tile_mx_scales(s2),
                                            "w1_tiles": q.tile_mx_weights(p1), "w2_tiles": q.tile_mx_weights(p2)}
                                           if fmt == "mxfp4" else {})))
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")


def dequantize_expert(wt: ExpertWeights, e: int):
    """fp32 (w1 [2I, H], b1, w2 [H, I], b2) of local expert e, exactly as the kernels see them."""
    from moeprof.models import quant as q

    f = wt.fmt
    if f == "bf16":
        w1, w2 = wt.w1[e].float(), wt.w2[e].float()
    elif f == "fp8":
        w1, w2 = q.dequant_fp8_rowwise(wt.w1[e], wt.w1_s[e]), q.dequant_fp8_rowwise(wt.w2[e], wt.w2_s[e])
    elif f == "fp8-block":
        i = wt.inter
        nbi = -(-i // 128)
        import torch

        w1 = torch.cat([q.dequant_fp8_blocks(wt.w1[e, :i], wt.w1_s[e, :nbi]),
                        q.dequant_fp8_blocks(wt.w1[e, i:], wt.w1_s[e, nbi:])])
        w2 = q.dequant_fp8_blocks(wt.w2[e], wt.w2_s[e])
    else:
        lay = wt.extra.get("mx_layout", q.mx_layout(f))
        w1 = q.dequant_packed_mxfp4(wt.w1[e], wt.w1_s[e], lay)
        w2 = q.dequant_packed_mxfp4(wt.w2[e], wt.w2_s[e], lay)
    return w1, wt.b1[e], w2, wt.b2[e]


def _mma_operands(wt: ExpertWeights, kernel: str = "mma") -> None:
    """Add a CUDA MXFP4 kernel's operand layouts to wt.extra, once: kernel "mma" (bf16 activations,
    quant.mma_mx_weights: w1_mma, s1_mma, ...), "mma8" (e4m3 activations, quant.mma8_mx_weights:
    w1_mma8, s1_mma8, ...), "wg" (the prefill kernel, quant.wg_mx_weights: w1_wg, s1_wg, ...), "wg8"
    (its e4m3 kernels, quant.wg8_mx_weights: w1_wg8, s1_wg8, ...) or "wg8l" (their table form,
    quant.wg8_lut_mx_weights: w1_wg8l, ...)."""
    import torch

    from moeprof.models import quant as q

    suffix = kernel if kernel in ("mma8", "wg", "wg8", "wg8l") else "mma"
    if f"w1_{suffix}" in wt.extra:
        return
    pack = {"mma8": q.mma8_mx_weights, "wg": q.wg_mx_weights, "wg8": q.wg8_mx_weights,
            "wg8l": q.wg8_lut_mx_weights}.get(kernel, q.mma_mx_weights)
    lay = wt.extra.get("mx_layout", "lanes")
    parts = {f"w1_{suffix}": [], f"s1_{suffix}": [], f"w2_{suffix}": [], f"s2_{suffix}": []}
    for x in range(wt.num_experts):
        w, s = pack(q.unpack_mxfp4(wt.w1[x], lay), wt.w1_s[x], gated_half=wt.inter)
        parts[f"w1_{suffix}"].append(w)
        parts[f"s1_{suffix}"].append(s)
        w, s = pack(q.unpack_mxfp4(wt.w2[x], lay), wt.w2_s[x])
        parts[f"w2_{suffix}"].append(w)
        parts[f"s2_{suffix}"].append(s)
    for name, ts in parts.items():
        wt.extra[name] = torch.stack(ts).contiguous()


_WEIGHT_CACHE: dict = {}


def get_weights(*, fmt, hidden_size, intermediate_size, num_experts, tp, ep, seed, device, cache=True):
    key = (fmt, hidden_size, intermediate_size, num_experts, tp, ep, seed, str(device))
    if cache and key in _WEIGHT_CACHE:
        return _WEIGHT_CACHE[key]
    if intermediate_size % tp or num_experts % ep:
        from moeprof.errors import MoeprofError

        raise MoeprofError(f"tp={tp} must divide intermediate_size and ep={ep} num_experts")
    i_shard = intermediate_size // tp
    i_pad = i_shard
    if fmt.startswith("mxfp4"):
        i_pad = -(-i_shard // 32) * 32
        if hidden_size % 32:
            from moeprof.errors import MoeprofError

            raise MoeprofError(f"mxfp4 needs hidden_size % 32 == 0 (got {hidden_size})")
    e_local = num_experts // ep
    master = _master(e_local, hidden_size, i_shard, i_pad, seed, device, 0)
    wt = quantize_weights(fmt, *master)
    del master
    if cache:
        _WEIGHT_CACHE[key] = wt
    return wt


# ----------------------------------------------------------------------------- layer
class MoeLayer:
    def __init__(self, *, wt: ExpertWeights, x, router_w, router_b, top_k, num_experts_total,
                 fmt, batch, kernel, expert_offset=0, cfg=None, routed=None):
        import torch

        from moeprof.models import reference

        self.wt, self.x, self.router_w, self.router_b = wt, x, router_w, router_b
        self.top_k, self.fmt, self.batch, self.kernel = top_k, fmt, batch, kernel
        self.num_experts_total = num_experts_total
        self.expert_offset = expert_offset
        # routed: (ids, weights) given by the caller (rows dispatched to this rank by expert parallelism)
        self.routed = routed
        ids = routed[0] if routed is not None else reference.route(x, router_w, router_b, top_k)[0]
        local = ids.long() - expert_offset
        local = local[(local >= 0) & (local < wt.num_experts)]
        self.experts_touched = int(torch.unique(local).numel())
        self.weight_bytes_read = self.experts_touched * wt.per_expert_bytes
        self.kernel_name = {"triton": "moeprof-triton", "torch-grouped": "torch-grouped-mm",
                            "torch-loop": "torch-loop"}.get(kernel, kernel)
        h, i = wt.hidden, wt.inter
        # only the local share of slots does work
        self.flops = 2 * int(local.numel()) * (h * 2 * i + i * h)
        m_per_expert = max(1.0, local.numel() / max(1, wt.num_experts))
        self.m_per_expert = m_per_expert
        if kernel == "triton":
            from moeprof.models.kernels import moe_gemm as mg

            slots = int(local.numel())
            et = self.experts_touched
            le = wt.num_experts
            self.cfg1 = dict(cfg[0]) if cfg else mg.default_config(fmt, m_per_expert, i, h, True, slots=slots, experts=et,
                                                                    local_experts=le)
            self.cfg2 = dict(cfg[1]) if cfg else mg.default_config(fmt, m_per_expert, h, i, False, slots=slots, experts=et,
                                                                    local_experts=le)
            self.cfg2["BM"] = self.cfg1["BM"]
        self._big = wt.extra.get("mx_scale_max", 0) > 128
        # mxfp4 decode through a CUDA kernel (kernels/mx_mma.cu): cfg KERNEL "mma" (bf16 activations) or
        # "mma8" (mxfp4-w4a8: the e4m3 activations read as they are); its operand copies of the weights
        mma_kernel = self.cfg1.get("KERNEL") if kernel == "triton" else None
        if kernel == "triton" and mma_kernel != self.cfg2.get("KERNEL"):
            raise ValueError("both GEMMs of a layer run the same CUDA kernel or neither (cfg KERNEL)")
        if mma_kernel == "mma8":
            from moeprof.models import quant as q

            if fmt != "mxfp4-w4a8":
                raise ValueError(f"cfg KERNEL=mma8 reads e4m3 activations (mxfp4-w4a8), not {fmt}")
            if wt.extra.get("mx_scale_max", 0) > q.MMA8_SCALE_MAX:
                # E8M0 bytes above the W4A8 layout's range: the W4A16 kernel (two-step scale) instead
                mma_kernel = self.cfg1["KERNEL"] = self.cfg2["KERNEL"] = "mma"
        if mma_kernel == "wg8":
            from moeprof.models import quant as q

            if fmt != "mxfp4-w4a8":
                raise ValueError(f"cfg KERNEL=wg8 reads e4m3 activations (mxfp4-w4a8), not {fmt}")
            if (wt.extra.get("mx_scale_max", 0) > q.MMA8_SCALE_MAX
                    or wt.extra.get("mx_scale_spread", 0) > q.WG8_SCALE_SPREAD):
                # scales the e4m3 kernels do not take: the bf16 prefill kernel on converted activations
                mma_kernel = self.cfg1["KERNEL"] = self.cfg2["KERNEL"] = "wg"
            elif self.cfg1.get("LUT", 0) and not wt.extra.get("mx_wg8_lut_ok", False):
                # rows whose scales spread beyond the table form: the sums rescaled per group instead
                self.cfg1["LUT"] = self.cfg2["LUT"] = 0
        # the e4m3 prefill kernels' table form (cfg LUT, both GEMMs)
        self._wg8_lut = mma_kernel == "wg8" and bool(self.cfg1.get("LUT", 0))
        self._mma = mma_kernel in ("mma", "mma8", "wg", "wg8")
        self._mma8 = mma_kernel == "mma8"
        # mxfp4 prefill through the warpgroup-MMA kernels (kernels/mx_wgmma.cu, cfg KERNEL "wg"; "wg8": the
        # e4m3 ones, mxfp4-w4a8)
        self._wg = mma_kernel == "wg"
        self._wg8 = mma_kernel == "wg8"
        # mxfp4-w4a8 on the kernels that read bf16 activations ("mma", "wg"): the quantizer writes the
        # e4m3 values as bf16 (exact), so no conversion runs before each GEMM
        self._act_bf16 = fmt == "mxfp4-w4a8" and mma_kernel in ("mma", "wg")
        if self._wg and fmt not in ("mxfp4", "mxfp4-w4a8"):
            raise ValueError(f"cfg KERNEL=wg is an MXFP4-weight prefill kernel, not for {fmt}")
        # the W4A8 kernel's f16-MMA build (cfg F16MMA, both GEMMs: mx_cuda.moe_gemm_mx8 f16_mma)
        self._mma8_f16 = self._mma8 and bool(self.cfg1.get("F16MMA", 0))
        if self._mma:
            from moeprof.models.kernels import mx_cuda

            # which operand copies the GEMMs read (the table form has its own layout)
            self._operands = "wg8l" if self._wg8_lut else mma_kernel
            _mma_operands(wt, self._operands)
            # each GEMM its own CTA shape: the down GEMM has half the output rows, so at few tokens it
            # may need a shape with more warps to keep the SMs streaming
            self._mma_variant1, self._mma_variant2 = (mx_cuda.variant_of(c) for c in (self.cfg1, self.cfg2))
            for v in {self._mma_variant1, self._mma_variant2}:
                mx_cuda.prepare(v, x.device)
            self._has_foreign = wt.num_experts < num_experts_total
        # mxfp4: the GEMMs read the K-tile-major copy of the scales unless a config says STILE=0
        self._w1, self._w2, self._s1, self._s2 = wt.w1, wt.w2, wt.w1_s, wt.w2_s
        if kernel == "triton" and "w1_s_tiles" in wt.extra:
            if self.cfg1.get("STILE", 1):
                self._s1 = wt.extra["w1_s_tiles"]
            if self.cfg2.get("STILE", 1):
                self._s2 = wt.extra["w2_s_tiles"]
            if self.cfg1.get("WTILE", 1):
                self._w1 = wt.extra["w1_tiles"]
            if self.cfg2.get("WTILE", 1):
                self._w2 = wt.extra["w2_tiles"]
        dev = x.device
        nv = batch * top_k
        # mxfp4 prefill (cfg DEQUANT_BF16): the weights are dequantized to bf16 once per call and the
        # GEMMs run as bf16 with the rest of the config; the buffers hold every local expert
        self._dequant = kernel == "triton" and fmt == "mxfp4" and bool(self.cfg1.get("DEQUANT_BF16"))
        if self._dequant:
            assert self._w1.dim() == 4 and self._s1.dim() == 4 and self._w2.dim() == 4 and self._s2.dim() == 4, \
                "DEQUANT_BF16 reads the K-tile-major weights and scales"
            if self.cfg1.get("GU_PAIRED"):
                # written in the paired row order (dequant_mx_bf16 pair=): the padding rows stay zero
                half = int(self.cfg1["BN"]) // 2
                self._w1_bf16 = torch.zeros(wt.num_experts, 2 * half * -(-i // half), h, dtype=torch.bfloat16,
                                            device=dev)
            else:
                self._w1_bf16 = torch.empty(wt.num_experts, 2 * i, h, dtype=torch.bfloat16, device=dev)
            self._w2_bf16 = torch.empty(wt.num_experts, h, i, dtype=torch.bfloat16, device=dev)
        # mxfp4-w4a8 prefill (cfg DEQUANT_FP8): the weights dequantized to e4m3 (a scale per row) once
        # per call, then the fp8 GEMMs
        self._dequant8 = kernel == "triton" and fmt == "mxfp4-w4a8" and bool(self.cfg1.get("DEQUANT_FP8"))
        if self._dequant8:
            from moeprof.models.kernels import moe_gemm as mg

            for name, w_s in (("1", wt.w1_s), ("2", wt.w2_s)):
                if f"w{name}_smax" not in wt.extra:
                    smax = mg.mx_row_scale_exponents(w_s)
                    wt.extra[f"w{name}_smax"] = smax
                    wt.extra[f"w{name}_rowscale"] = mg.mx_fp8_row_scales(smax)
            self._w1_fp8 = torch.empty(wt.num_experts, 2 * i, h, dtype=torch.float8_e4m3fn, device=dev)
            self._w2_fp8 = torch.empty(wt.num_experts, h, i, dtype=torch.float8_e4m3fn, device=dev)
        # gemm1 over gate|up rows paired in blocks of BN/2 (cfg GU_PAIRED): one accumulator, SwiGLU in its
        # epilogue; the paired copies of w1, its row scales and bias are made once per block size
        self._paired = None
        if kernel == "triton" and self.cfg1.get("GU_PAIRED"):
            from moeprof.models import quant as q

            half = int(self.cfg1["BN"]) // 2
            if fmt in ("bf16", "fp8"):
                key = f"gu_paired_{half}"
                if key not in wt.extra:
                    wt.extra[key] = tuple(None if t is None else q.pair_gate_up_rows(t, i, half)
                                          for t in (wt.w1, wt.w1_s, wt.b1))
            elif self._dequant:
                # mxfp4 dequantized per call: the dequantization writes the paired order, the bias is paired
                # here once
                key = f"gu_paired_bias_{half}"
                if key not in wt.extra:
                    wt.extra[key] = (None, None, q.pair_gate_up_rows(wt.b1, i, half))
            else:
                raise ValueError(f"GU_PAIRED is for bf16 / fp8 weights, or mxfp4 dequantized to bf16 "
                                 f"(DEQUANT_BF16); not {fmt}")
            self._paired = wt.extra[key]
        self.inter_buf = torch.empty(nv, i, dtype=torch.bfloat16, device=dev)
        # gemm1 as one plain GEMM over the gate|up rows, then the SwiGLU kernel (cfg GLU_APART)
        self.glu_buf = (torch.empty(nv, 2 * i, dtype=torch.bfloat16, device=dev)
                        if kernel == "triton" and self.cfg1.get("GLU_APART") else None)
        self.out_sorted = torch.empty(nv, h, dtype=torch.bfloat16, device=dev)
        self.out = torch.empty(batch, h, dtype=torch.bfloat16, device=dev)
        # split-K (decode): fp32 partial-sum buffers, zeroed in the same phase as their GEMM
        self._split1 = kernel == "triton" and self.cfg1.get("SPLIT_K", 1) > 1
        self._split2 = kernel == "triton" and self.cfg2.get("SPLIT_K", 1) > 1
        self.ws1 = torch.empty(nv, 2 * i, dtype=torch.float32, device=dev) if self._split1 else None
        self.out32 = torch.empty(batch, h, dtype=torch.float32, device=dev) if self._split2 else None
        if kernel != "triton":
            from moeprof.models import peers

            self._peer = peers.make_peer(self)

    # -- one call
    def __call__(self, nvtx: bool = False):
        from moeprof.profiler.nvtx import layer_ranges

        with layer_ranges(nvtx, self.fmt, self.batch) as phase:
            if self.kernel == "triton":
                return self._forward_triton(phase)
            return self._peer(phase)

    def _forward_triton(self, phase):
        from moeprof.models.kernels import route as mg_route

        with phase("route"):
            ids, tw = mg_route.route(self.x, self.router_w, self.router_b, self.top_k)
        self._expert_gemms(phase, self.x, ids, tw)
        with phase("combine"):
            self._combine()
        return self.out

    def _expert_gemms(self, phase, x, ids, tw) -> None:
        """Rows x routed to experts ids with weights tw: sort, activation quant, gemm1 (+SwiGLU), quant,
        gemm2 into this layer's buffers (the sharded layer runs the same sequence on received rows)."""
        from moeprof.models.kernels import moe_gemm as mg

        with phase("sort"):
            sids, eids, npp, counts = mg.moe_align(ids, self.wt.num_experts, self.cfg1["BM"], self.expert_offset)
        tw = tw.reshape(-1)
        quant = self.fmt in FP8_ACTIVATION_FORMATS
        a, a_s = x, None
        if quant:
            with phase("quant"):
                a, a_s = self.quant_activations(x)
        with phase("gemm1"):
            self._gemm1(a, a_s, tw, sids, eids, npp, counts)
        a, a_s = self.inter_buf, None
        if quant:
            with phase("quant"):
                a, a_s = self.quant_activations(self.inter_buf)
        with phase("gemm2"):
            self._gemm2(a, a_s, tw, sids, eids, npp, counts)

    def _gemm1(self, a, a_s, tw, sids, eids, npp, counts=None):
        from moeprof.models.kernels import moe_gemm as mg

        wt, i, h = self.wt, self.wt.inter, self.wt.hidden
        if self._mma8:
            from moeprof.models.kernels import mx_cuda

            mx_cuda.moe_gemm_mx8(a, a_s, wt.extra["w1_mma8"], wt.extra["s1_mma8"], wt.b1, tw, sids, counts,
                                 out=self.inter_buf, n_out=i, k=h, a_div=self.top_k, gated=True, mul_routed=False,
                                 block_m=self.cfg1["BM"], has_foreign=self._has_foreign, groups=self.cfg1["G"],
                                 variant=self._mma_variant1, up_off=i, f16_mma=self._mma8_f16)
            return
        if self._wg8:
            from moeprof.models.kernels import mx_cuda

            mx_cuda.moe_gemm_mx_wg8(a, a_s, wt.extra[f"w1_{self._operands}"], wt.extra[f"s1_{self._operands}"], wt.b1,
                                    tw, sids, counts,
                                    out=self.inter_buf, n_out=i, k=h, a_div=self.top_k, gated=True,
                                    mul_routed=False, block_m=self.cfg1["BM"], has_foreign=self._has_foreign,
                                    variant=self._mma_variant1, up_off=i, lut=self._wg8_lut)
            return
        if self._wg:
            from moeprof.models.kernels import mx_cuda

            a, a_scale = self._mma_activations(a, a_s)
            mx_cuda.moe_gemm_mx_wg(a, wt.extra["w1_wg"], wt.extra["s1_wg"], wt.b1, tw, sids, counts,
                                   out=self.inter_buf, n_out=i, k=h, a_div=self.top_k, gated=True, mul_routed=False,
                                   big_scale=self._big, block_m=self.cfg1["BM"], has_foreign=self._has_foreign,
                                   variant=self._mma_variant1, up_off=i, a_scale=a_scale)
            return
        if self._mma:
            from moeprof.models.kernels import mx_cuda

            a, a_scale = self._mma_activations(a, a_s)
            mx_cuda.moe_gemm_mx(a, wt.extra["w1_mma"], wt.extra["s1_mma"], wt.b1, tw, sids, counts,
                                out=self.inter_buf, n_out=i, k=h, a_div=self.top_k, gated=True, mul_routed=False,
                                big_scale=self._big, block_m=self.cfg1["BM"], has_foreign=self._has_foreign,
                                groups=self.cfg1["G"], variant=self._mma_variant1, up_off=i, a_scale=a_scale)
            return
        if self._dequant8:
            mg.dequant_mx_fp8(wt.w1, wt.w1_s, wt.extra["w1_smax"], h, out=self._w1_fp8)
            kw = dict(n=i, k=h, a_div=self.top_k, fmt="fp8", gated=True, mul_routed=False, cfg=self.cfg1, up_off=i,
                      glu_buf=self.glu_buf)
            mg.moe_gemm(a, a_s, self._w1_fp8, wt.extra["w1_rowscale"], wt.b1, tw, sids, eids, npp,
                        out=self.inter_buf, **kw)
            return
        kw = dict(n=i, k=h, a_div=self.top_k, fmt=self.fmt, gated=True, mul_routed=False, cfg=self.cfg1,
                  up_off=i, up_soff=-(-i // 128), mx_big_scale=self._big, glu_buf=self.glu_buf)
        if self._paired is not None:
            w1p, s1p, b1p = self._paired
            if self._dequant:
                mg.dequant_mx_bf16(self._w1, self._s1, h, out=self._w1_bf16, big_scale=self._big,
                                   pair=(i, int(self.cfg1["BN"]) // 2))
                w1p, kw["fmt"] = self._w1_bf16, "bf16"
            mg.moe_gemm(a, a_s, w1p, s1p, b1p, tw, sids, eids, npp, out=self.inter_buf, **kw)
        elif self._dequant:
            mg.dequant_mx_bf16(self._w1, self._s1, h, out=self._w1_bf16, big_scale=self._big)
            kw["fmt"] = "bf16"
            mg.moe_gemm(a, a_s, self._w1_bf16, None, wt.b1, tw, sids, eids, npp, out=self.inter_buf, **kw)
        elif self._split1:
            self.ws1.zero_()
            mg.moe_gemm(a, a_s, self._w1, self._s1, wt.b1, tw, sids, eids, npp, out=self.ws1, **kw)
            mg.swiglu(self.ws1, self.inter_buf, i)
        else:
            mg.moe_gemm(a, a_s, self._w1, self._s1, wt.b1, tw, sids, eids, npp, out=self.inter_buf, **kw)

    def _gemm2(self, a, a_s, tw, sids, eids, npp, counts=None):
        from moeprof.models.kernels import moe_gemm as mg

        wt, i, h = self.wt, self.wt.inter, self.wt.hidden
        if self._mma8:
            from moeprof.models.kernels import mx_cuda

            mx_cuda.moe_gemm_mx8(a, a_s, wt.extra["w2_mma8"], wt.extra["s2_mma8"], wt.b2, tw, sids, counts,
                                 out=self.out_sorted, n_out=h, k=i, a_div=1, gated=False, mul_routed=True,
                                 block_m=self.cfg2["BM"], has_foreign=self._has_foreign, groups=self.cfg2["G"],
                                 variant=self._mma_variant2, f16_mma=self._mma8_f16)
            return
        if self._wg8:
            from moeprof.models.kernels import mx_cuda

            mx_cuda.moe_gemm_mx_wg8(a, a_s, wt.extra[f"w2_{self._operands}"], wt.extra[f"s2_{self._operands}"], wt.b2,
                                    tw, sids, counts,
                                    out=self.out_sorted, n_out=h, k=i, a_div=1, gated=False, mul_routed=True,
                                    block_m=self.cfg2["BM"], has_foreign=self._has_foreign,
                                    variant=self._mma_variant2, lut=self._wg8_lut)
            return
        if self._wg:
            from moeprof.models.kernels import mx_cuda

            a, a_scale = self._mma_activations(a, a_s)
            mx_cuda.moe_gemm_mx_wg(a, wt.extra["w2_wg"], wt.extra["s2_wg"], wt.b2, tw, sids, counts,
                                   out=self.out_sorted, n_out=h, k=i, a_div=1, gated=False, mul_routed=True,
                                   big_scale=self._big, block_m=self.cfg2["BM"], has_foreign=self._has_foreign,
                                   variant=self._mma_variant2, a_scale=a_scale)
            return
        if self._mma:
            from moeprof.models.kernels import mx_cuda

            a, a_scale = self._mma_activations(a, a_s)
            mx_cuda.moe_gemm_mx(a, wt.extra["w2_mma"], wt.extra["s2_mma"], wt.b2, tw, sids, counts,
                                out=self.out_sorted, n_out=h, k=i, a_div=1, gated=False, mul_routed=True,
                                big_scale=self._big, block_m=self.cfg2["BM"], has_foreign=self._has_foreign,
                                groups=self.cfg2["G"], variant=self._mma_variant2, a_scale=a_scale)
            return
        if self._dequant8:
            mg.dequant_mx_fp8(wt.w2, wt.w2_s, wt.extra["w2_smax"], i, out=self._w2_fp8)
            kw = dict(n=h, k=i, a_div=1, fmt="fp8", gated=False, mul_routed=True, cfg=self.cfg2)
            mg.moe_gemm(a, a_s, self._w2_fp8, wt.extra["w2_rowscale"], wt.b2, tw, sids, eids, npp,
                        out=self.out_sorted, **kw)
            return
        kw = dict(n=h, k=i, a_div=1, fmt=self.fmt, gated=False, mul_routed=True, cfg=self.cfg2,
                  mx_big_scale=self._big)
        if self._dequant:
            mg.dequant_mx_bf16(self._w2, self._s2, i, out=self._w2_bf16, big_scale=self._big)
            kw["fmt"] = "bf16"
            mg.moe_gemm(a, a_s, self._w2_bf16, None, wt.b2, tw, sids, eids, npp, out=self.out_sorted, **kw)
        elif self._split2:
            # split-K partial sums go straight to the token's output row (combine fused)
            self.out32.zero_()
            mg.moe_gemm(a, a_s, self._w2, self._s2, wt.b2, tw, sids, eids, npp, out=self.out32,
                        c_div=self.top_k, **kw)
        else:
            mg.moe_gemm(a, a_s, self._w2, self._s2, wt.b2, tw, sids, eids, npp, out=self.out_sorted, **kw)

    def quant_activations(self, x):
        """The GEMM input of this layer's format: x itself, or (fp8 activations) its e4m3 quantization and
        scales; as bf16 values where this layer's kernels read bf16 (self._act_bf16)."""
        if self.fmt not in FP8_ACTIVATION_FORMATS:
            return x, None
        from moeprof.models.kernels import moe_gemm as mg

        return mg.act_quant(x, per_group=(self.fmt == "fp8-block"), as_bf16=self._act_bf16)

    def _mma_activations(self, a, a_s):
        """The W4A16 kernels (cfg KERNEL "mma", "wg") read bf16 activations: e4m3 ones (mxfp4-w4a8) go
        over as their exact bf16 values (written so by quant_activations, else converted here), with
        their row scales applied in the kernel's epilogue (the "mma8" kernel reads the e4m3 bytes as
        they are)."""
        import torch

        if a_s is None or a.dtype == torch.bfloat16:
            return a, a_s
        return a.to(torch.bfloat16), a_s

    def _combine(self):
        import torch

        if self._split2:
            self.out.copy_(self.out32)
        else:
            torch.sum(self.out_sorted.view(self.batch, self.top_k, self.wt.hidden), dim=1, out=self.out)

    # -- the expert GEMMs alone (activation quant + gemm1 with fused SwiGLU + gemm2), routing and
    #    sort precomputed: separates the weight-streaming kernels from the layer's fixed overhead.
    def gemm_only(self):
        from moeprof.models.kernels import moe_gemm as mg
        from moeprof.models.kernels import route as mg_route

        wt = self.wt
        ids, tw = mg_route.route(self.x, self.router_w, self.router_b, self.top_k)
        sids, eids, npp, counts = mg.moe_align(ids, wt.num_experts, self.cfg1["BM"], self.expert_offset)
        tw = tw.reshape(-1)

        def run():
            a, a_s = self.quant_activations(self.x)
            self._gemm1(a, a_s, tw, sids, eids, npp, counts)
            a, a_s = self.quant_activations(self.inter_buf)
            self._gemm2(a, a_s, tw, sids, eids, npp, counts)

        return run

    # -- reference
    def reference(self):
        from moeprof.models import reference

        ids, tw = reference.route(self.x, self.router_w, self.router_b, self.top_k)
        return reference.moe_reference(self.x, ids, tw, lambda e: dequantize_expert(self.wt, e),
                                       expert_offset=self.expert_offset, num_local=self.wt.num_experts)


def build_layer(*, hidden_size, intermediate_size, num_experts, top_k, fmt, batch, tp=1, ep=1,
                routing="uniform", seed=0, device="cuda", kernel="triton", cfg=None, cache_weights=True):
    import torch

    from moeprof.errors import MoeprofError

    if fmt not in FORMATS:
        raise MoeprofError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    wt = get_weights(fmt=fmt, hidden_size=hidden_size, intermediate_size=intermediate_size,
                     num_experts=num_experts, tp=tp, ep=ep, seed=seed, device=device, cache=cache_weights)
    g = torch.Generator(device=device)
    g.manual_seed(seed * 7919 + 3)
    router_w = (torch.randn(num_experts, hidden_size, generator=g, device=device) / math.sqrt(hidden_size)).bfloat16()
    router_b = torch.zeros(num_experts, dtype=torch.float32, device=device)
    s = parse_skew(routing)
    if s:
        router_b -= s * torch.log1p(torch.arange(num_experts, device=device, dtype=torch.float32))
    gx = torch.Generator(device=device)
    gx.manual_seed(seed * 104729 + batch)
    x = torch.randn(batch, hidden_size, generator=gx, device=device).bfloat16()
    return MoeLayer(wt=wt, x=x, router_w=router_w, router_b=router_b, top_k=top_k,
                    num_experts_total=num_experts, fmt=fmt, batch=batch, kernel=kernel, cfg=cfg)


def build_layer_for_model(model, fmt, batch, **kw):
    return build_layer(**model_shapes(model), fmt=fmt, batch=batch, **kw)
