"""Per-GEMM sweep of the MoE kernels on the GPU: committed baseline vs config variants of the current module.

    python3 benchmarks/moe_swapab_sweep.py --out $OUT --base .ab/moe_gemm_base.py [--budget-s 480]

For gpt-oss-120b at batches 1..1024: times gemm1 (+SwiGLU) and gemm2 (+routing weight) separately
(cold L2, CUDA graph, median), for the baseline module (a copy of the committed moe_gemm.py) and for
config variants of the current one; every variant's whole-layer output is checked against the fp32
reference (NaN-poisoned). Dumps the PTX/TTGIR of the swapped-A/B gemm1 and counts wgmma / shared
memory instructions. Prints a table last; writes sweep.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from moeprof.models.reference import ERROR_BOUNDS as BOUNDS  # noqa: E402


def log(*a):
    print(*a, flush=True)


def C(bm, bn, bk, nw, ns, split=1, mxv=2, gm=4, stile=None):
    c = dict(BM=bm, BN=bn, BK=bk, GROUP_M=gm, num_warps=nw, num_stages=ns, MXV=mxv)
    if split > 1:
        c["SPLIT_K"] = split
    if stile is not None:
        c["STILE"] = stile
    return c


def V(bm, bn, nw, ns=3, stile=1, bk=128, mr=None, wtile=1, split=1, mxv=1):
    """v2-loop variant (MXV=1); stile/wtile=0: row-major scales/weights; mr: register cap (maxnreg)."""
    c = C(bm, bn, bk, nw, ns, mxv=mxv, stile=stile, split=split)
    c["WTILE"] = wtile
    if mr:
        c["maxnreg"] = mr
    return c


# per batch: variants, each a config for both GEMMs or a (gemm1, gemm2) pair; BM must match.
# run 18: BK=64 tiles (half the unpacked operand per step: 119-122 registers instead of 152-241,
# benchmarks/compile_report.py), above all for the register-bound BM=32 tile at batch 1024
MX_VARIANTS = {
    4: [V(16, 64, 2, bk=64), V(16, 64, 4, bk=64)],
    64: [V(16, 64, 2, bk=64), V(16, 64, 4, bk=64), V(16, 128, 4, bk=64)],
    256: [V(16, 64, 2, bk=64), V(16, 128, 4, bk=64)],
    1024: [V(32, 64, 4, bk=64), V(32, 128, 8, bk=64), V(32, 128, 4, bk=64), (V(32, 64, 4, bk=64), V(32, 128, 4, bk=64)),
           V(32, 64, 4, 4, bk=64), V(32, 64, 8, bk=64)],
}
# configs also timed on the baseline module (A/B of the unpack alone at that config)
BASE_VARIANTS: dict = {}
FP8_VARIANTS: dict = {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--base", default=".ab/moe_gemm_base.py")
    ap.add_argument("--batches", default="1,4,16,64,256,1024")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--budget-s", type=float, default=480)
    ap.add_argument("--no-sweep", action="store_true", help="baseline vs defaults only")
    ap.add_argument("--no-fp8", action="store_true", help="skip the fp8 rows")
    ap.add_argument("--no-asm", action="store_true", help="skip the code dumps and big-scale checks")
    args = ap.parse_args()
    t0 = time.time()
    import torch
    import triton

    import moeprof.models.kernels as K
    from moeprof.models import reference, timing
    from moeprof.models.kernels import moe_gemm as new
    from moeprof.models.reference import rel_err
    from moeprof.models.layer import build_layer_for_model

    spec = importlib.util.spec_from_file_location("moe_gemm_base", args.base)
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    _bg, _bc = base.moe_gemm, base.get_config

    import inspect

    base_has_big = "mx_big_scale" in inspect.signature(_bg).parameters

    def base_gemm(*a, **kw):
        if not base_has_big:  # older modules compute it with a host sync (breaks graph capture)
            kw.pop("mx_big_scale", None)
        kw.pop("c_div", None)
        return _bg(*a, **kw)

    base.moe_gemm = base_gemm
    base.get_config = lambda *a, slots=None, experts=None, **kw: _bc(*a, slots=slots, **kw)

    def use(mod):
        K.moe_gemm = mod
        sys.modules["moeprof.models.kernels.moe_gemm"] = mod

    props = torch.cuda.get_device_properties(0)
    copy_bw = timing.copy_bandwidth()
    log(f"CARD {props.name} copy {copy_bw / 1e12:.2f} TB/s torch {torch.__version__} triton {triton.__version__}")
    rows, refs, asm_info = [], {}, {}
    import dataclasses

    from moeprof.models import quant as q

    base_layout = "nibbles" if not hasattr(base, "_e2m1_lanes_bf16_asm") else "lanes"
    repacked: dict = {}

    def to_base_pack(layer):
        """The baseline module (before the "lanes" pack) reads mxfp4 weights in the nibble pack."""
        wt = layer.wt
        lay = wt.extra.get("mx_layout", "nibbles")
        if lay == base_layout:
            return
        key = id(wt)
        if key not in repacked:
            def rp(w):
                o = torch.empty_like(w)
                for e in range(w.shape[0]):
                    o[e] = q.pack_mxfp4(q.unpack_mxfp4(w[e], lay), base_layout)
                return o
            repacked[key] = (wt, dataclasses.replace(wt, w1=rp(wt.w1), w2=rp(wt.w2),
                                                     extra=dict(wt.extra, mx_layout=base_layout)))
        layer.wt = repacked[key][1]

    def sass_counts(ck):
        try:
            sass = ck.asm.get("sass", "") or ""
        except Exception as exc:  # noqa: BLE001
            return dict(sass_error=str(exc)[:200])
        ops = {}
        for op in ("LOP3", "SHF", "PRMT", "HMUL2", "HFMA2", "IMAD.SHL", "SHL", "F2FP", "HMMA", "HGMMA", "LDS", "LDSM", "STS", "LDGSTS"):
            ops[op] = len(re.findall(r"\b" + re.escape(op) + r"\b", sass))
        ops["sass_lines"] = sass.count("\n")
        if ops["HMUL2"]:
            ops["lop3_shf_prmt_per_hmul2"] = round((ops["LOP3"] + ops["SHF"] + ops["PRMT"]) / ops["HMUL2"], 2)
        return ops

    def measure(tag, fmt, b, cfg=None, mod=new, dump=False, big=False):
        use(mod)
        layer = build_layer_for_model("gpt-oss-120b", fmt, b, cfg=cfg)
        if mod is base and fmt == "mxfp4":
            to_base_pack(layer)
            layer.use_row_major_operands()  # the committed module may predate the tiled layouts
        if big:  # force the BIG_SCALE path (exact for any scale): same weights, other code path
            layer._big = True
        if (fmt, b) not in refs:
            refs[(fmt, b)] = layer.reference()
        out = layer.poisoned_call()
        torch.cuda.synchronize()
        written = bool(torch.isfinite(out.float()).all())
        err = rel_err(out, refs[(fmt, b)])
        ok = written and err < BOUNDS[fmt]
        wt = layer.wt
        ids, tw = reference.route(layer.x, layer.router_w, layer.router_b, layer.top_k)
        sids, eids, npp, _ = mod.moe_align(ids, wt.num_experts, layer.cfg1["BM"], 0)
        tw = tw.reshape(-1)
        q8 = fmt in ("fp8", "fp8-block", "mxfp4-w4a8")
        a, a_s = (mod.act_quant(layer.x, per_group=False) if q8 else (layer.x, None))

        def g1():
            layer._gemm1(a, a_s, tw, sids, eids, npp)

        g1()
        a2, a2s = (mod.act_quant(layer.inter_buf, per_group=False) if q8 else (layer.inter_buf, None))

        def g2():
            layer._gemm2(a2, a2s, tw, sids, eids, npp)

        if dump:
            for nm, fn in (("gemm1", g1), ("gemm2", g2)):
                fn()
                ck = mod.LAST_COMPILED[0]
                ptx, ttgir = ck.asm.get("ptx", ""), ck.asm.get("ttgir", "")
                wg = [ln.strip() for ln in ptx.splitlines() if "wgmma.mma_async" in ln]
                info = dict(
                    wgmma=len(wg), wgmma_reg_a=sum(1 for ln in wg if re.search(r"\}, \{", ln)),
                    ldmatrix=ptx.count("ldmatrix"), stmatrix=ptx.count("stmatrix"),
                    st_shared=len(re.findall(r"st\.shared", ptx)), ld_shared=len(re.findall(r"ld\.shared", ptx)),
                    mma_sync=ptx.count("mma.sync"), cp_async=ptx.count("cp.async"),
                    sample=wg[:2], n_regs=getattr(ck, "n_regs", None), n_spills=getattr(ck, "n_spills", None),
                    shared=getattr(ck.metadata, "shared", None) if hasattr(ck, "metadata") else None,
                    dot_lines=[ln.strip()[:300] for ln in ttgir.splitlines() if "warp_group_dot " in ln or "tt.dot " in ln][:4],
                    ptx_ops={o: len(re.findall(r"\b" + re.escape(o) + r"\b", ptx)) for o in
                             ("lop3.b32", "prmt.b32", "mul.rn.bf16x2", "shl.b32", "shr.b32", "and.b32")},
                    sass_ops=sass_counts(ck))
                asm_info[f"{tag}/{nm}"] = info
                log(f"ASM {tag}/{nm}: " + json.dumps(info)[:1500])
                if nm == "gemm1":
                    if tag.startswith("new"):
                        with open(os.path.join(args.out, f"{tag}_{nm}.ptx"), "w") as fh:
                            fh.write(ptx)
                    try:  # Triton's asm["sass"] needs nvdisasm; the cubin can be disassembled outside
                        with open(os.path.join(args.out, f"{tag}_{nm}.cubin"), "wb") as fh:
                            fh.write(ck.asm["cubin"])
                    except Exception as exc:  # noqa: BLE001
                        log(f"cubin dump failed: {exc}"[:300])
        tl_ = timing.time_fn(layer, repeats=args.repeats, warmup=2)
        t1 = timing.time_fn(g1, repeats=args.repeats, warmup=2)
        t2 = timing.time_fn(g2, repeats=args.repeats, warmup=2)
        e = layer.experts_touched
        b1 = e * (wt.w1[0].numel() * wt.w1.element_size() + wt.w1_s[0].numel() * wt.w1_s.element_size()
                  if wt.w1_s is not None else wt.w1[0].numel() * wt.w1.element_size())
        b2 = e * (wt.w2[0].numel() * wt.w2.element_size() + wt.w2_s[0].numel() * wt.w2_s.element_size()
                  if wt.w2_s is not None else wt.w2[0].numel() * wt.w2.element_size())
        u1, u2 = t1.median_ns / 1e3, t2.median_ns / 1e3
        row = dict(tag=tag, fmt=fmt, batch=b, E=e, cfg1=layer.cfg1, cfg2=layer.cfg2, err=err, ok=ok,
                   layer_us=tl_.median_ns / 1e3,
                   g1_us=u1, g2_us=u2, g1_pct=100 * b1 / (u1 * 1e-6) / copy_bw, g2_pct=100 * b2 / (u2 * 1e-6) / copy_bw,
                   pct=100 * (b1 + b2) / ((u1 + u2) * 1e-6) / copy_bw)
        rows.append(row)
        log(f"RUN {tag:22s} {fmt:5s} b={b:5d} E={e:3d} g1 {u1:8.1f} us ({row['g1_pct']:3.0f}%) g2 {u2:8.1f} us"
            f" ({row['g2_pct']:3.0f}%) sum {u1 + u2:8.1f} ({row['pct']:3.0f}%) layer {row['layer_us']:8.1f} err {err:.2e} {'OK' if ok else 'FAIL'}"
            f" {layer.cfg1} | {layer.cfg2}")
        del layer
        return row

    def safe(*a, **k):
        if time.time() - t0 > args.budget_s:
            log("BUDGET reached, skipping", a[:3], k.get("cfg"))
            return None
        try:
            return measure(*a, **k)
        except Exception as exc:  # noqa: BLE001
            log(f"ERROR {a[:3]} {k.get('cfg')} {type(exc).__name__}: {exc}"[:1200])
            traceback.print_exc(limit=3)
            return None

    batches = [int(x) for x in args.batches.split(",") if x]
    # ---- generated code of the swapped path (and the v2 loop for comparison), batch 64
    for mod, nm in (() if args.no_asm else ((base, "base"), (new, "new"))):
        safe(f"{nm}-v2-asm", "mxfp4", 64, cfg=(C(16, 64, 128, 4, 3, mxv=1), C(16, 64, 128, 4, 3, mxv=1)),
             mod=mod, dump=True)
        safe(f"{nm}-swap-asm", "mxfp4", 64, cfg=(C(16, 64, 64, 4, 4), C(16, 64, 64, 4, 4)), mod=mod, dump=True)
    # the big-scale fallback (scale bytes > 128 path, forced on normal weights): both loops
    if not args.no_asm:
        safe("swap-bigscale", "mxfp4", 4, cfg=(C(16, 64, 64, 4, 4, 2), C(16, 64, 64, 4, 4, 2)), big=True)
        safe("v2-bigscale", "mxfp4", 4, cfg=(C(16, 64, 128, 4, 3, mxv=1), C(16, 64, 128, 4, 3, mxv=1)), big=True)
    # ---- baseline vs current defaults (fp8: unchanged kernels, current module only)
    for b in batches:
        safe("base", "mxfp4", b, mod=base)
        safe("new", "mxfp4", b, mod=new)
        if not args.no_fp8:
            safe("new", "fp8", b, mod=new)
    # ---- variants
    if not args.no_sweep:
        for b in batches:
            for c in MX_VARIANTS.get(b, []):
                c, c2 = (dict(c[0]), dict(c[1])) if isinstance(c, tuple) else (c, dict(c))

                def _t(x):
                    return (f"{x['BN']}k{x['BK']}w{x['num_warps']}s{x['num_stages']}t{x.get('STILE', 1)}{x.get('WTILE', 1)}"
                            + (f"x{x['SPLIT_K']}" if x.get("SPLIT_K", 1) > 1 else "")
                            + (f"r{x['maxnreg']}" if x.get("maxnreg") else ""))
                tag = f"mx{c['MXV']}-{c['BM']}-{_t(c)}" + ("" if c2 == c else f"+{_t(c2)}")
                if c in BASE_VARIANTS.get(b, []):  # same config on the baseline module, same call
                    safe("base-" + tag, "mxfp4", b, cfg=(dict(c), dict(c)), mod=base)
                safe(tag, "mxfp4", b, cfg=(c, c2))
            for c in FP8_VARIANTS.get(b, []):
                tag = f"fp8-{c['BN']}-{c['BK']}-k{c.get('SPLIT_K', 1)}"
                safe(tag, "fp8", b, cfg=(c, dict(c)))

    with open(os.path.join(args.out, "sweep.json"), "w") as fh:
        json.dump(dict(card=props.name, copy_bw=copy_bw, rows=rows, asm=asm_info), fh, indent=1, default=str)
    log(f"\nSUMMARY card={props.name} copy={copy_bw / 1e12:.2f} TB/s (per-GEMM, cold L2, median)")
    log(f"{'tag':24s} {'fmt':5s} {'batch':>5s} {'g1_us':>8s} {'%':>4s} {'g2_us':>8s} {'%':>4s} {'sum':>8s} {'%':>4s} {'layer':>8s} {'err':>9s}")
    for r in rows:
        log(f"{r['tag']:24s} {r['fmt']:5s} {r['batch']:5d} {r['g1_us']:8.1f} {r['g1_pct']:4.0f} {r['g2_us']:8.1f}"
            f" {r['g2_pct']:4.0f} {r['g1_us'] + r['g2_us']:8.1f} {r['pct']:4.0f} {r['layer_us']:8.1f} {r['err']:9.2e}{'' if r['ok'] else ' FAIL'}")


if __name__ == "__main__":
    main()
