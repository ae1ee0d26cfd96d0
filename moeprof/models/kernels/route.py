"""GPT-OSS router in Triton: logits = x @ W^T + b (fp32 accumulation), top-k, softmax over the k
selected logits, in one launch (many tokens) or two (few tokens: logits over expert blocks, then
top-k). Same function as reference.route, whose torch version (an fp32 copy of x and W, a cuBLAS
GEMV/GEMM, topk, softmax, an int cast) takes 7-9 launches: at decode that overhead is a large share of
a layer whose GEMMs stream little weight (measured: docs/performance.md).

Ties between equal logits go to the lower expert id (torch.topk leaves their order unspecified);
random fp32 logits practically never tie.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def route_kernel(x_ptr, w_ptr, b_ptr, ids_ptr, wts_ptr, T, H, E, stride_x, stride_w,
                 TOPK: tl.constexpr, EP: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                 DOT_F32: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BT + tl.arange(0, BT)
    rmask = rows < T
    ex = tl.arange(0, EP)
    emask = ex < E
    kk = tl.arange(0, BK)
    acc = tl.zeros((BT, EP), dtype=tl.float32)
    for k0 in range(0, H, BK):
        km = (k0 + kk) < H
        xb = tl.load(x_ptr + rows.to(tl.int64)[:, None] * stride_x + (k0 + kk)[None, :],
                     mask=rmask[:, None] & km[None, :], other=0.0)
        wb = tl.load(w_ptr + ex[:, None] * stride_w + (k0 + kk)[None, :], mask=emask[:, None] & km[None, :],
                     other=0.0)
        if DOT_F32:  # the interpreter's bf16 dot is wrong on CPU (see moe_gemm._dot)
            acc = tl.dot(xb.to(tl.float32), tl.trans(wb.to(tl.float32)), acc)
        else:
            # bf16 x bf16 products are exact in fp32; fp32 accumulation (as the torch reference)
            acc = tl.dot(xb, tl.trans(wb), acc)
    acc += tl.load(b_ptr + ex, mask=emask, other=0.0)[None, :]
    acc = tl.where(emask[None, :], acc, float("-inf"))
    _topk_softmax_store(acc, ex, rows, rmask, ids_ptr, wts_ptr, TOPK)


@triton.jit
def _topk_softmax_store(acc, ex, rows, rmask, ids_ptr, wts_ptr, TOPK: tl.constexpr):
    """acc [BT, EP] fp32 logits (-inf on masked experts) -> ids / softmax weights of the TOPK largest.
    Top-k by repeated arg-max (k is small: 4 for GPT-OSS); the first pick is the row maximum. Two
    passes (the first sums the softmax denominator) keep every value in registers."""
    top = tl.max(acc, axis=1)
    den = tl.zeros(top.shape, dtype=tl.float32)
    a2 = acc
    for j in tl.static_range(TOPK):
        v = tl.max(a2, axis=1)
        i = tl.argmax(a2, axis=1, tie_break_left=True)
        den += tl.exp(v - top)
        a2 = tl.where(ex[None, :] == i[:, None], float("-inf"), a2)
    for j in tl.static_range(TOPK):
        v = tl.max(acc, axis=1)
        i = tl.argmax(acc, axis=1, tie_break_left=True)
        tl.store(ids_ptr + rows * TOPK + j, i.to(tl.int32), mask=rmask)
        tl.store(wts_ptr + rows * TOPK + j, tl.exp(v - top) / den, mask=rmask)
        acc = tl.where(ex[None, :] == i[:, None], float("-inf"), acc)


@triton.jit
def route_logits_kernel(x_ptr, w_ptr, b_ptr, lg_ptr, T, H, E, stride_x, stride_w, KCH,
                        EB: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, DOT_F32: tl.constexpr):
    """Few tokens: partial logits lg[ks, T, E] (fp32) over a (token block, expert block, K chunk) grid,
    so that the router weight (E x H bf16: 737 KB for GPT-OSS) streams through E / EB * KS programs
    instead of one; route_topk_kernel sums the KS partials. The bias goes into chunk 0."""
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    rmask = rows < T
    ex = tl.program_id(1) * EB + tl.arange(0, EB)
    emask = ex < E
    ks = tl.program_id(2)
    kk = tl.arange(0, BK)
    acc = tl.zeros((BT, EB), dtype=tl.float32)
    k_lo = ks * KCH
    k_hi = tl.minimum(H, k_lo + KCH)
    for k0 in range(k_lo, k_hi, BK):
        km = (k0 + kk) < k_hi
        xb = tl.load(x_ptr + rows.to(tl.int64)[:, None] * stride_x + (k0 + kk)[None, :],
                     mask=rmask[:, None] & km[None, :], other=0.0)
        wb = tl.load(w_ptr + ex[:, None] * stride_w + (k0 + kk)[None, :], mask=emask[:, None] & km[None, :],
                     other=0.0)
        if DOT_F32:
            acc = tl.dot(xb.to(tl.float32), tl.trans(wb.to(tl.float32)), acc)
        else:
            acc = tl.dot(xb, tl.trans(wb), acc)
    bias = tl.load(b_ptr + ex, mask=emask, other=0.0)
    acc += (bias * (ks == 0).to(tl.float32))[None, :]
    tl.store(lg_ptr + (ks * T + rows)[:, None] * E + ex[None, :], acc, mask=rmask[:, None] & emask[None, :])


@triton.jit
def route_topk_kernel(lg_ptr, ids_ptr, wts_ptr, T, E, TOPK: tl.constexpr, EP: tl.constexpr, BT: tl.constexpr,
                      KS: tl.constexpr):
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    rmask = rows < T
    ex = tl.arange(0, EP)
    emask = ex < E
    m = rmask[:, None] & emask[None, :]
    acc = tl.zeros((BT, EP), dtype=tl.float32)
    for ks in tl.static_range(KS):  # fixed order: the sum does not depend on scheduling
        acc += tl.load(lg_ptr + (ks * T + rows)[:, None] * E + ex[None, :], mask=m, other=0.0)
    acc = tl.where(m, acc, float("-inf"))
    _topk_softmax_store(acc, ex, rows, rmask, ids_ptr, wts_ptr, TOPK)

# Up to this many tokens the logits are split over expert blocks (two launches); above, one launch
# per token block covers every expert (the router weight is re-read from L2 per block).
SPLIT_MAX_TOKENS = 256


def route(x: torch.Tensor, router_w: torch.Tensor, router_b: torch.Tensor, top_k: int,
          split: bool | None = None):
    """x [T, H] (bf16), router_w [E, H] (bf16), router_b [E] (fp32) -> ids int32 [T, k], weights fp32
    [T, k] (softmax over the k picks, in descending logit order), as reference.route. split: force
    the two-launch (logits over expert blocks, then top-k) or the one-launch path."""
    t, h = x.shape
    e = router_w.shape[0]
    ids = torch.empty((t, top_k), dtype=torch.int32, device=x.device)
    wts = torch.empty((t, top_k), dtype=torch.float32, device=x.device)
    if t == 0:
        return ids, wts
    if x.dtype != router_w.dtype:
        x = x.to(router_w.dtype)
    ep = max(16, triton.next_power_of_2(e))
    bk = 64 if INTERPRET else 128
    if split is None:
        split = t <= SPLIT_MAX_TOKENS
    if split:
        eb = 16
        ks = max(1, min(4, h // (4 * bk)))            # K chunks of >= 4 steps (GPT-OSS: 4 x 720)
        kch = triton.cdiv(triton.cdiv(h, ks), bk) * bk
        ks = triton.cdiv(h, kch)
        lg = torch.empty((ks, t, e), dtype=torch.float32, device=x.device)
        route_logits_kernel[(triton.cdiv(t, 16), triton.cdiv(e, eb), ks)](
            x, router_w, router_b.float(), lg, t, h, e, x.stride(0), router_w.stride(0), kch,
            EB=eb, BT=16, BK=bk, DOT_F32=INTERPRET, num_warps=4)
        route_topk_kernel[(triton.cdiv(t, 16),)](lg, ids, wts, t, e, TOPK=top_k, EP=ep, BT=16, KS=ks,
                                                 num_warps=4)
        return ids, wts
    bt = 16 if t <= 4096 else 64
    route_kernel[(triton.cdiv(t, bt),)](
        x, router_w, router_b.float(), ids, wts, t, h, e, x.stride(0), router_w.stride(0),
        TOPK=top_k, EP=ep, BT=bt, BK=bk, DOT_F32=INTERPRET, num_warps=4)
    return ids, wts
