"""SGLang 0.5.23's `fused_moe_kernel` as a GEMM-only peer of moeprof's FP8 expert GEMMs (one GPU).

Used by benchmarks/moe_gemm_variants.py (--sglang-trim DIR): on the same tokens and the same routing
as moeprof's layer, SGLang's two `fused_moe_kernel` launches (gate_up, then down with the routing
weight) are timed alone, the way the torch peer's grouped GEMMs are: SGLang's align, the per-tensor
activation quantization of x and of the intermediate, and SiLU-and-multiply are done once outside the
timed callable (the activations are handed to `invoke_fused_moe_kernel` already in e4m3 with their
scale; SGLang's quantizer is told to pass e4m3 input through). Weights: e4m3 with one scale per expert
(SGLang's per-tensor W8A8 path, examples/sglang_fused_moe.build_experts), the same shapes and bytes as
moeprof's. Each tile configuration is checked before it is timed: SGLang's whole call
(`fused_experts_impl` under `override_config`) and the GEMM-only path's own output (the down GEMM's
rows summed over the top-k) against the example's float32 reference (SiLU(gate) * up, no biases).

    python3 benchmarks/sglang_gemm_peer.py --ncu-one BATCH CONFIG_JSON [--sglang-trim DIR]

runs the GEMM-only callable twice at one batch for `ncu --kernel-name fused_moe_kernel --launch-skip 3
--launch-count 2` (one set-up launch of gate_up first; routing as moeprof's gpt-oss-120b layer at that batch).

    python3 benchmarks/sglang_gemm_peer.py --compile-report gate_up|down CONFIG_JSON [--sglang-trim DIR]

needs no GPU: compiles `fused_moe_kernel` for sm_90 with the constexprs and integer specializations
SGLang's fp8 per-tensor launch gives it at gpt-oss-120b shapes, and prints what benchmarks/compile_report.py
prints for moeprof's kernel (registers, spills, shared memory, SASS histogram). Use Triton 3.6 (the GPU
machine's) for numbers that match it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))

MODEL = "gpt-oss-120b"

# Tiles tried besides the example's TILE_CANDIDATES["fp8"] (SGLang's two defaults and four more):
# a deeper pipeline for the swap-AB decode tile, a 32-row swap-AB tile, and SGLang's prefill default
# with three stages. The best of all of them, per batch, is "SGLang best-found".
EXTRA_FP8_TILES = [
    dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=64, BLOCK_SIZE_K=256, GROUP_SIZE_M=1, num_warps=4, num_stages=4),
    dict(BLOCK_SIZE_M=32, BLOCK_SIZE_N=64, BLOCK_SIZE_K=256, GROUP_SIZE_M=1, num_warps=4, num_stages=3),
    dict(BLOCK_SIZE_M=128, BLOCK_SIZE_N=256, BLOCK_SIZE_K=128, GROUP_SIZE_M=16, num_warps=8, num_stages=3),
]


def load_sglang(trim: str):
    """Import SGLang's fused-MoE path from the trimmed package; e4m3 activations pass its quantizer."""
    if not os.path.isdir(os.path.join(trim, "sglang")):
        raise SystemExit(f"sglang_gemm_peer: error: no trimmed SGLang package in {trim} "
                         "(run examples/sglang/prepare.py)")
    sys.path.insert(0, os.path.abspath(trim))
    import torch
    from sglang.kernels.ops.moe import fused_moe_triton_kernels as fk

    if not getattr(fk, "_moeprof_passthrough", False):
        quant = fk.scaled_fp8_quant

        def scaled_fp8_quant(a, scale=None, *args, **kw):
            # activations quantized outside the timed GEMMs arrive as e4m3 with their scale
            if a.dtype == torch.float8_e4m3fn and scale is not None:
                return a, scale
            return quant(a, scale, *args, **kw)

        fk.scaled_fp8_quant = scaled_fp8_quant
        fk._moeprof_passthrough = True
    return fk


def tiles():
    import sglang_fused_moe as ex

    return list(ex.TILE_CANDIDATES["fp8"]) + EXTRA_FP8_TILES


def tile_name(cfg: dict) -> str:
    import sglang_fused_moe as ex

    return ex.config_name(cfg)


