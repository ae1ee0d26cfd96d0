"""SGLang's own Triton fused MoE (`fused_experts_impl`) at GPT-OSS-120B expert shapes, on one GPU.

    python3 examples/sglang/prepare.py sglang-0.5.23-*.whl .sglang-trim     # once, see that file
    moeprof capture --collect nsys -m gpt-oss-120b -o captures/sglang-fp8 -- \\
        python3 examples/sglang_fused_moe.py --format fp8 --sglang-trim .sglang-trim --tune

A program that knows nothing of moeprof besides `moeprof.mark`: it builds 128 experts of
hidden 2880 x expert intermediate 2880 (gate_up 5760 x 2880, down 2880 x 2880), routes random
tokens to 4 experts each, and calls SGLang 0.5.23's `fused_experts_impl` (align, `fused_moe_kernel`
for the gate_up and the down GEMM, SiLU-and-multiply, sum over the top-k) with
  --format fp8   FP8 W8A8: e4m3 weights with one scale per expert, activations quantized per
                 tensor at run time (SGLang's per-tensor FP8 MoE path), or
  --format bf16  BF16 weights and activations,
over a batch sweep. Each batch: warm-up calls, then each timed call inside `moeprof.mark(format=...,
batch=...)` (NVTX `moe/<format>/<batch>` when moeprof is not importable), with SGLang's tile
configuration for that batch (it ships no tuned file for E=128, N=2880, so its defaults apply).
`--tune` then runs each candidate tile configuration (TILE_CANDIDATES) through SGLang's own
`override_config`, each call inside an NVTX range `sglang-tile/<format>/<batch>/<config>/<call>`
(outside moeprof's `moe/` tree, so its analysis ignores them; their kernel times are in the
capture's kernels.csv). Outputs (SGLang's choice and every tile tried) are checked against a
float32 torch reference on the same dequantized weights; a NaN or an error above the bound exits 1.

The stand-ins the trimmed package uses instead of server modules and sgl_kernel's CUDA ops are
listed in examples/sglang/standins/README.md. Activation: SiLU(gate) * up on split halves (SGLang's
default `silu`; GPT-OSS's clamped SwiGLU goes through torch.compile in SGLang and is not used here);
no expert biases. The GEMMs are the same either way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

FORMATS = ("fp8", "bf16")
BATCHES = (1, 4, 16, 64, 256, 1024, 4096)
ERROR_BOUND = {"bf16": 1.5e-2, "fp8": 6e-2}  # ||out - ref|| / ||ref|| against the float32 reference
FP8_MAX = 448.0

# Tile configurations tried by --tune for `fused_moe_kernel` (both GEMMs use the same one, as SGLang
# does when no down-projection file exists). The first ones of each format are SGLang's defaults for
# this shape (fused_moe_triton_config.get_default_config: fp8 M <= E and M > E; bf16 M <= E and
# M > E); BLOCK_SIZE_M < 64 with BLOCK_SIZE_N >= 64 turns on SGLang's swap-AB path for fp8 on sm90.
TILE_CANDIDATES = {
    "fp8": [
        dict(BLOCK_SIZE_M=64, BLOCK_SIZE_N=128, BLOCK_SIZE_K=128, GROUP_SIZE_M=1, num_warps=4, num_stages=4),
        dict(BLOCK_SIZE_M=128, BLOCK_SIZE_N=256, BLOCK_SIZE_K=128, GROUP_SIZE_M=32, num_warps=8, num_stages=4),
        dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=128, BLOCK_SIZE_K=128, GROUP_SIZE_M=1, num_warps=4, num_stages=4),
        dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=64, BLOCK_SIZE_K=256, GROUP_SIZE_M=1, num_warps=4, num_stages=3),
        dict(BLOCK_SIZE_M=32, BLOCK_SIZE_N=128, BLOCK_SIZE_K=128, GROUP_SIZE_M=1, num_warps=4, num_stages=4),
        dict(BLOCK_SIZE_M=128, BLOCK_SIZE_N=128, BLOCK_SIZE_K=128, GROUP_SIZE_M=16, num_warps=8, num_stages=3),
    ],
    "bf16": [
        dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=32, BLOCK_SIZE_K=64, GROUP_SIZE_M=1),
        dict(BLOCK_SIZE_M=64, BLOCK_SIZE_N=64, BLOCK_SIZE_K=32, GROUP_SIZE_M=8),
        dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=64, BLOCK_SIZE_K=128, GROUP_SIZE_M=1, num_warps=4, num_stages=4),
        dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=128, BLOCK_SIZE_K=64, GROUP_SIZE_M=1, num_warps=4, num_stages=4),
        dict(BLOCK_SIZE_M=64, BLOCK_SIZE_N=128, BLOCK_SIZE_K=64, GROUP_SIZE_M=8, num_warps=4, num_stages=4),
        dict(BLOCK_SIZE_M=128, BLOCK_SIZE_N=128, BLOCK_SIZE_K=64, GROUP_SIZE_M=8, num_warps=8, num_stages=3),
    ],
}


def config_name(cfg: dict) -> str:
    return "BM{}-BN{}-BK{}-GM{}-w{}-s{}".format(cfg["BLOCK_SIZE_M"], cfg["BLOCK_SIZE_N"], cfg["BLOCK_SIZE_K"],
                                                 cfg["GROUP_SIZE_M"], cfg.get("num_warps", 4), cfg.get("num_stages", 3))


def layer_range(fmt: str, batch: int):
    """moeprof.mark when moeprof is importable, else the NVTX path moeprof parses (moe/<format>/<batch>)."""
    try:
        import moeprof

        mark = moeprof.mark
    except (ImportError, AttributeError):
        mark = None
    if mark is not None:
        return mark(format=fmt, batch=batch)
    return nvtx(f"moe/{fmt}/{batch}")


@contextlib.contextmanager
def nvtx(name: str):
    import torch

    torch.cuda.nvtx.range_push(name)
    try:
        yield
    finally:
        torch.cuda.nvtx.range_pop()


def build_experts(fmt: str, hidden: int, inter: int, experts: int, seed: int, empty: bool):
    """Expert weights as SGLang lays them out: w1 [E, 2I, H] (gate rows then up rows), w2 [E, H, I].

    fp8: e4m3 weights with one float32 scale per expert and matrix (amax / 448). Returns
    (w1, w2, w1_scale, w2_scale); scales are None for bf16. `empty` skips the random init (compile-only runs).
    """
    import torch

    g = torch.Generator(device="cuda").manual_seed(seed)

    def weights(shape):
        if empty:
            return torch.zeros(shape, device="cuda", dtype=torch.bfloat16 if fmt == "bf16" else torch.float8_e4m3fn), (
                None if fmt == "bf16" else torch.ones(shape[0], device="cuda", dtype=torch.float32))
        w = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) * (shape[-1] ** -0.5)
        if fmt == "bf16":
            return w, None
        scale = w.float().abs().amax(dim=(1, 2)).clamp_min(1e-12) / FP8_MAX
        q = (w.float() / scale[:, None, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        return q, scale.contiguous()

    w1, s1 = weights((experts, 2 * inter, hidden))
    w2, s2 = weights((experts, hidden, inter))
    return w1, w2, s1, s2


def route(batch: int, experts: int, top_k: int, hidden: int, seed: int):
    """Random tokens, each sent to top_k distinct experts chosen uniformly, softmax weights over them."""
    import torch

    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn((batch, hidden), device="cuda", dtype=torch.bfloat16, generator=g)
    logits = torch.rand((batch, experts), device="cuda", generator=g)
    vals, ids = logits.topk(top_k, dim=1)
    weights = torch.softmax(vals, dim=1).float().contiguous()
    return x, weights, ids.to(torch.int32).contiguous()


def reference(x, topk_weights, topk_ids, w1, w2, s1, s2):
    """float32 MoE on the dequantized weights: sum_k w_k * down(silu(gate(x)) * up(x))."""
    import torch

    xf = x.float()
    out = torch.zeros_like(xf)
    inter = w2.shape[2]
    flat_ids = topk_ids.long()
    for e in torch.unique(flat_ids).tolist():
        tok, slot = (flat_ids == e).nonzero(as_tuple=True)
        w1e = w1[e].float() * (s1[e] if s1 is not None else 1.0)
        w2e = w2[e].float() * (s2[e] if s2 is not None else 1.0)
        h = xf[tok] @ w1e.t()
        a = torch.nn.functional.silu(h[:, :inter]) * h[:, inter:]
        out.index_add_(0, tok, (a @ w2e.t()) * topk_weights[tok, slot, None])
    return out


def rel_err(out, ref) -> float:
    import torch

    o = out.float()
    if not torch.isfinite(o).all():
        return float("inf")
    return float((o - ref).norm() / ref.norm().clamp_min(1e-30))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--format", choices=FORMATS, required=True)
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)), help="tokens per layer call, comma-separated")
    ap.add_argument("--repeats", type=int, default=10, help="timed calls per batch (inside the layer range)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls per batch before the timed ones (at least 1)")
    ap.add_argument("--tune", action="store_true", help="also time each TILE_CANDIDATES configuration per batch")
    ap.add_argument("--tune-repeats", type=int, default=5)
    ap.add_argument("--only-config", type=int, default=None,
                    help="compile-only: run just this TILE_CANDIDATES index once per batch (fills Triton's cache)")
    ap.add_argument("--compile-only", action="store_true", help="no init, no check, no timing: compile the kernels")
    ap.add_argument("--config", type=int, default=None,
                    help="run the layer calls with this TILE_CANDIDATES index instead of SGLang's choice")
    ap.add_argument("--sglang-trim", default=os.environ.get("SGLANG_TRIM", ""),
                    help="folder made by examples/sglang/prepare.py (default $SGLANG_TRIM, else .sglang-trim)")
    ap.add_argument("--hidden", type=int, default=2880)
    ap.add_argument("--intermediate", type=int, default=2880)
    ap.add_argument("--experts", type=int, default=128)
    ap.add_argument("--top-k", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="", help="write per-batch results here")
    args = ap.parse_args(argv)

    fmt = args.format
    try:
        batches = [int(b) for b in args.batches.split(",") if b]
    except ValueError:
        batches = []
    if not batches or any(b <= 0 for b in batches):
        print(f"sglang_fused_moe: error: batches must be positive integers, got {args.batches!r}", file=sys.stderr)
        return 2
    if args.repeats < 1 or args.tune_repeats < 1:
        print("sglang_fused_moe: error: --repeats and --tune-repeats must be at least 1", file=sys.stderr)
        return 2
    n_cfg = len(TILE_CANDIDATES[fmt])
    for opt, idx in (("--config", args.config), ("--only-config", args.only_config)):
        if idx is not None and not 0 <= idx < n_cfg:
            print(f"sglang_fused_moe: error: {opt} takes 0..{n_cfg - 1}, got {idx}", file=sys.stderr)
            return 2
    if args.config is not None and args.tune:
        print("sglang_fused_moe: error: --config and --tune exclude each other", file=sys.stderr)
        return 2
    trim = args.sglang_trim or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".sglang-trim")
    if not os.path.isdir(os.path.join(trim, "sglang")):
        print(f"sglang_fused_moe: error: no trimmed SGLang package in {trim} (run examples/sglang/prepare.py)",
              file=sys.stderr)
        return 2
    sys.path.insert(0, os.path.abspath(trim))

    import torch
    import triton

    if not torch.cuda.is_available():
        print("sglang_fused_moe: error: needs a CUDA GPU", file=sys.stderr)
        return 2
    from sglang.srt.layers.moe.moe_runner.triton_utils import override_config
    from sglang.srt.layers.moe.moe_runner.triton_utils.fused_moe import fused_experts_impl
    from sglang.srt.layers.moe.moe_runner.triton_utils.fused_moe_triton_config import (
        get_config_dtype_str, try_get_optimal_moe_config)

    hidden, inter, experts, top_k = args.hidden, args.intermediate, args.experts, args.top_k
    w1, w2, s1, s2 = build_experts(fmt, hidden, inter, experts, args.seed, empty=args.compile_only)
    fp8 = fmt == "fp8"
    card = torch.cuda.get_device_name(0)
    print(f"sglang_fused_moe: {fmt} on {card}: E={experts} H={hidden} I={inter} top_k={top_k}; "
          f"torch {torch.__version__}, triton {triton.__version__}", flush=True)

    forced = TILE_CANDIDATES[fmt][args.config] if args.config is not None else None

    def call(x, tw, ids):
        # --config pins the tile; otherwise SGLang's choice, or the one set by an enclosing override_config
        with override_config(forced) if forced is not None else contextlib.nullcontext():
            return fused_experts_impl(x, w1, w2, tw, ids, inplace=False, activation="silu", use_fp8_w8a8=fp8,
                                      w1_scale=s1, w2_scale=s2)

    def sglang_default_config(batch):
        cfg, _ = try_get_optimal_moe_config(w1.shape, w2.shape, top_k,
                                            get_config_dtype_str(torch.bfloat16, use_fp8_w8a8=fp8), batch,
                                            return_down_config=True)
        return dict(cfg)

    candidates = TILE_CANDIDATES[fmt]
    if args.compile_only:
        for b in batches:
            x, tw, ids = route(b, experts, top_k, hidden, args.seed + b)
            cfgs = [candidates[args.only_config]] if args.only_config is not None else [None]
            for cfg in cfgs:
                with override_config(cfg) if cfg else contextlib.nullcontext():
                    call(x, tw, ids)
        torch.cuda.synchronize()
        print("sglang_fused_moe: compile-only done", flush=True)
        return 0

    results = []
    failures = []
    for b in batches:
        x, tw, ids = route(b, experts, top_k, hidden, args.seed + b)
        layer_cfg = forced if forced is not None else sglang_default_config(b)
        for _ in range(max(1, args.warmup)):
            out = call(x, tw, ids)
        torch.cuda.synchronize()
        ref = reference(x, tw, ids, w1, w2, s1, s2)
        err = rel_err(out, ref)
        ok = err <= ERROR_BOUND[fmt]
        if not ok:
            failures.append((b, err, config_name(layer_cfg)))
        events = []
        for _ in range(args.repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            with layer_range(fmt, b):
                start.record()
                call(x, tw, ids)
                end.record()
            events.append((start, end))  # read after the batch: the host does not wait between calls
        torch.cuda.synchronize()
        times_us = sorted(s.elapsed_time(e) * 1e3 for s, e in events)
        row = dict(format=fmt, batch=b, rel_err=err, ok=ok, config=config_name(layer_cfg),
                   config_source="--config" if forced is not None else "sglang",
                   call_median_us=times_us[len(times_us) // 2])
        if args.tune:
            tuned = {}
            for cfg in candidates:
                name = config_name(cfg)
                with override_config(cfg):
                    try:
                        tile_out = call(x, tw, ids)  # compile / warm
                        torch.cuda.synchronize()
                    except Exception as exc:  # noqa: BLE001  (a tile that does not fit is skipped, and said so)
                        tuned[name] = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
                        continue
                    tile_err = rel_err(tile_out, ref)
                    if not tile_err <= ERROR_BOUND[fmt]:
                        failures.append((b, tile_err, name))
                        tuned[name] = f"failed: rel_err {tile_err:.3g}"
                        continue
                    ev = []
                    for i in range(args.tune_repeats):
                        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        with nvtx(f"sglang-tile/{fmt}/{b}/{name}/{i}"):
                            start.record()
                            call(x, tw, ids)
                            end.record()
                        ev.append((start, end))
                    torch.cuda.synchronize()
                    ts = sorted(s.elapsed_time(e) * 1e3 for s, e in ev)
                    tuned[name] = ts[len(ts) // 2]
            timed = {k: v for k, v in tuned.items() if isinstance(v, float)}
            row["tile_call_median_us"] = tuned
            if timed:
                row["best_config"] = min(timed, key=timed.get)
                row["best_call_median_us"] = timed[row["best_config"]]
        results.append(row)
        best = f"  best {row['best_config']} {row['best_call_median_us']:.1f} us" if "best_config" in row else ""
        print(f"sglang_fused_moe: {fmt} batch {b:5d}: call {row['call_median_us']:9.1f} us ({row['config_source']} "
              f"{row['config']}){best}  rel_err {err:.2e} {'ok' if ok else 'FAIL'}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(card=card, torch=torch.__version__, triton=triton.__version__,
                           date_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), argv=sys.argv,
                           results=results), fh, indent=1)
    if failures:
        print("sglang_fused_moe: error: output off the float32 reference at " +
              ", ".join(f"batch {b} {c} (rel_err {e:.3g} > {ERROR_BOUND[fmt]})" for b, e, c in failures),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
