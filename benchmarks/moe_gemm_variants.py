"""Expert-GEMM tile variants against the defaults, one GPU, one run: correctness first, then time.

    python3 benchmarks/moe_gemm_variants.py OUT_DIR [--batches 1,4,16,64,256,1024,4096] [--ncu]

For gpt-oss-120b, per batch and format: every variant in VARIANTS (and the default configuration)
is checked against the fp32 reference on fresh inputs with NaN-poisoned outputs, then its two expert
GEMMs alone (gemm1 + SwiGLU, gemm2 + routing weight; routing, sort and activation quant done once
outside) are timed with cold L2 in a CUDA graph (median). The torch peers' grouped GEMMs are timed
the same way, without their glue (models/peers.grouped_gemms_only). Percentages are the touched
experts' weight bytes over the time, against the card's DRAM peak (--dram-peak, ncu's figure).
--ncu: afterwards, ncu (clocks as found) on the default and the fastest variant of fp8 and mxfp4 at
--ncu-batch: DRAM throughput, tensor-pipe activity and the tensor-op source types (fp8 vs fp16).
Compiles run first in parallel worker processes (Triton's on-disk cache), so the timed process only
loads them. Writes OUT_DIR/variants.json and prints a short table last.
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


# name -> (batches, config for both GEMMs); None batches: every batch whose rows per expert fit BM
# the defaults before the swapped fp8 tiles (for a same-run comparison)
FP8_BEFORE = {16: _c(16, 64, 128, 4, 4, GROUP_M=1), 64: _c(32, 64, 128, 4, 4)}
D = (1, 4, 16, 64, 256)
VARIANTS = {
    "fp8": {
        "before": (D, FP8_BEFORE[16]),
        "before-m32": ((1024,), FP8_BEFORE[64]),
        "swap-n64": (D, _c(16, 64, 128, 4, 4, SWAP_AB=1)),
        "swap-n64-k256-s4": ((16, 64, 256), _c(16, 64, 256, 4, 4, SWAP_AB=1)),
        "swap-n128-k256": ((16, 64, 256), _c(16, 128, 256, 4, 3, SWAP_AB=1)),
        "swap-n64-k512": ((16, 64, 256), _c(16, 64, 512, 4, 2, SWAP_AB=1)),
        "swap-m32-k256": ((1024,), _c(32, 64, 256, 4, 3, SWAP_AB=1)),
        "pf-m128-n128-w8": ((4096, 16384), _c(128, 128, 128, 8, 3)),
    },
    "mxfp4": {
        # the Triton kernel (the default at decode before the CUDA kernel) against the CUDA kernel's
        # token groups per pass (G) and CTA shapes (WN tiles x WK K-warps, D chunks in flight)
        "triton-v2": ((1, 4, 16), _c(16, 64, 128, 2, 3, MXV=1)),
        "triton-v2-m32": ((64, 256, 1024), _c(32, 128, 128, 4, 3, MXV=1)),
        "mma-8x1x4": (D, "mma:WN=8,WK=1,D=4"),
        "mma-2x2x8": ((1, 4, 16), "mma:WN=2,WK=2,D=8"),
        "mma-4x2x8": ((1, 4), "mma:WN=4,WK=2,D=8"),
        "mma-4x1x8-mt2": (D + (1024,), "mma:WN=4,WK=1,D=8,MT=2"),
        "mma-8x1x4-mt2": (D + (1024,), "mma:WN=8,WK=1,D=4,MT=2"),
        "mma-2x1x8-mt2": (D, "mma:WN=2,WK=1,D=8,MT=2"),
        "mma-2x2x8-mt2": ((1, 4, 16), "mma:WN=2,WK=2,D=8,MT=2"),
        "mma-4x1x8-mt2-g1": ((256,), "mma:WN=4,WK=1,D=8,MT=2,G=1"),
        "mma-4x1x8-mt2-g2": ((1024,), "mma:WN=4,WK=1,D=8,MT=2,G=2"),
        "mma-4x1x6-mt2-g4": ((256, 1024), "mma:WN=4,WK=1,D=6,MT=2,G=4"),
        "v2-n128-w4": ((16, 64, 256), _c(16, 128, 128, 4, 3, MXV=1)),
        "v2-n64-w4": ((16, 64, 256), _c(16, 64, 128, 4, 3, MXV=1)),
        "v2-m16-n64-w2": ((1024,), _c(16, 64, 128, 2, 3, MXV=1)),
        "dequant-bf16": ((4096, 16384), dict(_c(64, 64, 64, 4, 4), DEQUANT_BF16=1)),
        "dequant-bf16-m128": ((4096, 16384), dict(_c(128, 64, 64, 8, 3), DEQUANT_BF16=1)),
    },
    "bf16": {
        "swap-m32": ((1024,), _c(32, 64, 128, 4, 4, SWAP_AB=1)),
    },
}
PEER_FORMATS = ("bf16", "fp8")


def points(batches):
    """(fmt, batch, name, cfg or None) for every default and every listed variant at those batches."""
    out = []
    for b in batches:
        for fmt, vs in VARIANTS.items():
            out.append((fmt, b, "default", None))
            for name, (bs, cfg) in vs.items():
                if b in bs:
                    out.append((fmt, b, name, cfg))
    return out


def _build(fmt, b, cfg, kernel="triton"):
    from moeprof.models.kernels import moe_gemm as mg
    from moeprof.models.layer import build_layer_for_model, model_shapes

    pair = None
    if isinstance(cfg, str) and cfg.startswith("mma:"):
        # the CUDA kernel's CTA shape with the default token groups for this batch
        sh = model_shapes(MODEL)
        shape = {k: int(v) for k, v in (x.split("=") for x in cfg[4:].split(","))}
        groups = shape.pop("G", None)
        cfg = mg.mma_config(b * sh["top_k"] / sh["num_experts"], **shape)
        if groups:
            cfg["G"] = groups
    if cfg is not None:
        c1, c2 = dict(cfg), dict(cfg)
        if cfg.get("DEQUANT_BF16"):
            c2["BN"] = 128   # the bf16 defaults' gemm2 tile (not gated)
        if "SPLIT_K" not in cfg and cfg.get("MXV"):
            # the default's split-K heuristic, applied to the variant's tile (few experts: split K)
            sh = model_shapes(MODEL)
            slots = b * sh["top_k"]
            et = min(sh["num_experts"], slots)
            if slots / sh["num_experts"] <= 16:
                c1["SPLIT_K"] = mg.split_k_for(c1, sh["intermediate_size"], sh["hidden_size"], et, slots)
                c2["SPLIT_K"] = mg.split_k_for(c2, sh["hidden_size"], sh["intermediate_size"], et, slots)
        pair = (c1, c2)
    return build_layer_for_model(MODEL, fmt, b, seed=SEED, kernel=kernel, cfg=pair)


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
    from moeprof.models.layer import FP8_ACTIVATION_FORMATS

    ids, tw = mg_route.route(layer.x, layer.router_w, layer.router_b, layer.top_k)
    sids, eids, npp, counts = mg.moe_align(ids, layer.wt.num_experts, layer.cfg1["BM"], layer.expert_offset)
    tw = tw.reshape(-1)
    q8 = layer.fmt in FP8_ACTIVATION_FORMATS
    a, a_s = mg.act_quant(layer.x, per_group=layer.fmt == "fp8-block") if q8 else (layer.x, None)
    layer._gemm1(a, a_s, tw, sids, eids, npp, counts)
    a2, a2s = mg.act_quant(layer.inter_buf, per_group=layer.fmt == "fp8-block") if q8 else (layer.inter_buf, None)

    def run():
        layer._gemm1(a, a_s, tw, sids, eids, npp, counts)
        layer._gemm2(a2, a2s, tw, sids, eids, npp, counts)

    return run


def run_ncu(out_dir, fmt, b, tag, pair):
    metrics = ["gpu__time_duration.sum", "dram__throughput.avg.pct_of_peak_sustained_elapsed",
               "dram__bytes_read.sum", "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed",
               "sm__ops_path_tensor_src_fp8_sparsity_off.sum", "sm__ops_path_tensor_src_fp16.sum",
               "sm__throughput.avg.pct_of_peak_sustained_elapsed", "sm__inst_executed.sum"]
    cmd = ["ncu", "--clock-control", "none", "--kernel-name", "regex:moe_gemm|mx_w4a16", "--launch-count", "2",
           "--metrics", ",".join(metrics), "--section", "WarpStateStats", "--section", "Occupancy",
           "--csv", "--page", "raw",
           sys.executable, os.path.join(os.path.dirname(__file__), "moe_ncu_one.py"), fmt, str(b)]
    if pair is not None:
        cmd += [json.dumps(pair[0]), json.dumps(pair[1])]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    with open(os.path.join(out_dir, f"ncu_{fmt}_{b}_{tag}.csv"), "w") as fh:
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
        out.append({m: d.get(m) for m in metrics} | {"kernel": d.get("Kernel Name", "")[:30],
                                                      "stalls": stalls,
                                                      "warps_active": d.get("sm__warps_active.avg.pct_of_peak_sustained_active")})
    return dict(kernels=out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--batches", default="1,4,16,64,256,1024,4096,16384")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--dram-peak", type=float, default=4.81e12, help="bytes/s (ncu's DRAM peak of the card)")
    ap.add_argument("--defaults-only", action="store_true", help="time the default configurations alone")
    ap.add_argument("--formats", default=",".join(VARIANTS), help="formats to run (comma-separated)")
    ap.add_argument("--ncu", action="store_true")
    ap.add_argument("--ncu-batch", type=int, default=64)
    ap.add_argument("--phase", choices=("all", "warm", "time"), default="all",
                    help="warm: compile only (parallel); time: check and time (kernels compiled before)")
    ap.add_argument("--budget-s", type=float, default=1e9, help="skip the points left after this many seconds")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    t0 = time.time()

    import torch

    from moeprof.models import peers
    from moeprof.models.reference import ERROR_BOUNDS, poisoned_call, rel_err
    from moeprof.profiler import timing

    batches = [int(x) for x in args.batches.split(",") if x]
    fmts = set(args.formats.split(","))
    pts = [p for p in points(batches) if (p[2] == "default" or not args.defaults_only) and p[0] in fmts]
    props = torch.cuda.get_device_properties(0)
    print(f"CARD {props.name} SMs {props.multi_processor_count}; {len(pts)} points", flush=True)

    # ---- compile everything in parallel (each worker: its own CUDA context and weight cache)
    if args.workers > 1 and args.phase in ("all", "warm"):
        import concurrent.futures as cf
        import multiprocessing as mp

        # one format per worker (each holds only that format's weights), points dealt round-robin
        by_fmt = {f: [p for p in pts if p[0] == f] for f in VARIANTS}
        share = {f: max(1, round(args.workers * len(v) / len(pts))) for f, v in by_fmt.items() if v}
        chunks = [v[i::share[f]] for f, v in by_fmt.items() if v for i in range(share[f])]
        with cf.ProcessPoolExecutor(len(chunks), mp_context=mp.get_context("spawn")) as ex:
            for res in ex.map(_warm, chunks):
                for r in res:
                    if r[3] != "ok":
                        print("WARM", r, flush=True)
        print(f"compiled in {time.time() - t0:.0f} s", flush=True)
    if args.phase == "warm":
        return

    rows = []
    refs = {}
    for fmt, b, name, cfg in pts:
        row = dict(fmt=fmt, batch=b, variant=name)
        if time.time() - t0 > args.budget_s:
            row.update(ok=False, error="skipped: time budget")
            rows.append(row)
            continue
        try:
            layer = _build(fmt, b, cfg)
            if (fmt, b) not in refs:
                refs[(fmt, b)] = layer.reference()
            out = poisoned_call(layer)
            err = rel_err(out, refs[(fmt, b)])
            row.update(rel_err=err, ok=err < ERROR_BOUNDS[fmt], cfg1=layer.cfg1, cfg2=layer.cfg2,
                       experts=layer.experts_touched, weight_bytes=layer.weight_bytes_read)
            r = timing.time_fn(gemm_callable(layer), repeats=args.repeats, warmup=3)
            row.update(gemm_us=r.median_ns / 1e3, p10_us=r.p10_ns / 1e3, p90_us=r.p90_ns / 1e3,
                       pct_dram_peak=100 * layer.weight_bytes_read / (r.median_ns * 1e-9) / args.dram_peak)
            if name == "default":   # the whole layer call too (route, sort, quant, GEMMs, combine)
                row["layer_us"] = timing.time_fn(layer, repeats=args.repeats, warmup=3).median_ns / 1e3
            if name == "default" and fmt in PEER_FORMATS:
                peer = _build(fmt, b, None, kernel="torch-grouped")
                rp = timing.time_fn(peers.grouped_gemms_only(peer), repeats=args.repeats, warmup=3)
                rl = timing.time_fn(peer, repeats=args.repeats, warmup=3)
                row.update(peer_gemm_us=rp.median_ns / 1e3, peer_layer_us=rl.median_ns / 1e3)
                del peer
            del layer
        except Exception as exc:  # noqa: BLE001 - a variant that fails is a result
            row.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
        rows.append(row)
        print("ROW", json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                                 if k not in ("cfg1", "cfg2")}), flush=True)
        if (fmt, b) != (pts[-1][0], pts[-1][1]):
            torch.cuda.empty_cache()

    # ---- best correct variant per (fmt, batch)
    best = {}
    for r in rows:
        if r.get("ok") and "gemm_us" in r:
            k = (r["fmt"], r["batch"])
            if k not in best or r["gemm_us"] < best[k]["gemm_us"]:
                best[k] = r
    ncu = {}
    if args.ncu:
        for fmt in ("fp8", "mxfp4"):
            k = (fmt, args.ncu_batch)
            if k not in best:
                continue
            dflt = next((r for r in rows if r["fmt"] == fmt and r["batch"] == args.ncu_batch and r["variant"] == "default"), None)
            for tag, r in (("default", dflt), ("best", best[k])):
                if time.time() - t0 > args.budget_s + 60:
                    break
                if r is None or (tag == "best" and r["variant"] == "default"):
                    continue
                pair = None if r["variant"] == "default" else (r["cfg1"], r["cfg2"])
                ncu[f"{fmt}/{args.ncu_batch}/{tag}:{r['variant']}"] = run_ncu(args.out_dir, fmt, args.ncu_batch, tag, pair)
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
    print(f"{'fmt':6s} {'batch':>5s} {'variant':22s} {'ok':>3s} {'err':>8s} {'gemm_us':>8s} {'%peak':>6s} {'peer_us':>8s} {'layer_us':>8s}")
    for r in rows:
        print(f"{r['fmt']:6s} {r['batch']:5d} {r['variant']:22s} {'y' if r.get('ok') else 'N':>3s} "
              f"{r.get('rel_err', float('nan')):8.1e} {r.get('gemm_us', float('nan')):8.1f} "
              f"{r.get('pct_dram_peak', float('nan')):6.1f} {r.get('peer_gemm_us', float('nan')):8.1f} "
              f"{r.get('layer_us', float('nan')):8.1f}"
              + (f" {r['error'][:60]}" if "error" in r else ""))


if __name__ == "__main__":
    main()