class SglangFp8Peer:
    """SGLang's fp8 experts (gpt-oss-120b shapes) and the GEMM-only callables for one routing."""

    def __init__(self, trim: str, seed: int = 0, empty: bool = False):
        import sglang_fused_moe as ex

        from moeprof.models.layer import model_shapes

        self.fk = load_sglang(trim)
        sh = model_shapes(MODEL)
        self.hidden, self.inter = sh["hidden_size"], sh["intermediate_size"]
        self.experts, self.top_k = sh["num_experts"], sh["top_k"]
        self.w1, self.w2, self.s1, self.s2 = ex.build_experts("fp8", self.hidden, self.inter, self.experts, seed,
                                                              empty=empty)

    def default_tile(self, batch: int) -> dict:
        import torch
        from sglang.srt.layers.moe.moe_runner.triton_utils.fused_moe_triton_config import (
            get_config_dtype_str, try_get_optimal_moe_config)

        cfg, _ = try_get_optimal_moe_config(self.w1.shape, self.w2.shape, self.top_k,
                                            get_config_dtype_str(torch.bfloat16, use_fp8_w8a8=True), batch,
                                            return_down_config=True)
        return dict(cfg)

    def full_call(self, x, tw, ids, cfg):
        from sglang.srt.layers.moe.moe_runner.triton_utils import override_config
        from sglang.srt.layers.moe.moe_runner.triton_utils.fused_moe import fused_experts_impl

        with override_config(cfg):
            return fused_experts_impl(x, self.w1, self.w2, tw, ids, inplace=False, activation="silu",
                                      use_fp8_w8a8=True, w1_scale=self.s1, w2_scale=self.s2)

    def reference(self, x, tw, ids):
        import sglang_fused_moe as ex

        return ex.reference(x, tw, ids, self.w1, self.w2, self.s1, self.s2)

    def gemm_callable(self, x, tw, ids, cfg):
        """(run, out3): SGLang's two fused_moe_kernel launches with this tile; out3 [tokens, top_k,
        hidden] holds the down GEMM's routing-weighted rows of the last run (summed over top_k: the
        layer's output), for the check."""
        import torch
        import triton.language as tl
        from sglang.kernels.ops.quantization.fp8_kernel import scaled_fp8_quant
        from sglang.srt.layers.moe.moe_runner.triton_utils.moe_align_block_size import moe_align_block_size

        fk = self.fk
        m, k = x.shape
        sorted_ids, expert_ids, npp = moe_align_block_size(ids, cfg["BLOCK_SIZE_M"], self.experts)
        xq, xs = scaled_fp8_quant(x)
        c1 = torch.empty((m * self.top_k, 2 * self.inter), device=x.device, dtype=x.dtype)
        c3 = torch.empty((m, self.top_k, self.hidden), device=x.device, dtype=x.dtype)
        common = dict(compute_type=tl.bfloat16, use_fp8_w8a8=True, use_int8_w8a8=False, use_int8_w8a16=False,
                      use_int4_w4a16=False, per_channel_quant=False, block_shape=None)

        def gate_up():
            fk.invoke_fused_moe_kernel(xq, self.w1, None, c1, xs, self.s1, None, tw, ids, sorted_ids, expert_ids,
                                       npp, False, self.top_k, cfg, **common)

        gate_up()
        h = c1.float()
        act = (torch.nn.functional.silu(h[:, :self.inter]) * h[:, self.inter:]).to(x.dtype)
        aq, as_ = scaled_fp8_quant(act)

        def run():
            gate_up()
            fk.invoke_fused_moe_kernel(aq, self.w2, None, c3, as_, self.s2, None, tw, ids, sorted_ids, expert_ids,
                                       npp, True, 1, cfg, **common)

        return run, c3


def routed_inputs(layer):
    """The tokens and routing of moeprof's layer, in SGLang's argument form (ids int32, weights fp32)."""
    from moeprof.models.kernels import route as mg_route

    ids, tw = mg_route.route(layer.x, layer.router_w, layer.router_b, layer.top_k)
    return layer.x.contiguous(), tw.float().contiguous(), ids.to(__import__("torch").int32).contiguous()


