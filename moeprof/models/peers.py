"""Peer implementations of the same layer, for the benchmark's ratios.

torch-grouped: routing, sort (moe_align with 16-row groups: the sm90 grouped GEMMs want 16-row
aligned groups) and activation quant are shared with moeprof; the GEMMs are
torch._grouped_mm (bf16) or torch._scaled_grouped_mm (fp8 rowwise: per-token activation scale,
per-output-channel weight scale), with bias, SwiGLU and combine in torch ops.
torch-loop: per-expert loop of torch matmuls over bf16 weights (host sync for the counts; not
graph-capturable).
"""

from __future__ import annotations


def make_peer(layer):
    kind = layer.kernel
    if kind == "torch-grouped":
        return _grouped(layer)
    if kind == "torch-loop":
        return _loop(layer)
    raise ValueError(f"unknown kernel {kind!r}")


def _swiglu(h, i):
    from moeprof.models.reference import swiglu_gptoss

    return swiglu_gptoss(h[:, :i].float(), h[:, i:].float())


def _grouped(layer):
    import torch

    from moeprof.models.kernels import moe_gemm as mg
    from moeprof.models.kernels import route as route_kernel

    wt, fmt = layer.wt, layer.fmt
    if fmt not in ("bf16", "fp8"):
        raise ValueError("torch-grouped supports bf16 and fp8")
    if layer.expert_offset or wt.num_experts != layer.num_experts_total:
        raise ValueError("torch-grouped peer: ep=1 only")
    h, i, k, t = wt.hidden, wt.inter, layer.top_k, layer.batch
    w1t = wt.w1.transpose(1, 2)  # [E, H, 2I] column-major view
    w2t = wt.w2.transpose(1, 2)  # [E, I, H]
    nv = t * k

    def run(phase):
        with phase("route"):
            ids, tw = route_kernel.route(layer.x, layer.router_w, layer.router_b, k)
        with phase("sort"):
            sids, eids, npp, _ = mg.moe_align(ids, wt.num_experts, 16)
            ends = torch.cumsum((torch.bincount(ids.reshape(-1).long(), minlength=wt.num_experts) + 15) // 16 * 16, 0)
            offs = ends.to(torch.int32)
            valid = sids < nv
            src_tok = torch.where(valid, sids // k, torch.zeros_like(sids)).long()
            row_e = torch.searchsorted(ends, torch.arange(sids.numel(), device=sids.device), right=True)
            row_e = row_e.clamp(max=wt.num_experts - 1)
        if fmt == "bf16":
            xs = layer.x[src_tok]
            with phase("gemm1"):
                hh = torch._grouped_mm(xs, w1t, offs=offs, out_dtype=torch.bfloat16)
            with phase("act"):
                a = _swiglu(hh.float() + wt.b1[row_e], i).to(torch.bfloat16)
            with phase("gemm2"):
                y = torch._grouped_mm(a, w2t, offs=offs, out_dtype=torch.bfloat16)
        else:
            with phase("quant"):
                xq, xs_ = mg.act_quant(layer.x, per_group=False)
                xq, xs_ = xq[src_tok], xs_[src_tok]
            with phase("gemm1"):
                hh = torch._scaled_grouped_mm(xq, w1t, xs_, wt.w1_s, offs=offs, out_dtype=torch.bfloat16)
            with phase("act"):
                a = _swiglu(hh.float() + wt.b1[row_e], i).to(torch.bfloat16)
            with phase("quant"):
                aq, as_ = mg.act_quant(a, per_group=False)
            with phase("gemm2"):
                y = torch._scaled_grouped_mm(aq, w2t, as_, wt.w2_s, offs=offs, out_dtype=torch.bfloat16)
        with phase("combine"):
            y = (y.float() + wt.b2[row_e]) * torch.where(valid, tw.reshape(-1)[sids.clamp(max=nv - 1).long()], 0.0)[:, None]
            out = torch.zeros(t, h, dtype=torch.float32, device=y.device)
            out.index_add_(0, src_tok, torch.where(valid[:, None], y, 0.0))
        return out.to(torch.bfloat16)

    return run


def _loop(layer):
    import torch

    from moeprof.models.kernels import route as route_kernel

    wt = layer.wt
    if layer.fmt != "bf16":
        raise ValueError("torch-loop peer: bf16 only")
    h, i, k, t = wt.hidden, wt.inter, layer.top_k, layer.batch

    def run(phase):
        with phase("route"):
            ids, tw = route_kernel.route(layer.x, layer.router_w, layer.router_b, k)
        out = torch.zeros(t, h, dtype=torch.float32, device=layer.x.device)
        with phase("gemm1"):
            for e in torch.unique(ids).tolist():
                tok, slot = torch.nonzero(ids == e, as_tuple=True)
                hh = torch.nn.functional.linear(layer.x[tok], wt.w1[e]).float() + wt.b1[e]
                a = _swiglu(hh, i).to(torch.bfloat16)
                y = torch.nn.functional.linear(a, wt.w2[e]).float() + wt.b2[e]
                out.index_add_(0, tok, y * tw[tok, slot][:, None])
        return out.to(torch.bfloat16)

    return run


def grouped_gemms_only(layer):
    """The torch-grouped peer's two grouped GEMMs alone, for a GEMM-against-GEMM comparison with
    moeprof's expert GEMMs (MoeLayer.gemm_only): routing, sort, gather, activation quant, SwiGLU and the
    intermediate are made once here, outside the returned callable; what the layer peer spends around
    the GEMMs (the glue) is its layer time minus this callable's time."""
    import torch

    from moeprof.models.kernels import moe_gemm as mg
    from moeprof.models.kernels import route as route_kernel

    wt, fmt, k = layer.wt, layer.fmt, layer.top_k
    if fmt not in ("bf16", "fp8"):
        raise ValueError("torch-grouped supports bf16 and fp8")
    i, nv = wt.inter, layer.batch * k
    ids, _ = route_kernel.route(layer.x, layer.router_w, layer.router_b, k)
    sids, _, _, _ = mg.moe_align(ids, wt.num_experts, 16)
    ends = torch.cumsum((torch.bincount(ids.reshape(-1).long(), minlength=wt.num_experts) + 15) // 16 * 16, 0)
    offs = ends.to(torch.int32)
    src_tok = torch.where(sids < nv, sids // k, torch.zeros_like(sids)).long()
    row_e = torch.searchsorted(ends, torch.arange(sids.numel(), device=sids.device), right=True)
    row_e = row_e.clamp(max=wt.num_experts - 1)
    w1t, w2t = wt.w1.transpose(1, 2), wt.w2.transpose(1, 2)
    if fmt == "bf16":
        xs = layer.x[src_tok]
        hh = torch._grouped_mm(xs, w1t, offs=offs, out_dtype=torch.bfloat16)
        a = _swiglu(hh.float() + wt.b1[row_e], i).to(torch.bfloat16)

        def run():
            torch._grouped_mm(xs, w1t, offs=offs, out_dtype=torch.bfloat16)
            torch._grouped_mm(a, w2t, offs=offs, out_dtype=torch.bfloat16)

        return run
    xq, xs_ = mg.act_quant(layer.x, per_group=False)
    xq, xs_ = xq[src_tok].contiguous(), xs_[src_tok].contiguous()
    hh = torch._scaled_grouped_mm(xq, w1t, xs_, wt.w1_s, offs=offs, out_dtype=torch.bfloat16)
    aq, as_ = mg.act_quant(_swiglu(hh.float() + wt.b1[row_e], i).to(torch.bfloat16), per_group=False)

    def run():
        torch._scaled_grouped_mm(xq, w1t, xs_, wt.w1_s, offs=offs, out_dtype=torch.bfloat16)
        torch._scaled_grouped_mm(aq, w2t, as_, wt.w2_s, offs=offs, out_dtype=torch.bfloat16)

    return run
