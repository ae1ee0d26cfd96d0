"""Benchmark one GPT-OSS MoE layer per format and kernel on the GPU (run on the device machine).

    python3 benchmarks/moe_layer.py --out OUT_DIR [--model gpt-oss-120b] [--batches 1,4,...] [--quick]

Prints per (format, kernel, batch): layer time (median, p10/p90, cold L2, CUDA-graph replay),
experts touched, achieved bandwidth over the touched experts' weight bytes (and % of the measured
copy bandwidth), achieved TFLOP/s, and the ratio to each peer at that batch. Also measures the card:
device-to-device copy bandwidth (read+written) and bf16 / fp8 matmul rates. Correctness of every
format at real shapes against the fp32 reference is checked first. Writes results.json / .csv.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

FORMATS = ["bf16", "fp8", "fp8-block", "mxfp4", "mxfp4-w4a8"]
BATCHES = [1, 4, 16, 64, 256, 1024, 4096, 16384]
from moeprof.models.reference import ERROR_BOUNDS as BOUNDS  # noqa: E402


def candidate_configs(fmt: str, m_per_expert: float) -> list[dict]:
    """Tile configurations --autotune tries at one point (one config for both GEMMs)."""
    from moeprof.models.kernels import moe_gemm as mg

    wf, _ = mg.FMT_CODES[fmt]
    out = []
    if m_per_expert <= 16:
        bms = [16]
    elif m_per_expert <= 64:
        bms = [16, 32, 64]
    elif m_per_expert <= 256:
        bms = [32, 64, 128]
    else:
        bms = [64, 128]
    for bm in bms:
        for bn in ([32, 64, 128] if bm <= 64 else [64, 128]):
            for nw in ([4] if bm <= 64 else [4, 8]):
                for ns in ([3, 5] if bm <= 32 else [3, 4]):
                    bk = 128 if (bm <= 32 and wf != mg.WF_FP8B) else 64
                    if wf == mg.WF_FP8B:
                        bk = 64 if bm > 32 else 128
                    out.append(dict(BM=bm, BN=bn, BK=bk, GROUP_M=1 if bm <= 16 else 8, num_warps=nw, num_stages=ns))
    if wf == mg.WF_MX_BF16 and m_per_expert <= 64:
        out = [dict(BM=bm, BN=bn, BK=128, GROUP_M=4, num_warps=nw, num_stages=ns, MXV=1)
               for bm in ((16,) if m_per_expert <= 16 else (16, 32)) for bn in (32, 64, 128)
               for nw in (2, 4) for ns in (3, 4)]
    elif wf == mg.WF_MX_FP8 and m_per_expert <= 64:
        out = [dict(BM=16, BN=bn, BK=128, GROUP_M=4, num_warps=4, num_stages=ns, GPI=gpi)
               for bn in (32, 64, 128) for gpi in (3, 6) for ns in (3, 5)]
    return out


def log(*a):
    print(*a, flush=True)


def try_sglang():
    """Try to import SGLang's Triton fused MoE; return (callable or None, note)."""
    try:
        from sglang.srt.layers.moe.fused_moe_triton.fused_moe import fused_experts  # noqa: F401

        return fused_experts, "imported sglang.srt.layers.moe.fused_moe_triton.fused_moe.fused_experts"
    except BaseException as exc:  # noqa: BLE001
        return None, f"{type(exc).__name__}: {exc}"[:600]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".", help="folder for the results")
    ap.add_argument("--model", default="gpt-oss-120b")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--check", default="1,37,1024", help="batches for the correctness check ('' = skip)")
    ap.add_argument("--autotune", default="", help="fmt:batch,... points to autotune before the sweep")
    ap.add_argument("--loop-max", type=int, default=64, help="largest batch for the torch-loop peer")
    ap.add_argument("--budget-s", type=float, default=420, help="stop the sweep after this many seconds")
    ap.add_argument("--gemm-only", action="store_true", help="also time the expert GEMMs alone")
    ap.add_argument("--peers", default="torch-grouped,torch-loop")
    args = ap.parse_args()
    t_start = time.time()
    os.makedirs(args.out, exist_ok=True)

    import torch
    import triton

    from moeprof.profiler import timing
    from moeprof.models.kernels import moe_gemm as mg
    from moeprof.models import peers
    from moeprof.models.reference import poisoned_call, rel_err
    from moeprof.models.layer import build_layer_for_model, model_shapes

    shapes = model_shapes(args.model)
    props = torch.cuda.get_device_properties(0)
    meta = dict(card=props.name, sms=props.multi_processor_count, l2_bytes=getattr(props, "L2_cache_size", None),
                torch=torch.__version__, triton=triton.__version__, date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
                command=" ".join(sys.argv), model=args.model, shapes=shapes, tp=1)
    meta["grouped_mm"] = hasattr(torch, "_grouped_mm")
    meta["scaled_grouped_mm"] = hasattr(torch, "_scaled_grouped_mm")
    sgl, note = try_sglang()
    meta["sglang"] = note
    log("META", json.dumps(meta))

    # ---- card ceilings
    meta["copy_bw_Bps"] = timing.copy_bandwidth()
    meta["bf16_mm_flops"] = timing.matmul_rate("bf16")
    try:
        meta["fp8_mm_flops"] = timing.matmul_rate("fp8")
    except Exception as exc:  # noqa: BLE001
        meta["fp8_mm_flops"] = None
        meta["fp8_mm_error"] = str(exc)[:300]
    log(f"CARD {meta['card']}: copy {meta['copy_bw_Bps'] / 1e12:.2f} TB/s  bf16 mm {meta['bf16_mm_flops'] / 1e12:.0f} TFLOP/s"
        f"  fp8 mm {(meta['fp8_mm_flops'] or 0) / 1e12:.0f} TFLOP/s")

    formats = [f for f in args.formats.split(",") if f]
    checks = []
    # ---- correctness at real shapes (fresh data per check: seed differs from the sweep's)
    for b in [int(x) for x in args.check.split(",") if x]:
        for fmt in formats:
            for kern in ["triton"] + (["torch-grouped"] if fmt in ("bf16", "fp8") else []):
                try:
                    layer = build_layer_for_model(args.model, fmt, b, seed=11 + b, kernel=kern)
                    out = poisoned_call(layer)
                    torch.cuda.synchronize()
                    written = bool(torch.isfinite(out.float()).all())
                    err = rel_err(out, layer.reference())
                    ok = written and err < BOUNDS[fmt]
                    checks.append(dict(fmt=fmt, kernel=kern, batch=b, rel_err=err, all_written=written, ok=ok,
                                       bound=BOUNDS[fmt], experts_touched=layer.experts_touched))
                    log(f"CHECK {fmt:11s} {kern:14s} b={b:5d} rel_err={err:.3e} written={written} {'OK' if ok else 'FAIL'}")
                except Exception as exc:  # noqa: BLE001
                    checks.append(dict(fmt=fmt, kernel=kern, batch=b, error=f"{type(exc).__name__}: {exc}"[:400], ok=False))
                    log(f"CHECK {fmt} {kern} b={b} ERROR {type(exc).__name__}: {exc}"[:600])
                    traceback.print_exc(limit=3)
    # int (non-asm) unpack path vs asm path, one point
    orig = mg.moe_gemm
    try:
        layer = build_layer_for_model(args.model, "mxfp4", 16, seed=99)
        ref = layer.reference()
        o1 = layer().clone()
        orig = mg.moe_gemm

        def no_asm(*a, **k):
            k["unpack_asm"] = False
            return orig(*a, **k)

        mg.moe_gemm = no_asm
        o2 = layer().clone()
        mg.moe_gemm = orig
        checks.append(dict(fmt="mxfp4", kernel="triton-int-unpack", batch=16, rel_err=rel_err(o2, ref),
                           asm_rel_err=rel_err(o1, ref), ok=rel_err(o2, ref) < BOUNDS["mxfp4"]))
        log(f"CHECK mxfp4 int-unpack {rel_err(o2, ref):.3e} asm {rel_err(o1, ref):.3e}")
    except Exception as exc:  # noqa: BLE001
        mg.moe_gemm = orig
        log(f"CHECK int-unpack ERROR {exc}"[:400])

    # ---- optional autotune at selected points: the best config is used for that point's sweep run
    tuned = {}
    tuned_cfg: dict = {}
    for pt in [p for p in args.autotune.split(",") if p]:
        fmt, b = pt.split(":")
        b = int(b)
        try:
            layer0 = build_layer_for_model(args.model, fmt, b)
            best = None
            for cand in candidate_configs(fmt, layer0.m_per_expert):
                layer = build_layer_for_model(args.model, fmt, b, cfg=(cand, cand))
                r = timing.time_fn(layer, repeats=8, warmup=2)
                if best is None or r.median_ns < best[0]:
                    best = (r.median_ns, cand)
            tuned_cfg[(fmt, b)] = (best[1], dict(best[1]))
            tuned[pt] = dict(cfg=best[1], median_us=best[0] / 1e3)
            log(f"TUNE {pt}: {best[1]} {best[0] / 1e3:.1f} us")
        except Exception as exc:  # noqa: BLE001
            log(f"TUNE {pt} ERROR {exc}"[:400])
    meta["tuned"] = tuned

    # ---- sweep
    rows = []
    copy_bw = meta["copy_bw_Bps"]
    batches = [int(x) for x in args.batches.split(",") if x]
    for b in batches:
        for fmt in formats:
            kernels = ["triton"]
            if fmt in ("bf16", "fp8") and meta["grouped_mm"] and "torch-grouped" in args.peers:
                kernels.append("torch-grouped")
            if fmt == "bf16" and b <= args.loop_max and "torch-loop" in args.peers:
                kernels.append("torch-loop")
            for kern in kernels:
                if time.time() - t_start > args.budget_s:
                    log("BUDGET reached; stopping sweep")
                    break
                try:
                    layer = build_layer_for_model(args.model, fmt, b, kernel=kern,
                                                  cfg=tuned_cfg.get((fmt, b)) if kern == "triton" else None)
                    r = timing.time_fn(layer, repeats=args.repeats, warmup=3, use_graph=(kern != "torch-loop"))
                    t = r.median_ns * 1e-9
                    row = dict(format=fmt, kernel=layer.kernel_name, batch=b, median_us=r.median_ns / 1e3,
                               p10_us=r.p10_ns / 1e3, p90_us=r.p90_ns / 1e3, graph=r.used_graph,
                               experts_touched=layer.experts_touched, weight_bytes=layer.weight_bytes_read,
                               bw_TBps=layer.weight_bytes_read / t / 1e12, bw_pct_copy=100 * layer.weight_bytes_read / t / copy_bw,
                               tflops=layer.flops / t / 1e12,
                               cfg=getattr(layer, "cfg1", None))
                    if args.gemm_only and kern in ("triton", "torch-grouped"):
                        # GEMMs against GEMMs: ours (quant + both expert GEMMs, routing and sort done
                        # once outside) and the torch peer's two grouped GEMMs alone (gather, SwiGLU,
                        # quant, combine outside); the rest of the layer time is the glue, reported apart
                        gemm_fn = layer.gemm_only() if kern == "triton" else peers.grouped_gemms_only(layer)
                        rg = timing.time_fn(gemm_fn, repeats=args.repeats, warmup=2)
                        row["gemm_us"] = rg.median_ns / 1e3
                        row["gemm_bw_pct_copy"] = 100 * layer.weight_bytes_read / (rg.median_ns * 1e-9) / copy_bw
                        row["glue_us"] = row["median_us"] - row["gemm_us"]
                        log(f"GEMM-ONLY {fmt:11s} {kern:14s} b={b:5d} {row['gemm_us']:9.1f} us ({row['gemm_bw_pct_copy']:.0f}% of copy bw)")
                    rows.append(row)
                    log(f"RUN {fmt:11s} {row['kernel']:16s} b={b:5d} {row['median_us']:9.1f} us "
                        f"[{row['p10_us']:.1f},{row['p90_us']:.1f}] E={row['experts_touched']:3d} "
                        f"{row['bw_TBps']:.2f} TB/s ({row['bw_pct_copy']:.0f}%) {row['tflops']:.1f} TFLOP/s")
                except Exception as exc:  # noqa: BLE001
                    rows.append(dict(format=fmt, kernel=kern, batch=b, error=f"{type(exc).__name__}: {exc}"[:400]))
                    log(f"RUN {fmt} {kern} b={b} ERROR {type(exc).__name__}: {exc}"[:600])
                del layer
            torch.cuda.empty_cache()

    # ---- ratios to peers (peer time / our time: >1 means moeprof-triton is faster)
    by = {(r["format"], r["kernel"], r["batch"]): r for r in rows if "median_us" in r}
    for r in rows:
        if r.get("kernel") != "moeprof-triton" or "median_us" not in r:
            continue
        for (f, k, b), p in by.items():
            if b == r["batch"] and k != "moeprof-triton":
                r[f"speedup_vs_{k}_{f}"] = p["median_us"] / r["median_us"]
                if "gemm_us" in p and "gemm_us" in r:   # GEMMs against GEMMs (glue apart)
                    r[f"gemm_speedup_vs_{k}_{f}"] = p["gemm_us"] / r["gemm_us"]
        f8 = by.get(("fp8", "moeprof-triton", r["batch"]))
        if f8:
            r["speedup_vs_triton_fp8"] = f8["median_us"] / r["median_us"]

    res = dict(meta=meta, checks=checks, rows=rows)
    with open(os.path.join(args.out, "results.json"), "w") as fh:
        json.dump(res, fh, indent=1, default=str)
    try:
        import pandas as pd

        pd.DataFrame(rows).to_csv(os.path.join(args.out, "results.csv"), index=False)
    except Exception:  # noqa: BLE001
        pass
    # short table last
    log("\nSUMMARY card=%s copy=%.2fTB/s" % (meta["card"], copy_bw / 1e12))
    log(f"{'fmt':11s} {'kernel':16s} {'batch':>6s} {'us':>9s} {'E':>4s} {'%copy':>6s} {'TF/s':>6s} {'vs_peer':>8s} {'gemm_us':>8s} {'g%copy':>6s} {'g_vs_peer':>9s}")
    for r in rows:
        if "median_us" not in r:
            continue
        # the same format's torch peer (bf16: _grouped_mm, fp8: _scaled_grouped_mm), else none
        sp = [v for k, v in r.items() if k == f"speedup_vs_torch-grouped-mm_{r['format']}"]
        gsp = r.get(f"gemm_speedup_vs_torch-grouped-mm_{r['format']}", float("nan"))
        log(f"{r['format']:11s} {r['kernel']:16s} {r['batch']:6d} {r['median_us']:9.1f} {r['experts_touched']:4d} "
            f"{r['bw_pct_copy']:6.0f} {r['tflops']:6.1f} {(sp[0] if sp else float('nan')):8.2f} "
            f"{r.get('gemm_us', float('nan')):8.1f} {r.get('gemm_bw_pct_copy', float('nan')):6.0f} {gsp:9.2f}")
    bad = [c for c in checks if not c.get("ok")]
    log(f"CHECKS: {len(checks) - len(bad)}/{len(checks)} ok" + (f"; failed: {[(c['fmt'], c['kernel'], c['batch']) for c in bad]}" if bad else ""))


if __name__ == "__main__":
    main()
