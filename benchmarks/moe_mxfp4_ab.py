"""A/B of the MoE kernels on the GPU: committed baseline module vs the working tree, same card, same call.

    python3 benchmarks/moe_mxfp4_ab.py --out $OUT --base .ab/moe_gemm_base.py

For each format and batch: correctness (NaN-poisoned output vs the fp32 reference on the same
dequantized weights) and cold-L2 CUDA-graph timing of the whole layer and of the expert GEMMs alone,
for the baseline kernels (loaded from --base, a copy of the committed moe_gemm.py) and the current
ones; MXFP4 config variants at a few batches; the sort (moe_align) kernel vs the torch version.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from moeprof.models.reference import ERROR_BOUNDS as BOUNDS  # noqa: E402


def log(*a):
    print(*a, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--base", default=".ab/moe_gemm_base.py")
    ap.add_argument("--batches", default="1,4,16,64,256,1024")
    ap.add_argument("--formats", default="mxfp4,fp8")
    ap.add_argument("--variants", default="1,64", help="batches for the MXFP4 config variants")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--budget-s", type=float, default=400)
    args = ap.parse_args()
    t0 = time.time()
    import torch
    import triton

    import moeprof.models.kernels as K
    from moeprof.models import quant as q
    from moeprof.profiler import timing
    from moeprof.models.kernels import moe_gemm as new
    from moeprof.models.reference import rel_err
    from moeprof.models.layer import build_layer_for_model

    spec = importlib.util.spec_from_file_location("moe_gemm_base", args.base)
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    _bg = base.moe_gemm

    def base_gemm(*a, **kw):
        kw.pop("mx_big_scale", None)
        return _bg(*a, **kw)

    base.moe_gemm = base_gemm
    base_layout = "lanes" if hasattr(base, "_e2m1_lanes_bf16_asm") else "nibbles"
    _bc = base.get_config
    base.get_config = lambda *a, slots=None, **kw: _bc(*a, **kw)  # older signature

    def use(mod):
        K.moe_gemm = mod
        sys.modules["moeprof.models.kernels.moe_gemm"] = mod

    props = torch.cuda.get_device_properties(0)
    copy_bw = timing.copy_bandwidth()
    log(f"CARD {props.name} copy {copy_bw / 1e12:.2f} TB/s torch {torch.__version__} triton {triton.__version__}")
    rows, checks = [], []

    def measure(tag, fmt, b, cfg=None, mod=new, rm=False):
        use(mod)
        layer = build_layer_for_model("gpt-oss-120b", fmt, b, cfg=cfg)
        wt = layer.wt
        lay = wt.extra.get("mx_layout", "nibbles")
        if rm:  # row-major packed weights for the dot_scaled variant
            layer.wt = dataclasses.replace(wt, w1=q.pack_mxfp4_rowmajor(q.unpack_mxfp4(wt.w1, lay)),
                                           w2=q.pack_mxfp4_rowmajor(q.unpack_mxfp4(wt.w2, lay)))
        elif mod is base and fmt == "mxfp4" and lay != base_layout:
            # the baseline module (before the "lanes" pack) reads the nibble pack
            def rp(w):
                return torch.stack([q.pack_mxfp4(q.unpack_mxfp4(w[e], lay), base_layout) for e in range(w.shape[0])])
            layer.wt = dataclasses.replace(wt, w1=rp(wt.w1), w2=rp(wt.w2), extra=dict(wt.extra, mx_layout=base_layout))
        if rm or mod is base:  # repacked weights / a module from before the tiled layouts
            layer.use_row_major_operands()
        out = layer.poisoned_call()
        torch.cuda.synchronize()
        written = bool(torch.isfinite(out.float()).all())
        err = rel_err(out, layer.reference())
        ok = written and err < BOUNDS[fmt]
        r = timing.time_fn(layer, repeats=args.repeats, warmup=3)
        g = timing.time_fn(layer.gemm_only(), repeats=args.repeats, warmup=2)
        wb = layer.weight_bytes_read
        row = dict(tag=tag, fmt=fmt, batch=b, cfg=getattr(layer, "cfg1", None), rel_err=err, ok=ok,
                   layer_us=r.median_ns / 1e3, gemm_us=g.median_ns / 1e3, E=layer.experts_touched,
                   layer_pct=100 * wb / (r.median_ns * 1e-9) / copy_bw, gemm_pct=100 * wb / (g.median_ns * 1e-9) / copy_bw)
        rows.append(row)
        log(f"RUN {tag:14s} {fmt:6s} b={b:5d} E={row['E']:3d} layer {row['layer_us']:8.1f} us ({row['layer_pct']:3.0f}%)"
            f" gemm {row['gemm_us']:8.1f} us ({row['gemm_pct']:3.0f}%) err {err:.2e} {'OK' if ok else 'FAIL'} {row['cfg']}")
        del layer
        return row

    def safe(*a, **k):
        if time.time() - t0 > args.budget_s:
            log("BUDGET reached, skipping", a[:3])
            return None
        try:
            return measure(*a, **k)
        except Exception as exc:  # noqa: BLE001
            log(f"ERROR {a[:3]} {type(exc).__name__}: {exc}"[:800])
            traceback.print_exc(limit=2)
            return None

    # ---- sort kernel vs torch (correctness per expert segment + time)
    try:
        use(new)
        for t in (1, 64, 1024, 16384):
            ids = torch.randint(0, 128, (t, 4), device="cuda", dtype=torch.int32)
            a = new.moe_align(ids, 128, 16)
            r = new.moe_align_torch(ids, 128, 16)
            same = torch.equal(a[1], r[1]) and torch.equal(a[2], r[2]) and torch.equal(a[3], r[3])
            n = int(a[2])
            same = same and torch.equal(a[0][n:], r[0][n:])
            sa, sr = a[0][:n].clone(), r[0][:n].clone()
            # rows of one expert may come in another order: compare sorted per expert segment
            seg = torch.repeat_interleave(a[1][: n // 16].long(), 16)
            key = lambda s: (seg * (t * 4 + 1) + s.long()).sort().values  # noqa: E731
            same = same and torch.equal(key(sa), key(sr))
            ta = timing.time_fn(lambda: new.moe_align(ids, 128, 16), repeats=10, warmup=2)
            tr = timing.time_fn(lambda: new.moe_align_torch(ids, 128, 16), repeats=10, warmup=2)
            log(f"SORT T={t:6d} same={same} triton {ta.median_ns / 1e3:7.1f} us torch {tr.median_ns / 1e3:7.1f} us")
            checks.append(dict(sort_T=t, same=same, triton_us=ta.median_ns / 1e3, torch_us=tr.median_ns / 1e3))
    except Exception as exc:  # noqa: BLE001
        log(f"SORT ERROR {type(exc).__name__}: {exc}"[:800])
        traceback.print_exc(limit=3)

    batches = [int(x) for x in args.batches.split(",") if x]
    fmts = [f for f in args.formats.split(",") if f]
    # ---- baseline vs new defaults
    for b in batches:
        for fmt in fmts:
            safe("base", fmt, b, mod=base)
            safe("new", fmt, b, mod=new)
    # ---- MXFP4 variants
    for b in [int(x) for x in args.variants.split(",") if x]:
        bm = 16 if b <= 256 else 64
        for bn, bk, ns, nw in [(32, 128, 3, 4), (128, 128, 3, 4), (64, 64, 4, 4), (32, 64, 4, 4),
                               (64, 128, 5, 4), (16, 128, 3, 2)]:
            c = dict(BM=bm, BN=bn, BK=bk, GROUP_M=4, num_warps=nw, num_stages=ns, MXV=1)
            safe(f"v1-{bn}-{bk}-{ns}-{nw}", "mxfp4", b, cfg=(c, c))

    with open(os.path.join(args.out, "ab.json"), "w") as fh:
        json.dump(dict(card=props.name, copy_bw=copy_bw, rows=rows, checks=checks), fh, indent=1, default=str)
    log(f"\nSUMMARY card={props.name} copy={copy_bw / 1e12:.2f} TB/s")
    log(f"{'tag':16s} {'fmt':6s} {'batch':>5s} {'layer_us':>9s} {'%':>4s} {'gemm_us':>9s} {'%':>4s} {'err':>9s}")
    for r in rows:
        log(f"{r['tag']:16s} {r['fmt']:6s} {r['batch']:5d} {r['layer_us']:9.1f} {r['layer_pct']:4.0f} {r['gemm_us']:9.1f} {r['gemm_pct']:4.0f} {r['rel_err']:9.2e}{'' if r['ok'] else ' FAIL'}")


if __name__ == "__main__":
    main()