def compile_sm90(trim: str, gemm: str, tile: dict):
    """fused_moe_kernel compiled for sm_90 as SGLang launches it for fp8 W8A8 per-tensor (no TMA, no bias,
    PDL on): pointers 16-byte aligned, unit strides specialized to 1, the other gpt-oss strides divisible by 16."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget

    fk = load_sglang(trim)
    fn = fk.fused_moe_kernel
    gated = gemm == "gate_up"
    n = 5760 if gated else 2880
    ptrs = {"a_ptr": "*fp8e4nv", "b_ptr": "*fp8e4nv", "c_ptr": "*bf16", "a_scale_ptr": "*fp32",
            "b_scale_ptr": "*fp32", "topk_weights_ptr": "*fp32", "sorted_token_ids_ptr": "*i32",
            "expert_ids_ptr": "*i32", "num_tokens_post_padded_ptr": "*i32"}
    absent = ("a_desc", "b_desc", "bias_ptr", "add_mask_ptr")
    unit = ("stride_ak", "stride_bk", "stride_cn", "stride_bias_n")
    div16 = {"N": n, "K": 2880, "EM": 16, "num_valid_tokens": 16, "stride_am": 2880, "stride_be": n * 2880,
             "stride_bn": 2880, "stride_cm": n}
    const = dict(group_n=0, group_k=0, MUL_ROUTED_WEIGHT=not gated, top_k=4 if gated else 1,
                 compute_type=tl.bfloat16, use_fp8_w8a8=True, use_int8_w8a8=False, use_int8_w8a16=False,
                 per_channel_quant=False, even_Ks=2880 % tile["BLOCK_SIZE_K"] == 0, c_sorted=False,
                 swap_ab=tile["BLOCK_SIZE_M"] < 64 and tile["BLOCK_SIZE_N"] >= 64, FUSE_ADD_TO_OUTPUT=False,
                 MASK_OUTPUT=False, FUSE_SUM_ALL_REDUCE=False, ROUTER_TOPK=1, FUSE_SWIGLU=False, USE_GDC=True,
                 GDC_EARLY=False, A_OUTPUT_SLICES=1, A_OUTPUT_SLICE_WIDTH=0, A_OUTPUT_SLICE_K=0,
                 **{k: v for k, v in tile.items() if k.isupper()})
    sig, cx, attrs = {}, {}, {}
    for i, p in enumerate(fn.arg_names):
        if p in const or p in absent or p in unit:
            sig[p], cx[p] = "constexpr", const.get(p, 1 if p in unit else None)
        elif p in ptrs:
            sig[p], attrs[(i,)] = ptrs[p], [["tt.divisibility", 16]]
        else:
            sig[p] = "i32"
            if div16.get(p, 1) % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=cx, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=tile.get("num_warps", 4), num_stages=tile.get("num_stages", 3)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--ncu-one", nargs=2, metavar=("BATCH", "CONFIG_JSON"))
    mode.add_argument("--compile-report", nargs=2, metavar=("GEMM", "CONFIG_JSON"))
    ap.add_argument("--sglang-trim", default=os.environ.get("SGLANG_TRIM", os.path.join(ROOT, ".sglang-trim")))
    args = ap.parse_args()
    if args.compile_report:
        import compile_report as cr

        gemm, tile = args.compile_report[0], json.loads(args.compile_report[1])
        if gemm not in ("gate_up", "down"):
            print("sglang_gemm_peer: error: --compile-report takes gate_up or down", file=sys.stderr)
            return 2
        ck = compile_sm90(args.sglang_trim, gemm, tile)
        ops = cr.sass_histogram(ck.asm["cubin"])
        usage = cr.ptxas_usage(ck.asm["ptx"], None)
        print(f"fused_moe_kernel {gemm} {tile_name(tile)}: regs={usage['regs']} spill_bytes={usage['spill_bytes']} "
              f"shared={cr.md_get(ck.metadata, 'shared')} sass_total={sum(ops.values())} "
              + " ".join(f"sass_{o}={ops[o]}" for o in cr.SASS_OPS if ops.get(o)))
        return 0
    import torch

    from moeprof.models.layer import build_layer_for_model

    batch, cfg = int(args.ncu_one[0]), json.loads(args.ncu_one[1])
    peer = SglangFp8Peer(args.sglang_trim)
    layer = build_layer_for_model(MODEL, "fp8", batch, seed=23)
    x, tw, ids = routed_inputs(layer)
    run, _ = peer.gemm_callable(x, tw, ids, cfg)
    run()   # the two launches ncu skips (compile / warm)
    torch.cuda.synchronize()
    run()
    torch.cuda.synchronize()
    print("sglang_gemm_peer: ncu-one", batch, tile_name(cfg), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
