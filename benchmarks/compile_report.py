"""Compile moeprof's grouped-GEMM kernel for sm_90 without a GPU and report what the compiler made.

Needs no GPU: Triton's own ptxas/nvdisasm compile and disassemble the kernel for a target
named by hand (GPUTarget("cuda", 90, 32)). Reports, per variant: registers, spills, shared memory,
layout conversions left in the TTGIR, and a SASS opcode histogram (HGMMA/HMMA, LDS/STS, LDSM,
LDGSTS, ALU ops). Use the same Triton as the GPU machine (3.6) for numbers that match it:

    python -m venv /tmp/t36 && /tmp/t36/bin/pip install triton==3.6.0 torch==2.13.0
    /tmp/t36/bin/python benchmarks/compile_report.py --fmt mxfp4 --gemm gemm1 --cfg BM=16,BN=64,BK=128,MXV=1
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

from moeprof.models.kernels import moe_gemm as mg  # noqa: E402

SASS_OPS = ("HGMMA", "HMMA", "QGMMA", "LDSM", "LDS", "STS", "LDGSTS", "LDG", "STG", "BAR", "LOP3", "SHF",
            "PRMT", "HMUL2", "IMAD", "FFMA", "FMUL", "WARPGROUP", "LDL", "STL", "SYNCS")


def _parse_cfg(text: str) -> dict:
    out = {}
    for kv in filter(None, text.split(",")):
        k, v = kv.split("=")
        out[k.strip()] = int(v)
    return out


def compile_variant(fmt: str, gemm: str, cfg: dict, n: int = 2880, k: int = 2880):
    """Compile moe_gemm_kernel with the constexprs moe_gemm() would pass; returns the compiled kernel."""
    wf, aq = mg.FMT_CODES[fmt]
    gated = gemm == "gemm1"
    if wf == mg.WF_MX_BF16:
        aq = mg.AQ_NONE
    mxv = max(1, cfg.get("MXV", 1)) if wf == mg.WF_MX_BF16 else 0
    adt = {0: "*bf16", 1: "*fp8e4nv", 2: "*fp8e4nv", 3: "*bf16", 4: "*fp8e4nv"}[wf]
    wdt = {0: "*bf16", 1: "*fp8e4nv", 2: "*fp8e4nv", 3: "*u8", 4: "*u8"}[wf]
    wsdt = {0: "*bf16", 1: "*fp32", 2: "*fp32", 3: "*u8", 4: "*u8"}[wf]
    split = cfg.get("SPLIT_K", 1)
    sig = dict(a_ptr=adt, a_s_ptr="*fp32", w_ptr=wdt, w_s_ptr=wsdt, b_ptr="*fp32",
               c_ptr="*fp32" if split > 1 else "*bf16", topk_w_ptr="*fp32",
               sorted_ids_ptr="*i32", expert_ids_ptr="*i32", npp_ptr="*i32",
               N="i32", K="i32", num_valid="i32", up_off="i32", up_soff="i32",
               stride_am="i32", stride_asm="i32", stride_we="i32", stride_wn="i32", stride_wse="i32",
               stride_wsn="i32", stride_be="i32", stride_cm="i32")
    const = dict(A_DIV=4 if gated else 1, WF=wf, AQ=aq, GATED=gated, HAS_BIAS=True, MUL_ROUTED=not gated,
                 BM=cfg["BM"], BN=cfg["BN"], BK=cfg["BK"], GROUP_M=cfg.get("GROUP_M", 4),
                 EVEN_K=(k % cfg["BK"] == 0), UNPACK_ASM=True, DOT_F32=False, GPI=cfg.get("GPI", 1),
                 MXV=mxv, BIG_SCALE=False, SPLIT_K=split, C_DIV=1, STILE=bool(cfg.get("STILE", 0)), WTILE=bool(cfg.get("WTILE", 0)),
                 KPAIR=bool(mxv == 2 and cfg.get("KPAIR", 0)), SWAP_AB=bool(cfg.get("SWAP_AB", 0)),
                 GU_ONE_DOT=bool(cfg.get("GU_ONE_DOT", 0)) and gated, GU_PAIRED=False)
    if cfg.get("GU_PAIRED") and gated:
        # what moe_gemm launches for GU_PAIRED: the plain loop over the paired rows, SwiGLU in the epilogue
        const.update(GATED=False, MUL_ROUTED=False, GU_PAIRED=True)
    params = mg.moe_gemm_kernel.arg_names
    for name in params:
        if name in const:
            sig[name] = "constexpr"
    extra = {p: const[p] for p in params if p in const}
    # what the launcher's specialization gives on the GPU: 16-byte aligned pointers, and the integer
    # arguments that are multiples of 16 at gpt-oss shapes (N, K, row strides)
    div16 = {"N": n, "K": k, "up_off": n, "stride_am": k, "stride_cm": n, "stride_be": 2 * n,
             "stride_wn": 64 * 2 * n if cfg.get("WTILE") else k // 2 if wf >= 3 else k, "stride_we": 2 * n * k,
             "stride_wsn": 4 * 2 * n if cfg.get("STILE") else k // 32 if wf >= 3 else 1,
             "stride_wse": 16 * 2 * n * k}
    attrs = {}
    for i, name in enumerate(params):
        if sig[name].startswith("*") or (name in div16 and div16[name] % 16 == 0):
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = triton.compiler.ASTSource(fn=mg.moe_gemm_kernel, signature={p: sig[p] for p in params},
                                    constexprs=extra, attrs=attrs)
    opts = dict(num_warps=cfg.get("num_warps", 4), num_stages=cfg.get("num_stages", 3))
    opts = {k_: v for k_, v in opts.items()}
    if "maxnreg" in cfg:
        opts["maxnreg"] = cfg["maxnreg"]
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)


def sass_histogram(cubin: bytes) -> collections.Counter:
    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
        path = f.name
    try:
        text = subprocess.run([os.path.join(bindir, "nvdisasm"), "-c", path], capture_output=True,
                              text=True, check=True).stdout
    finally:
        os.unlink(path)
    ops = collections.Counter()
    for line in text.splitlines():
        m = re.search(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)(\.[A-Z0-9_.]+)?", line)
        if m:
            ops[m.group(1)] += 1
    return ops


def ptxas_usage(ptx: str, maxnreg: int | None) -> dict:
    """Registers / spill bytes from ptxas -v on the kernel's PTX (the driver reports them only at load)."""
    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        cmd = [os.path.join(bindir, "ptxas"), "-arch=sm_90a", "-v", src, "-o", os.path.join(d, "k.o")]
        if maxnreg:
            cmd[1:1] = [f"-maxrregcount={maxnreg}"]
        err = subprocess.run(cmd, capture_output=True, text=True).stderr
    regs = re.search(r"Used (\d+) registers", err)
    spill = re.search(r"(\d+) bytes spill stores", err)
    return dict(regs=int(regs.group(1)) if regs else None, spill_bytes=int(spill.group(1)) if spill else None)


