"""FP32 reference for one GPT-OSS MoE layer, from dequantized weights.

Semantics (GPT-OSS): router logits -> top-k -> softmax over the k selected logits; per selected
expert: h = x @ W1^T + b1 with W1 = [gate; up] (de-interleaved, see kernels/moe_gemm.py),
gate = min(gate, 7), up = clamp(up, -7, 7), a = gate * sigmoid(1.702 * gate) * (up + 1),
y = a @ W2^T + b2; output = sum_k weight_k * y_k.
"""

from __future__ import annotations

import torch

SWIGLU_ALPHA = 1.702
SWIGLU_LIMIT = 7.0


def swiglu_gptoss(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    gate = gate.clamp(max=SWIGLU_LIMIT)
    up = up.clamp(-SWIGLU_LIMIT, SWIGLU_LIMIT)
    return gate * torch.sigmoid(SWIGLU_ALPHA * gate) * (up + 1.0)


def route(x: torch.Tensor, router_w: torch.Tensor, router_b: torch.Tensor, top_k: int):
    """Router: logits (fp32) -> top-k ids (int32) and softmax weights over the k (fp32)."""
    logits = torch.nn.functional.linear(x.float(), router_w.float(), router_b.float())
    vals, ids = torch.topk(logits, top_k, dim=-1)
    return ids.to(torch.int32), torch.softmax(vals, dim=-1)


def moe_reference(x, topk_ids, topk_w, expert_weights, *, expert_offset: int = 0, num_local: int | None = None):
    """x [T, H]; topk_ids/topk_w [T, k]; expert_weights(e) -> (w1 [2I, H], b1 [2I], w2 [H, I], b2 [H]) fp32
    for local expert e. Experts outside [expert_offset, expert_offset + num_local) contribute nothing (EP)."""
    xf = x.float()
    t, k = topk_ids.shape
    out = torch.zeros(t, xf.shape[1], dtype=torch.float32, device=x.device)
    ids = topk_ids.long() - expert_offset
    for e in torch.unique(ids).tolist():
        if e < 0 or (num_local is not None and e >= num_local):
            continue
        tok, slot = torch.nonzero(ids == e, as_tuple=True)
        w1, b1, w2, b2 = expert_weights(e)
        h = xf[tok] @ w1.t() + b1
        i = w1.shape[0] // 2
        a = swiglu_gptoss(h[:, :i], h[:, i:])
        y = a @ w2.t() + b2
        out.index_add_(0, tok, y * topk_w[tok, slot].float()[:, None])
    return out


# ||out - ref|| / ||ref|| bounds per format against this reference (fp32 math on the same dequantized
# weights, unquantized activations): bf16 / mxfp4 keep bf16 activations and a bf16 intermediate, the
# fp8 formats round the activations to e4m3 (the dominant error, which the reference does not apply).
ERROR_BOUNDS = {"bf16": 1.5e-2, "mxfp4": 1.5e-2, "fp8": 6e-2, "fp8-block": 5e-2, "mxfp4-w4a8": 6e-2}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref||; NaN/inf anywhere -> inf (never passes a bound)."""
    o = out.float()
    if not torch.isfinite(o).all():
        return float("inf")
    return float((o - ref.float()).norm() / ref.float().norm().clamp_min(1e-30))


def poisoned_call(layer) -> torch.Tensor:
    """One call of a models.layer.MoeLayer with its output and intermediate buffers NaN-poisoned first,
    so that a row the kernels fail to write shows up as NaN (rel_err -> inf); returns a copy."""
    for buf in (layer.out, layer.out_sorted, layer.inter_buf, getattr(layer, "glu_buf", None)):
        if buf is not None:
            buf.fill_(float("nan"))
    return layer().clone()
