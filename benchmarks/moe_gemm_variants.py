"""Expert-GEMM tile variants against the defaults, one GPU, one run: correctness first, then time.

    python3 benchmarks/moe_gemm_variants.py OUT_DIR [--batches 1,4,16,64,256,1024,4096] [--formats fp8]
        [--sglang-trim .sglang-trim] [--ncu]

For gpt-oss-120b, per batch and format: every variant in VARIANTS (and the default configuration)
is checked against the fp32 reference on fresh inputs with NaN-poisoned outputs, then its two expert
GEMMs alone (gemm1 + SwiGLU, gemm2 + routing weight; routing, sort and activation quant done once
outside) are timed with cold L2 in a CUDA graph (median). The torch peers' grouped GEMMs are timed
the same way, without their glue (models/peers.grouped_gemms_only); with --sglang-trim, so are SGLang
0.5.23's `fused_moe_kernel` GEMMs for fp8 at every tile of benchmarks/sglang_gemm_peer.py, on the same
tokens and routing (rows "sglang:<tile>", each checked against its float32 reference first). Percentages are the touched
experts' weight bytes over the time, against the card's DRAM peak (--dram-peak, ncu's figure).
--ncu: afterwards, ncu (clocks as found) on the default and the fastest variant of fp8, mxfp4 and mxfp4-w4a8 at
--ncu-batch (a comma list): DRAM throughput, tensor-pipe activity and the tensor-op source types (fp8 vs fp16).
Compiles run first in parallel worker processes (Triton's on-disk cache), so the timed process only
loads them. Writes OUT_DIR/variants.json and prints a short table last.

Each format's first point in a process can run slow (fp8 and mxfp4-w4a8 at batch 1 by 2-3 us, whether or not
its first timing is discarded: docs/performance.md, runs 81-85); to compare at batch 1, list it twice
(--batches 1,1) and read the later rows (the fp8 peers table does).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

MODEL = "gpt-oss-120b"
SEED = 23  # fresh data: neither the capture's seed nor the tests'


def _c(bm, bn, bk, nw, ns, **kw):
    return {"BM": bm, "BN": bn, "BK": bk, "GROUP_M": 4 if bm <= 32 else 8, "num_warps": nw, "num_stages": ns, **kw}


# name -> (batches, config for both GEMMs, or a (gemm1, gemm2) pair); gemm2 always takes gemm1's BM
# (one sort). fp8: runs 23-24's candidates (decode: SGLang's best tile's stage count, split K where few
# experts leave SMs idle; 1024-4096: 64/128-row tiles with BK=128; prefill: deeper pipelines, a 256-wide
# down GEMM, the group order), and gate/up in one dot
D = (1, 4, 16, 64, 256)


def _pf(c1, bn2=None, **kw):
    """A prefill pair: gemm1 as given (gate and up tiles: 2 x BN weight rows per program), gemm2 with BN=bn2."""
    c1 = dict(c1, **kw)
    return (c1, dict(c1, BN=bn2 or c1["BN"]))


VARIANTS = {
    "fp8": {
        "swap-k256-s3": ((1, 2, 4, 16, 64, 256), _c(16, 64, 256, 4, 3, GROUP_M=1, SWAP_AB=1)),
        "swap-k128-s4": (D, _c(16, 64, 128, 4, 4, GROUP_M=1, SWAP_AB=1)),
        "swap-k256-s2": ((16, 64, 256), _c(16, 64, 256, 4, 2, GROUP_M=1, SWAP_AB=1)),
        "swap-k256-split2": ((1, 4), _c(16, 64, 256, 4, 4, GROUP_M=1, SWAP_AB=1, SPLIT_K=2)),
        "swap-k256-split4": ((1,), _c(16, 64, 256, 4, 4, GROUP_M=1, SWAP_AB=1, SPLIT_K=4)),
        # gemm1 as one plain swapped GEMM over the 2I gate|up rows, then the SwiGLU kernel (GLU_APART; its
        # time is in gemm1's): twice as many programs as a gate and an up tile per program (360 against 180
        # on 132 SMs at batch 1)
        "swap-glu-k256-s3": ((1, 4, 16), _pf(_c(16, 64, 256, 4, 3, GROUP_M=1, SWAP_AB=1, GLU_APART=1))),
        "swap-glu-k256-s4": ((1, 4, 16), _pf(_c(16, 64, 256, 4, 4, GROUP_M=1, SWAP_AB=1, GLU_APART=1))),
        "swap-glu-m64-k128-s4": ((1024,), _pf(_c(64, 64, 128, 4, 4, SWAP_AB=1, GLU_APART=1))),
        "glu-m64-n128-k128-s4": ((1024,), _pf(_c(64, 128, 128, 4, 4, GLU_APART=1), 128)),
        "swap-m32-k128-s3": ((1024,), _c(32, 64, 128, 4, 3, SWAP_AB=1)),
        "swap-m64-k128-s4": ((1024,), _c(64, 64, 128, 4, 4, SWAP_AB=1)),
        "m64-k128-s4": ((1024, 4096), _pf(_c(64, 64, 128, 4, 4), 128)),
        "m64-k128-s3": ((1024, 4096), _pf(_c(64, 64, 128, 4, 3), 128)),
        "m64-n128-k128-s3": ((4096,), _pf(_c(64, 128, 128, 4, 3), 128)),
        "m128-w8-s3-n256": ((4096, 16384), _pf(_c(128, 128, 128, 8, 3), 256)),
        "m128-w8-s4-n256": ((4096, 16384), _pf(_c(128, 128, 128, 8, 4), 256)),
        "pf-s4": ((16384,), _pf(_c(128, 128, 128, 8, 4))),
        "pf-gm16": ((16384,), _pf(_c(128, 128, 128, 8, 3, GROUP_M=16))),
        "pf-gm4": ((16384,), _pf(_c(128, 128, 128, 8, 3, GROUP_M=4))),
        "pf-k64-s5": ((16384,), _pf(_c(128, 128, 64, 8, 5))),
        "pf-m64-n128-w4-s4": ((16384,), _pf(_c(64, 128, 128, 4, 4), 256)),
        # gate and up rows interleaved in one 2*BN-wide dot (GU_ONE_DOT; not measured yet)
        "gu1-m64-k128-s4": ((1024, 4096), _pf(_c(64, 64, 128, 4, 4, GU_ONE_DOT=1), 128)),
        "gu1-m128-w8-s4-n256": ((4096, 16384), _pf(_c(128, 128, 128, 8, 4, GU_ONE_DOT=1), 256)),
        "gu1-m128-w8-s3-n256": ((4096, 16384), _pf(_c(128, 128, 128, 8, 3, GU_ONE_DOT=1), 256)),
        # gemm1 as one plain GEMM over the 2I gate|up rows (256-wide tiles, as SGLang's gate_up), then the
        # SwiGLU kernel (GLU_APART; its time is in gemm1's)
        "glu-m128-n256-s4": ((1024, 4096, 16384), _pf(_c(128, 256, 128, 8, 4, GLU_APART=1), 256)),
        "glu-m128-n256-s4-gm32": ((4096, 16384), _pf(_c(128, 256, 128, 8, 4, GLU_APART=1, GROUP_M=32), 256)),
        "glu-m128-n256-s3": ((4096, 16384), _pf(_c(128, 256, 128, 8, 3, GLU_APART=1), 256)),
        "glu-m128-n128-s4": ((4096, 16384), _pf(_c(128, 128, 128, 8, 4, GLU_APART=1), 256)),
        "glu-m64-n256-s4": ((1024, 4096), _pf(_c(64, 256, 128, 4, 4, GLU_APART=1), 128)),
        # gate|up rows paired in blocks of 128 (GU_PAIRED): the same 256-wide tile with SwiGLU in gemm1's
        # epilogue, no gate|up buffer and no SwiGLU kernel
        "gup-m128-n256-s4": ((4096, 16384), _pf(_c(128, 256, 128, 8, 4, GU_PAIRED=1), 256)),
        "gup-m128-n256-s4-gm32": ((4096, 16384), _pf(_c(128, 256, 128, 8, 4, GU_PAIRED=1, GROUP_M=32), 256)),
        "gup-m128-n256-s3": ((4096, 16384), _pf(_c(128, 256, 128, 8, 3, GU_PAIRED=1), 256)),
    },
    "mxfp4": {
        # the CUDA kernel's CTA shapes (WN tiles x WK K-warps, D chunks in flight, MT tiles per warp),
        # token groups per pass (G), the resident warps its registers are sized for (W1 / W2), the
        # kernel's option bits (FL, mx_cuda.Variant) and the activations through each warp's ring
        # (ASMEM); after "|" the down GEMM's own shape
        "d2x4x8": ((1,), "mma:WN=2,WK=2,D=8,MT=1|WK=4"),
        "d2x4x4": ((1,), "mma:WN=2,WK=2,D=8,MT=1|WK=4,D=4"),
        "d4x2x8": ((1,), "mma:WN=2,WK=2,D=8,MT=1|WN=4"),
        "d8x1x4-mt1": ((4, 16, 64), "mma:|MT=1"),
        "d4x2x4-mt1": ((4, 16), "mma:|WN=4,WK=2,MT=1"),
        "d2x2x8-mt1": ((4,), "mma:|WN=2,WK=2,D=8,MT=1"),
        # four token groups per pass: at 32 rows per expert (batch 1024) one pass streams an expert's weights
        # once (two groups: twice); at 128 (4096) four passes instead of the dequantize-to-bf16 path
        "g4": ((1024, 4096), "mma:G=4"),
        "g4-mt1": ((1024,), "mma:MT=1,G=4"),
        "g4-4x1x8-mt2": ((1024,), "mma:WN=4,WK=1,D=8,MT=2,G=4"),
        # dequantize-to-bf16 with gemm1 in wide gate|up tiles (GLU_APART)
        "dq-glu-m64-n128": ((4096,), (_c(64, 128, 64, 4, 4, GLU_APART=1, DEQUANT_BF16=1), _c(64, 128, 64, 4, 4))),
        "dq-glu-m128-n256": ((4096, 16384), (_c(128, 256, 64, 8, 3, GLU_APART=1, DEQUANT_BF16=1), _c(128, 128, 64, 8, 3))),
        # the dequantization written in the paired gate|up order, then gemm1 with SwiGLU in its epilogue
        # (GU_PAIRED; not measured yet)
        "dq-gup-m128-n256": ((4096, 16384), (_c(128, 256, 64, 8, 3, GU_PAIRED=1, DEQUANT_BF16=1), _c(128, 128, 64, 8, 3))),
        # the prefill kernel (mx_wgmma.cu: weights unpacked into wgmma's register operand, "wg:" + its
        # WgVariant keys) against the dequantize-to-bf16 path it replaces ("dq": what the default was
        # before it), and at 256-1024 against the decode kernels
        "dq": ((4096, 16384), "dq"),
        "wg": ((512,), "wg:"),
        "wg-bt64": ((512, 1024), "wg:BT=64"),
        "wg-bt32-s6": ((256, 1024), "wg:BT=32,S=6"),
        "wg-s3": ((4096, 16384), "wg:S=3"),
        "wg-s5": ((4096, 16384), "wg:S=5"),
    },
    "mxfp4-w4a8": {
        # before: the Triton w4a8 loop (one MX group per FP8 dot); the CUDA kernels on e4m3 activations
        # against the fp8 GEMM on weights dequantized to e4m3 once per call. The decode default is the
        # W4A8 kernel (mma8: e4m3 read directly, m16n8k32 e4m3 MMAs); "mma-w4a16" is the W4A16 kernel on
        # the activations converted to bf16 (the default before it), same CTA shape rule
        "triton-gpi": ((1, 16, 64, 256), _c(16, 64, 128, 4, 4, GPI=3)),
        "dequant-fp8": ((256, 1024), dict(_c(64, 64, 128, 4, 4, SWAP_AB=1), DEQUANT_FP8=1)),
        "mma-w4a16": ((1, 4, 16, 64, 128, 256, 1024), "mma:"),
        "mma-g2": ((1024,), "mma:WN=8,WK=1,D=4,MT=2,G=2"),
        # the W4A8 kernel's two builds: F16MMA=1 (the default: each step as two f16 MMAs) and 0 (the
        # e4m3 mma.sync as written), at the default's CTA shape rule; then shapes and token groups
        "mma8-e4m3": ((1, 4, 16, 64, 256, 1024), "mma8:F16MMA=0"),
        "mma8-e4m3-8x1x4-mt2": ((1, 16, 256), "mma8:WN=8,WK=1,D=4,MT=2,F16MMA=0"),
        "mma8-2x2x8": ((1, 4, 16), "mma8:WN=2,WK=2,D=8,MT=1,F16MMA=1"),
        "mma8-8x1x4-mt2": ((1, 4), "mma8:WN=8,WK=1,D=4,MT=2,F16MMA=1"),
        "mma8-4x1x8-mt2": ((16, 64, 256), "mma8:WN=4,WK=1,D=8,MT=2,F16MMA=1"),
        "mma8-g1": ((64, 256), "mma8:WN=8,WK=1,D=4,MT=2,G=1,F16MMA=1"),
        "mma8-g4": ((256, 1024), "mma8:WN=8,WK=1,D=4,MT=2,G=4,F16MMA=1"),
        "mma8-g4-mt1": ((1024,), "mma8:WN=8,WK=1,D=4,MT=1,G=4,F16MMA=1"),
        # the mxfp4 prefill kernel on the e4m3 activations converted to bf16 (row scales in its epilogue)
        # against the dequantize-to-e4m3 fp8 GEMM ("dq": the default without it) and the W4A16 decode kernel
        "dq": ((1024, 4096, 8192, 16384), "dq"),
        "wg": ((1024, 4096, 16384), "wg:"),
        # the e4m3 prefill kernels (FP8 MMAs, "wg8:" + WgVariant keys; the default from 17 to 128 rows per
        # expert) at the decode kernel's last batch, past the dequantize path's first, and shapes
        "wg8": ((512, 16384), "wg8:"),
        # the table form (LUT=1: the group's scale in the e4m3 operand, no rescaling of the sums)
        "wg8l": ((1024, 4096, 16384), "wg8:LUT=1"),
        "wg8l-rescale": ((1024, 4096), "wg8:LUT=0"),
        "wg8l-bt32-s6": ((64, 128, 256, 512, 1024), "wg8:LUT=1,BT=32,S=6"),
        "wg8l-bt64": ((1024, 2048, 4096), "wg8:LUT=1,BT=64"),
        "wg8l-bt64-minb3": ((1024,), "wg8:LUT=1,BT=64,MINB=3"),
        "wg8l-s6": ((4096, 16384), "wg8:LUT=1,S=6"),
        "wg8l-nwg1-minb3": ((4096, 16384), "wg8:LUT=1,NWG=1,S=4,MINB=3"),
        "wg8l-nwg1-minb4": ((4096,), "wg8:LUT=1,NWG=1,S=4,MINB=4"),
        # each chunk's MMAs left in flight into the next chunk (IF=1; one stage fewer loaded ahead)
        "wg8l-if": ((4096, 16384), "wg8:LUT=1,IF=1"),
        "wg8l-if-s5": ((2048, 4096, 8192, 16384), "wg8:LUT=1,IF=1,S=5"),
        "wg8l-if-s6": ((4096, 16384), "wg8:LUT=1,IF=1,S=6"),
        "wg8-bt32-s6": ((256, 512, 1024), "wg8:BT=32,S=6"),
        "wg8-bt32-s6-nwg1-minb6": ((256, 512, 1024), "wg8:NWG=1,BT=32,S=6,MINB=6"),
        "wg8-bt32-s8-nwg1-minb6": ((256, 512), "wg8:NWG=1,BT=32,S=8,MINB=6"),
        "wg8-bt64": ((1024, 4096), "wg8:BT=64"),
        "wg8-bt64-minb3": ((1024, 4096), "wg8:BT=64,MINB=3"),
        "wg8-bt64-nwg1-minb6": ((1024, 4096), "wg8:NWG=1,BT=64,MINB=6"),
        "wg8-bt64-nwg1-s6-minb6": ((1024,), "wg8:NWG=1,BT=64,S=6,MINB=6"),
        "wg8-s6": ((1024, 4096, 16384), "wg8:S=6"),
        "wg8-s8": ((4096,), "wg8:S=8"),
        "wg8-nwg1-minb3": ((4096, 16384), "wg8:NWG=1,S=4,MINB=3"),
        "wg8-nwg1-minb4": ((4096, 16384), "wg8:NWG=1,S=4,MINB=4"),
        "wg8-nwg1-s6-minb4": ((4096,), "wg8:NWG=1,S=6,MINB=4"),
    },
    "bf16": {
        "swap-m32": ((1024,), _c(32, 64, 128, 4, 4, SWAP_AB=1)),
        # gemm1 over the 2I gate|up rows in wide tiles, then the SwiGLU kernel (GLU_APART); down GEMM as
        # the default's
        "glu-m64-n128-s4": ((4096,), (_c(64, 128, 64, 4, 4, GLU_APART=1), _c(64, 128, 64, 4, 4))),
        "glu-m64-n256-s3": ((4096,), (_c(64, 256, 64, 4, 3, GLU_APART=1), _c(64, 128, 64, 4, 4))),
        "glu-m128-n128-s3": ((4096, 16384), (_c(128, 128, 64, 8, 3, GLU_APART=1), _c(128, 128, 64, 8, 3))),
        "glu-m128-n256-s3": ((4096, 16384), (_c(128, 256, 64, 8, 3, GLU_APART=1), _c(128, 128, 64, 8, 3))),
        "gup-m128-n256-s3": ((4096, 16384), (_c(128, 256, 64, 8, 3, GU_PAIRED=1), _c(128, 128, 64, 8, 3))),
        "gup-m64-n128-s4": ((4096,), (_c(64, 128, 64, 4, 4, GU_PAIRED=1), _c(64, 128, 64, 4, 4))),
    },
}
PEER_FORMATS = ("bf16", "fp8")


def points(batches, formats=tuple(VARIANTS)):
    """(fmt, batch, name, cfg or None) for every default and every listed variant at those batches."""
    out = []
    for b in batches:
        for fmt, vs in VARIANTS.items():
            if fmt not in formats:
                continue
            out.append((fmt, b, "default", None))
            for name, (bs, cfg) in vs.items():
                if b in bs:
                    out.append((fmt, b, name, cfg))
    return out


def _build(fmt, b, cfg, kernel="triton"):
    from moeprof.models.kernels import moe_gemm as mg
    from moeprof.models.layer import build_layer_for_model, model_shapes

    pair = None
    if isinstance(cfg, str) and cfg.split(":")[0] in ("wg", "wg8", "dq"):
        sh = model_shapes(MODEL)
        if cfg == "dq":
            # the configuration the default takes without the prefill kernel (the dequantize path)
            keep, keep8 = mg.WG_MIN_ROWS_PER_EXPERT, mg.W4A8_WG_MAX_ROWS_PER_EXPERT
            mg.WG_MIN_ROWS_PER_EXPERT, mg.W4A8_WG_MAX_ROWS_PER_EXPERT = float("inf"), 0
            try:
                m = b * sh["top_k"] / sh["num_experts"]
                i, h = sh["intermediate_size"], sh["hidden_size"]
                kw = dict(slots=b * sh["top_k"], experts=min(sh["num_experts"], b * sh["top_k"]),
                          local_experts=sh["num_experts"])
                cfg = (mg.default_config(fmt, m, i, h, True, **kw), mg.default_config(fmt, m, h, i, False, **kw))
            finally:
                mg.WG_MIN_ROWS_PER_EXPERT, mg.W4A8_WG_MAX_ROWS_PER_EXPERT = keep, keep8
        else:
            wg_kernel, spec = cfg.split(":", 1)
            shape = {k: int(v) for k, v in (x.split("=") for x in spec.split(",") if x)}
            cfg = mg.wg_config(kernel=wg_kernel, **shape)
    if isinstance(cfg, str) and cfg.split(":")[0] in ("mma", "mma8"):
        # a CUDA kernel ("mma": bf16 activations, "mma8": e4m3) with the CTA shape given (keys not given:
        # the default's rule for this batch) and the default token groups unless G is given; "A|B": B
        # overrides A's keys for the down GEMM
        sh = model_shapes(MODEL)
        mma_kernel, spec = cfg.split(":", 1)
        spec1, _, spec2 = spec.partition("|")
        parse = lambda t: {k: int(v) for k, v in (x.split("=") for x in t.split(",") if x)}
        shape = parse(spec1)
        groups = shape.pop("G", None)
        m = b * sh["top_k"] / sh["num_experts"]
        experts = min(sh["num_experts"], b * sh["top_k"])
        c1 = mg.mma_config(m, experts, True, kernel=mma_kernel, **shape)
        c2 = mg.mma_config(m, experts, False, kernel=mma_kernel, **{**shape, **parse(spec2)})
        for c in (c1, c2):
            if groups:
                c["G"] = groups
        cfg = (c1, c2)
    if cfg is not None:
        c1, c2 = (dict(cfg[0]), dict(cfg[1])) if isinstance(cfg, tuple) else (dict(cfg), dict(cfg))
        if c1.get("DEQUANT_BF16"):
            c2["BN"] = 128   # the bf16 defaults' gemm2 tile (not gated)
        if "SPLIT_K" not in c1 and c1.get("MXV"):
            # the default's split-K heuristic, applied to the variant's tile (few experts: split K)
            sh = model_shapes(MODEL)
            slots = b * sh["top_k"]
            et = min(sh["num_experts"], slots)
            if slots / sh["num_experts"] <= 16:
                c1["SPLIT_K"] = mg.split_k_for(c1, sh["intermediate_size"], sh["hidden_size"], et, slots)
                c2["SPLIT_K"] = mg.split_k_for(c2, sh["hidden_size"], sh["intermediate_size"], et, slots)
        pair = (c1, c2)
    return build_layer_for_model(MODEL, fmt, b, seed=SEED, kernel=kernel, cfg=pair)


def spin_gpu(seconds: float) -> None:
    """Untimed bf16 matmul loop for `seconds` (clocks up from idle before the first timed point)."""
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    t_spin = time.time()
    while time.time() - t_spin < seconds:
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()
    del a


def _warm(batch_of_points):
    """Worker: one call per point, so that Triton compiles and caches every kernel."""
    import torch

    done = []
    for fmt, b, name, cfg in batch_of_points:
        try:
            layer = _build(fmt, b, cfg)
            layer()
            torch.cuda.synchronize()
            done.append((fmt, b, name, "ok"))
        except Exception as exc:  # noqa: BLE001 - reported by the timed pass
            done.append((fmt, b, name, f"{type(exc).__name__}: {exc}"[:200]))
    return done


def gemm_callable(layer):
    """The layer's two expert GEMMs with routing, sort and activation quant done once outside."""
    from moeprof.models.kernels import moe_gemm as mg
    from moeprof.models.kernels import route as mg_route

    ids, tw = mg_route.route(layer.x, layer.router_w, layer.router_b, layer.top_k)
    sids, eids, npp, counts = mg.moe_align(ids, layer.wt.num_experts, layer.cfg1["BM"], layer.expert_offset)
    tw = tw.reshape(-1)
    # (as the layer quantizes: e4m3, or its values as bf16 where the layer's kernels read bf16)
    a, a_s = layer.quant_activations(layer.x)
    layer._gemm1(a, a_s, tw, sids, eids, npp, counts)
    a2, a2s = layer.quant_activations(layer.inter_buf)

    def run():
        layer._gemm1(a, a_s, tw, sids, eids, npp, counts)
        layer._gemm2(a2, a2s, tw, sids, eids, npp, counts)

    return run