def report(fmt: str, gemm: str, cfg: dict) -> dict:
    ck = compile_variant(fmt, gemm, cfg)
    ttgir = ck.asm["ttgir"]
    ops = sass_histogram(ck.asm["cubin"])
    md = ck.metadata
    return dict(
        **ptxas_usage(ck.asm["ptx"], cfg.get("maxnreg")),
        shared=md_get(md, "shared"),
        convert_layout=ttgir.count("ttg.convert_layout"),
        local_alloc=ttgir.count("ttg.local_alloc"),
        local_store=ttgir.count("ttg.local_store"),
        async_copy=ttgir.count("ttg.async_copy_global_to_local"),
        wgmma=ttgir.count("ttng.warp_group_dot "), wgmma_wait=ttgir.count("ttng.warp_group_dot_wait"),
        sass_total=sum(ops.values()), **{f"sass_{o}": ops.get(o, 0) for o in SASS_OPS},
    ), ck


def md_get(md, key):
    try:
        return getattr(md, key)
    except AttributeError:
        return md.get(key) if isinstance(md, dict) else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fmt", default="mxfp4")
    p.add_argument("--gemm", default="gemm1", choices=("gemm1", "gemm2"))
    p.add_argument("--cfg", action="append", required=True, help="BM=16,BN=64,BK=128,MXV=1,num_warps=4,num_stages=3[,maxnreg=..]")
    p.add_argument("--dump", help="folder for ttgir/ptx/sass of each variant")
    a = p.parse_args(argv)
    print(f"triton {triton.__version__}, target sm_90, fmt {a.fmt}, {a.gemm}")
    for i, c in enumerate(a.cfg):
        cfg = _parse_cfg(c)
        try:
            r, ck = report(a.fmt, a.gemm, cfg)
        except Exception as e:  # a variant that does not compile is a result, not a crash
            print(f"{c}: compile failed: {str(e).splitlines()[0][:200]}")
            continue
        print(c)
        print("   " + "  ".join(f"{k}={v}" for k, v in r.items() if v is not None and v != 0 or k == "spill_bytes"))
        if a.dump:
            os.makedirs(a.dump, exist_ok=True)
            for kind in ("ttgir", "ptx"):
                with open(os.path.join(a.dump, f"v{i}.{kind}"), "w") as f:
                    f.write(ck.asm[kind])
            with open(os.path.join(a.dump, f"v{i}.cubin"), "wb") as f:
                f.write(ck.asm["cubin"])


if __name__ == "__main__":
    main()