NCU_METRICS = ["gpu__time_duration.sum", "dram__throughput.avg.pct_of_peak_sustained_elapsed",
               "dram__bytes_read.sum", "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed",
               "sm__ops_path_tensor_src_fp8_sparsity_off.sum", "sm__ops_path_tensor_src_fp16.sum",
               "sm__throughput.avg.pct_of_peak_sustained_elapsed", "sm__inst_executed.sum",
               "launch__registers_per_thread", "sm__warps_active.avg.pct_of_peak_sustained_active",
               "lts__throughput.avg.pct_of_peak_sustained_elapsed", "lts__t_bytes.sum"]


def run_ncu(out_dir, fmt, b, tag, pair=None, who="moeprof", sglang_trim=""):
    """ncu (clocks as found) on the two expert-GEMM launches of one call: moeprof's (moe_gemm kernels of a
    layer call, defaults or `pair`), the torch peer's (the grouped GEMMs of peers.grouped_gemms_only, the
    second run's two CUTLASS launches) or SGLang's (fused_moe_kernel, tile `pair`, the second run's two)."""
    here = os.path.dirname(__file__)
    cmd = ["ncu", "--clock-control", "none", "--metrics", ",".join(NCU_METRICS), "--section", "WarpStateStats",
           "--csv", "--page", "raw"]
    if who == "moeprof":
        cmd += ["--kernel-name", "regex:moe_gemm|mx_w4a16|mx_w4a8|mx_wg", "--launch-count", "2",
                sys.executable, os.path.join(here, "moe_ncu_one.py"), fmt, str(b)]
        if pair is not None:
            cmd += [json.dumps(pair[0]), json.dumps(pair[1])]
    elif who == "torch":
        # one set-up launch of gemm1, then two runs of the two GEMMs
        cmd += ["--kernel-name", "regex:cutlass", "--launch-skip", "3", "--launch-count", "2",
                sys.executable, os.path.join(here, "moe_ncu_one.py"), fmt, str(b), "--torch-gemms"]
    else:
        cmd += ["--kernel-name", "fused_moe_kernel", "--launch-skip", "3", "--launch-count", "2",
                sys.executable, os.path.join(here, "sglang_gemm_peer.py"), "--sglang-trim", sglang_trim,
                "--ncu-one", str(b), json.dumps(pair)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return dict(error="ncu: timed out after 120 s")
    with open(os.path.join(out_dir, f"ncu_{fmt}_{b}_{who}_{tag}.csv"), "w") as fh:
        fh.write(p.stdout)
    rows = [ln for ln in p.stdout.splitlines() if ln.startswith('"')]
    if len(rows) < 3:
        return dict(error=(p.stderr or p.stdout)[-300:])
    import csv
    import io

    table = list(csv.reader(io.StringIO("\n".join(rows))))
    head, data = table[0], [r for r in table[2:] if len(r) == len(table[0])]
    out = []
    for r in data:
        d = dict(zip(head, r))
        # the largest stall reasons (warps stalled per issued instruction)
        stalls = sorted(((k.split("stalled_")[1].split("_per_issue")[0], float(v.replace(",", "")))
                         for k, v in d.items() if k.startswith("smsp__average_warps_issue_stalled_")
                         and k.endswith("_per_issue_active.ratio") and v.replace(",", "").replace(".", "").isdigit()),
                        key=lambda kv: -kv[1])[:6]
        out.append({m: d.get(m) for m in NCU_METRICS} | {"kernel": d.get("Kernel Name", "")[:30],
                                                      "stalls": stalls,
                                                      "warps_active": d.get("sm__warps_active.avg.pct_of_peak_sustained_active")})
    return dict(kernels=out)


def _warm_sglang(job):
    """Worker: SGLang's whole call and its GEMM-only callable once per (batch, tile), to compile them."""
    import torch

    import sglang_gemm_peer as sp

    trim, items = job
    done = []
    peer = sp.SglangFp8Peer(trim, empty=True)
    import sglang_fused_moe as ex

    for b, tile in items:
        try:
            x, tw, ids = ex.route(b, peer.experts, peer.top_k, peer.hidden, b)
            peer.full_call(x, tw, ids, tile)
            run, _ = peer.gemm_callable(x, tw, ids, tile)
            run()
            torch.cuda.synchronize()
            done.append(("sglang", b, sp.tile_name(tile), "ok"))
        except Exception as exc:  # noqa: BLE001 - reported by the timed pass
            done.append(("sglang", b, sp.tile_name(tile), f"{type(exc).__name__}: {exc}"[:200]))
    return done


def sglang_row(peer, b, tile, inputs, ref, weight_bytes, args):
    """Check SGLang's tile (whole call, and the GEMM-only path) against the float32 reference, then time
    its two GEMMs alone."""
    from moeprof.models.reference import rel_err
    from moeprof.profiler import timing

    import sglang_gemm_peer as sp

    x, tw, ids = inputs
    row = dict(fmt="fp8", batch=b, variant="sglang:" + sp.tile_name(tile), tile=tile,
               sglang_default=sp.tile_name(tile) == sp.tile_name(peer.default_tile(b)))
    err_call = rel_err(peer.full_call(x, tw, ids, tile), ref)
    run, out3 = peer.gemm_callable(x, tw, ids, tile)
    out3.fill_(float("nan"))   # every row the down GEMM should write is poisoned first
    run()
    err = rel_err(out3.float().sum(dim=1), ref)
    import sglang_fused_moe as ex

    bound = ex.ERROR_BOUND["fp8"]
    row.update(rel_err=err, rel_err_call=err_call, ok=err < bound and err_call < bound)
    if row["ok"]:
        r = timing.time_fn(run, repeats=args.repeats, warmup=3, warmup_s=args.warmup_s)
        row.update(gemm_us=r.median_ns / 1e3, p10_us=r.p10_ns / 1e3, p90_us=r.p90_ns / 1e3, used_graph=r.used_graph,
                   pct_dram_peak=100 * weight_bytes / (r.median_ns * 1e-9) / args.dram_peak)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--batches", default="1,4,16,64,256,1024,4096,16384")
    ap.add_argument("--formats", default=",".join(VARIANTS), help="comma list of formats to run")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--dram-peak", type=float, default=4.81e12, help="bytes/s (ncu's DRAM peak of the card)")
    ap.add_argument("--defaults-only", action="store_true", help="time the default configurations alone")
    ap.add_argument("--variants", default="", help="comma list: time only these variants (and the defaults)")
    ap.add_argument("--sglang-trim", default="",
                    help="trimmed SGLang package (examples/sglang/prepare.py): add SGLang's fp8 GEMMs as a peer")
    ap.add_argument("--ncu", action="store_true")
    ap.add_argument("--ncu-batch", default="64",
                    help="comma list; 'worst': the fp8 batch where the best moeprof configuration is furthest "
                         "behind the fastest peer (ncu on both)")
    ap.add_argument("--phase", choices=("all", "warm", "time"), default="all",
                    help="warm: compile only (parallel); time: check and time (kernels compiled before)")
    ap.add_argument("--spin-s", type=float, default=2.0, help="seconds of untimed GPU work before timing")
    ap.add_argument("--warmup-s", type=float, default=0.0,
                    help="seconds each timed callable runs untimed right before its repeats (timing.time_fn "
                         "warmup_s; 0.2 s slowed the points after the first by 7-15 %%: docs/performance.md, run 78)")
    ap.add_argument("--no-pilot", action="store_true",
                    help="time the first point once only (by default its first timing is discarded: the first "
                         "timed point of a process started slow, docs/performance.md, runs 76 and 78)")
    ap.add_argument("--budget-s", type=float, default=1e9, help="skip the points left after this many seconds")
    ap.add_argument("--ncu-budget-s", type=float, default=1e9, help="start no ncu run after this many seconds")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    t0 = time.time()

    import torch

    from moeprof.models import peers
    from moeprof.models.reference import ERROR_BOUNDS, poisoned_call, rel_err
    from moeprof.profiler import timing
    from moeprof.profiler.clocks import ClockSampler

    batches = [int(x) for x in args.batches.split(",") if x]
    formats = tuple(f for f in args.formats.split(",") if f)
    keep = {v for v in args.variants.split(",") if v}
    pts = [p for p in points(batches, formats)
           if p[2] == "default" or (not args.defaults_only and (not keep or p[2] in keep))]
    sg_tiles = []
    if args.sglang_trim and "fp8" in formats:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import sglang_gemm_peer as sp

        sg_tiles = sp.tiles()
        # after each batch's fp8 points (their default row holds the routing SGLang is handed)
        out = []
        for p in pts:
            out.append(p)
            nxt = pts[pts.index(p) + 1] if pts.index(p) + 1 < len(pts) else None
            if p[0] == "fp8" and (nxt is None or nxt[0] != "fp8" or nxt[1] != p[1]):
                out += [("fp8", p[1], "sglang:" + sp.tile_name(t), t) for t in sg_tiles]
        pts = out
    props = torch.cuda.get_device_properties(0)
    print(f"CARD {props.name} SMs {props.multi_processor_count}; {len(pts)} points", flush=True)

    # ---- compile everything in parallel (each worker: its own CUDA context and weight cache)
    if args.workers > 1 and args.phase in ("all", "warm"):
        import concurrent.futures as cf
        import multiprocessing as mp

        own = [p for p in pts if not p[2].startswith("sglang:")]
        sg_batches = sorted({p[1] for p in pts if p[2].startswith("sglang:")})
        # one format per worker (each holds only that format's weights), points dealt round-robin;
        # SGLang's tiles in their own workers, each tile in one worker at every batch (one compile per
        # specialization)
        n_sg = min(len(sg_tiles), max(1, args.workers // 3)) if sg_batches else 0
        n_own = max(1, args.workers - n_sg)
        by_fmt = {f: [p for p in own if p[0] == f] for f in VARIANTS}
        share = {f: max(1, round(n_own * len(v) / len(own))) for f, v in by_fmt.items() if v}
        chunks = [v[i::share[f]] for f, v in by_fmt.items() if v for i in range(share[f])]
        with cf.ProcessPoolExecutor(len(chunks) + n_sg, mp_context=mp.get_context("spawn")) as ex:
            futs = [ex.submit(_warm, c) for c in chunks]
            futs += [ex.submit(_warm_sglang, (args.sglang_trim, [(b, t) for t in sg_tiles[i::n_sg] for b in sg_batches]))
                     for i in range(n_sg)]
            for f in futs:
                for r in f.result():
                    if r[3] != "ok":
                        print("WARM", r, flush=True)
        print(f"compiled in {time.time() - t0:.0f} s", flush=True)
    if args.phase == "warm":
        return

    spin_gpu(args.spin_s)

    rows = []
    refs = {}
    piloted = args.no_pilot
    sg_peer = sp.SglangFp8Peer(args.sglang_trim) if sg_tiles else None
    sg_inputs, sg_refs, sg_bytes = {}, {}, {}
    for fmt, b, name, cfg in pts:
        row = dict(fmt=fmt, batch=b, variant=name)
        if time.time() - t0 > args.budget_s:
            row.update(ok=False, error="skipped: time budget")
            rows.append(row)
            continue
        try:
            if name.startswith("sglang:"):
                if b not in sg_inputs:
                    raise RuntimeError("no routing from moeprof's default row at this batch")
                if b not in sg_refs:
                    sg_refs[b] = sg_peer.reference(*sg_inputs[b])
                row = sglang_row(sg_peer, b, cfg, sg_inputs[b], sg_refs[b], sg_bytes[b], args)
            else:
                layer = _build(fmt, b, cfg)
                if (fmt, b) not in refs:
                    refs[(fmt, b)] = layer.reference()
                out = poisoned_call(layer)
                err = rel_err(out, refs[(fmt, b)])
                row.update(rel_err=err, ok=err < ERROR_BOUNDS[fmt], cfg1=layer.cfg1, cfg2=layer.cfg2,
                           experts=layer.experts_touched, weight_bytes=layer.weight_bytes_read)
                run = gemm_callable(layer)
                if not piloted:   # the process's first timing, discarded (see --no-pilot)
                    timing.time_fn(run, repeats=args.repeats, warmup=3, warmup_s=args.warmup_s)
                    piloted = True
                # (NVML beside the timed calls: SM clock, power, power capping; profiler/clocks.py)
                with ClockSampler() as clocks:
                    r = timing.time_fn(run, repeats=args.repeats, warmup=3, warmup_s=args.warmup_s)
                row.update(gemm_us=r.median_ns / 1e3, p10_us=r.p10_ns / 1e3, p90_us=r.p90_ns / 1e3,
                           pct_dram_peak=100 * layer.weight_bytes_read / (r.median_ns * 1e-9) / args.dram_peak)
                if clocks.summary is not None:
                    row.update(sm_clock_mhz=clocks.summary.sm_clock_median_mhz,
                               power_capped_pct=100 * clocks.summary.power_capped_fraction)
                if name == "default":   # the whole layer call too (route, sort, quant, GEMMs, combine)
                    row["layer_us"] = timing.time_fn(layer, repeats=args.repeats, warmup=3, warmup_s=args.warmup_s).median_ns / 1e3
                if name == "default" and fmt in PEER_FORMATS:
                    peer = _build(fmt, b, None, kernel="torch-grouped")
                    rp = timing.time_fn(peers.grouped_gemms_only(peer), repeats=args.repeats, warmup=3, warmup_s=args.warmup_s)
                    rl = timing.time_fn(peer, repeats=args.repeats, warmup=3, warmup_s=args.warmup_s)
                    row.update(peer_gemm_us=rp.median_ns / 1e3, peer_layer_us=rl.median_ns / 1e3)
                    del peer
                if name == "default" and fmt == "fp8" and sg_peer is not None:
                    sg_inputs[b] = sp.routed_inputs(layer)
                    sg_bytes[b] = layer.weight_bytes_read
                del layer
        except Exception as exc:  # noqa: BLE001 - a variant that fails is a result
            row.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
        rows.append(row)
        print("ROW", json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                                 if k not in ("cfg1", "cfg2", "tile")}), flush=True)
        if (fmt, b) != (pts[-1][0], pts[-1][1]):
            torch.cuda.empty_cache()

    # ---- best correct configuration per (fmt, batch): moeprof's (default or variant) and SGLang's
    best, best_sg = {}, {}
    for r in rows:
        if r.get("ok") and "gemm_us" in r:
            k = (r["fmt"], r["batch"])
            pool = best_sg if r["variant"].startswith("sglang:") else best
            if k not in pool or r["gemm_us"] < pool[k]["gemm_us"]:
                pool[k] = r
    torch_us = {(r["fmt"], r["batch"]): r["peer_gemm_us"] for r in rows if "peer_gemm_us" in r}
    ncu = {}
    if args.ncu:
        if args.ncu_batch == "worst":
            # fp8: the batch where moeprof's best is furthest behind the faster of the two peers
            gaps = {}
            for (fmt, b), r in best.items():
                if fmt != "fp8":
                    continue
                peer_us = [u for u in (torch_us.get(("fp8", b)), best_sg.get(("fp8", b), {}).get("gemm_us"))
                           if u]
                if peer_us:
                    gaps[b] = r["gemm_us"] / min(peer_us)
            ncu_batches = [max(gaps, key=gaps.get)] if gaps and max(gaps.values()) > 1.0 else []
            ncu_formats = ("fp8",)
        else:
            ncu_batches = [int(x) for x in args.ncu_batch.split(",") if x]
            ncu_formats = ("fp8", "mxfp4", "mxfp4-w4a8")
        for nb in ncu_batches:
            for fmt in ncu_formats:
                k = (fmt, nb)
                if k not in best:
                    continue
                dflt = next((r for r in rows if r["fmt"] == fmt and r["batch"] == nb and r["variant"] == "default"), None)
                jobs = [("default", dflt, "moeprof"), ("best", best[k], "moeprof")]
                if fmt == "fp8" and args.ncu_batch == "worst":
                    t_us = torch_us.get(k, float("inf"))
                    s_us = best_sg.get(k, {}).get("gemm_us", float("inf"))
                    jobs.append(("peer", best_sg.get(k), "sglang") if s_us < t_us else ("peer", dflt, "torch"))
                for tag, r, who in jobs:
                    if time.time() - t0 > args.ncu_budget_s:
                        break
                    if r is None or (tag == "best" and r["variant"] == "default"):
                        continue
                    if who == "sglang":
                        pair = r["tile"]
                    else:
                        pair = None if r["variant"] == "default" or who == "torch" else (r["cfg1"], r["cfg2"])
                    key = f"{fmt}/{nb}/{who}/{tag}:{r['variant'] if who != 'torch' else 'torch._scaled_grouped_mm'}"
                    ncu[key] = run_ncu(args.out_dir, fmt, nb, tag, pair, who, args.sglang_trim)
    with open(os.path.join(args.out_dir, "variants.json"), "w") as fh:
        json.dump(dict(card=props.name, sms=props.multi_processor_count, torch=torch.__version__,
                       command=" ".join(sys.argv), rows=rows, ncu=ncu), fh, indent=1, default=str)

    for key, v in ncu.items():
        for kr in v.get("kernels", []):
            print("NCU", key, json.dumps(kr), flush=True)
        if "error" in v:
            print("NCU", key, "ERROR", v["error"], flush=True)
    print(f"\nSUMMARY {props.name}: expert GEMMs, us (% of DRAM peak {args.dram_peak / 1e12:.2f} TB/s); "
          f"{time.time() - t0:.0f} s")
    print(f"{'fmt':6s} {'batch':>5s} {'variant':30s} {'ok':>3s} {'err':>8s} {'gemm_us':>8s} {'%peak':>6s} {'peer_us':>8s} "
          f"{'layer_us':>8s} {'SM_MHz':>6s} {'capped':>6s}")
    for r in rows:
        print(f"{r['fmt']:6s} {r['batch']:5d} {r['variant'][:30]:30s} {'y' if r.get('ok') else 'N':>3s} "
              f"{r.get('rel_err', float('nan')):8.1e} {r.get('gemm_us', float('nan')):8.1f} "
              f"{r.get('pct_dram_peak', float('nan')):6.1f} {r.get('peer_gemm_us', float('nan')):8.1f} "
              f"{r.get('layer_us', float('nan')):8.1f} {r.get('sm_clock_mhz', float('nan')):6.0f} "
              f"{r.get('power_capped_pct', float('nan')):5.0f}%"
              + (f" {r['error'][:60]}" if "error" in r else ""))
    if best:
        # fp8 against both peers: moeprof's default, its best configuration, torch's GEMMs, SGLang's best tile
        print(f"\nFP8 PEERS {props.name}: GEMMs us; ratio = peer / moeprof (> 1: moeprof faster)")
        print(f"{'batch':>5s} {'default':>8s} {'best':>8s} {'best variant':22s} {'torch':>8s} {'sglang':>8s} "
              f"{'sglang tile':28s} {'t/def':>6s} {'s/def':>6s} {'t/best':>6s} {'s/best':>6s}")
        # a batch listed twice (--batches 1,1) is one line, from its later default row: each format's first
        # point in a process can run slow (docs/performance.md, runs 81-85)
        for b in dict.fromkeys(batches):
            d = next((r for r in reversed(rows) if r["fmt"] == "fp8" and r["batch"] == b and r["variant"] == "default"), {})
            bo, so = best.get(("fp8", b), {}), best_sg.get(("fp8", b), {})
            du, bu, tu, su = (d.get("gemm_us", float("nan")), bo.get("gemm_us", float("nan")),
                              torch_us.get(("fp8", b), float("nan")), so.get("gemm_us", float("nan")))
            print(f"{b:5d} {du:8.1f} {bu:8.1f} {bo.get('variant', '-')[:22]:22s} {tu:8.1f} {su:8.1f} "
                  f"{so.get('variant', '-')[7:35]:28s} {tu / du:6.2f} {su / du:6.2f} {tu / bu:6.2f} {su / bu:6.2f}")


if __name__ == "__main__":
    main()
