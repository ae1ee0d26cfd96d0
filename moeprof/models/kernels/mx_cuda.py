"""The CUDA MXFP4 expert GEMMs: at decode (mx_mma.cu) x BF16 activations (moe_gemm_mx) and x e4m3
activations (moe_gemm_mx8, mxfp4-w4a8); at prefill (mx_wgmma.cu, warpgroup MMAs) x BF16 activations
(moe_gemm_mx_wg) and x e4m3 activations (moe_gemm_mx_wg8): build, load and launch.

The kernel is compiled from source with nvcc on first use (a cubin per variant, cached on disk under
$MOEPROF_CACHE_DIR or ~/.cache/moeprof/kernels) and launched through the CUDA driver API on the current
torch stream, so no PyTorch C++ extension toolchain is needed. Where it cannot run (no CUDA device, not
sm_90, no nvcc, a failed build, or MOEPROF_MX_CUDA=0) `available()` is False, `unavailable_reason()` says
why, and the layer uses the Triton kernels instead. nvcc: $MOEPROF_NVCC, PATH, or $CUDA_HOME/bin.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("mx_mma.cu")
WG_SOURCE = Path(__file__).with_name("mx_wgmma.cu")
HEADER = Path(__file__).with_name("mx_common.cuh")   # included by both sources
ARCH = "sm_90"
WG_ARCH = "sm_90a"         # warpgroup MMAs (wgmma) need the arch-specific target
MAX_EXPERTS = 256          # the kernel's expert scan (MAX_EXPERTS in mx_mma.cu)
GROUPS = (1, 2, 4)         # token groups of 8 per pass with a compiled kernel

_lock = threading.Lock()
_reason: str | None = None


@dataclass(frozen=True)
class Variant:
    """Compile-time shape of the CTA: WN warps side by side (MT tiles of 16 rows each), WK warps
    splitting K, D stages of each warp's cp.async ring (chunks of 64 K in flight per warp); W1 / W2: the
    resident warps per SM the register allocation aims at with 1 / 2 token groups per pass (more warps,
    fewer registers each). The defaults are the decode default (kernels/moe_gemm.py: MMA_SHAPE)."""
    WN: int = 8
    WK: int = 1
    D: int = 4
    MT: int = 2      # tiles of 16 rows per warp
    ASMEM: int = 0   # 1: activation fragments through the ring as well
    W1: int = 24
    W2: int = 16
    FL: int = 2      # option bits (mx_mma.cu MX_FLAGS): 1 per-warp expert scan, 2 weights first, 4 the scale
    #                  as one multiply-add, 8 barrier-free epilogue

    def defines(self) -> list[str]:
        return [f"-DMX_WN={self.WN}", f"-DMX_WK={self.WK}", f"-DMX_D={self.D}", f"-DMX_MT={self.MT}",
                f"-DMX_ASMEM={self.ASMEM}", f"-DMX_WARPS_G1={self.W1}", f"-DMX_WARPS_G2={self.W2}",
                f"-DMX_FLAGS={self.FL}"]

    def tag(self) -> str:
        return "x".join(str(v) for v in (self.WN, self.WK, self.D, self.MT, self.ASMEM, self.W1, self.W2, self.FL))

    source = SOURCE
    arch = ARCH
    stem = "mx_mma"


@dataclass(frozen=True)
class WgVariant:
    """Compile-time shape of the prefill kernel (mx_wgmma.cu): NWG warpgroups of 64 weight rows per CTA,
    BT token rows per pass at most, S shared-memory stages, MINB CTAs per SM aimed at by the register
    allocation; IF=1: the e4m3 table kernel leaves each chunk's MMAs in flight into the next chunk (at
    128-row passes)."""
    NWG: int = 2
    BT: int = 128
    S: int = 4
    MINB: int = 2
    IF: int = 0

    def defines(self) -> list[str]:
        return [f"-DWG_NWG={self.NWG}", f"-DWG_BT={self.BT}", f"-DWG_S={self.S}", f"-DWG_MINB={self.MINB}",
                f"-DWG_INFLIGHT={self.IF}"]

    def tag(self) -> str:
        return "x".join(str(v) for v in (self.NWG, self.BT, self.S, self.MINB, self.IF))

    def threads(self) -> int:
        return 128 * self.NWG

    source = WG_SOURCE
    arch = WG_ARCH
    stem = "mx_wgmma"


def wg_smem_bytes(variant: WgVariant, e4m3: bool = False) -> int:
    """Dynamic shared memory of the prefill kernel (mx_wgmma.cu: WgStage<F8>::BYTES per stage, stages on
    1024-byte boundaries, plus 1024 to align the first); e4m3: the W4A8 kernels (64-byte token rows per
    chunk, 32 bytes of scales per warp)."""
    warps = 4 * variant.NWG
    row, scales = (64, 32) if e4m3 else (128, 128)
    stage = -(-(variant.BT * row + warps * 512 + warps * scales) // 1024) * 1024
    return variant.S * stage + 1024


def variant_of(cfg: dict):
    """The Variant (WgVariant for KERNEL "wg") named by a GEMM configuration's shape keys
    (kernels/moe_gemm.py: mma_config, wg_config)."""
    cls = WgVariant if cfg.get("KERNEL") in ("wg", "wg8") else Variant
    return cls(**{f.name: int(cfg[f.name]) for f in dataclasses.fields(cls) if f.name in cfg})


def _nvcc() -> str | None:
    for cand in (os.environ.get("MOEPROF_NVCC"), shutil.which("nvcc"),
                 os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def _require_nvcc(nvcc: str | None) -> str:
    nvcc = nvcc or _nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found (set MOEPROF_NVCC or CUDA_HOME)")
    return nvcc


def cache_dir() -> Path:
    """Where the cubins go: $MOEPROF_CACHE_DIR/kernels, default ~/.cache/moeprof/kernels."""
    root = os.environ.get("MOEPROF_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "moeprof")
    return Path(root) / "kernels"


def _flags(variant) -> list[str]:
    return ["-cubin", f"-arch={variant.arch}", "-O3", "-std=c++17", *variant.defines()]


def cubin_path(variant) -> Path:
    """Where `build` puts (or finds) the variant's cubin."""
    # the cubin depends on the sources and the flags (any nvcc that builds sm_90 makes a loadable one)
    src = variant.source.read_bytes() + HEADER.read_bytes()
    key = hashlib.sha256(src + " ".join(_flags(variant)).encode()).hexdigest()[:16]
    return cache_dir() / f"{variant.stem}-{variant.tag()}-{key}.cubin"


def build(variant: Variant | WgVariant = Variant(), *, nvcc: str | None = None) -> Path:
    """Compile the variant's source (mx_mma.cu or mx_wgmma.cu) for `variant` (cached by source, header
    and flags); the cubin's path."""
    nvcc = _require_nvcc(nvcc)
    flags = _flags(variant)
    out = cubin_path(variant)
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    proc = subprocess.run([nvcc, *flags, f"-I{HEADER.parent}", str(variant.source), "-o", str(tmp)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nvcc failed: {proc.stderr.strip()[-400:]}")
    os.replace(tmp, out)
    return out


@dataclass(frozen=True)
class BuildResult:
    variant: Variant | WgVariant
    cubin: Path | None     # None: the build failed
    cached: bool           # the cubin was there already
    error: str = ""


def build_all(variants, *, jobs: int = 1, nvcc: str | None = None, on_done=None) -> list[BuildResult]:
    """Compile several variants (no GPU needed: nvcc only), `jobs` nvcc processes at a time, so that a GPU
    machine finds them in the cache (or loads them from a carried copy of it) instead of compiling on first
    use. on_done(result) is called as each one finishes. Raises RuntimeError when there is no nvcc."""
    from concurrent.futures import ThreadPoolExecutor

    nvcc = _require_nvcc(nvcc)

    def one(v) -> BuildResult:
        was = cubin_path(v).exists()
        try:
            res = BuildResult(v, build(v, nvcc=nvcc), was)
        except Exception as exc:  # noqa: BLE001 - a failed variant is a result; the others go on
            res = BuildResult(v, None, False, " ".join(str(exc).split())[-300:])
        if on_done is not None:
            on_done(res)
        return res

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return list(pool.map(one, variants))


# ----------------------------------------------------------------------------- driver API
class _Driver:
    def __init__(self):
        self.lib = ctypes.CDLL("libcuda.so.1")
        self.lib.cuGetErrorString.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]

    def check(self, rc: int, what: str) -> None:
        if rc != 0:
            msg = ctypes.c_char_p()
            self.lib.cuGetErrorString(rc, ctypes.byref(msg))
            raise RuntimeError(f"{what}: CUDA error {rc} ({(msg.value or b'?').decode()})")


@functools.lru_cache(maxsize=1)
def _driver() -> _Driver:
    return _Driver()


class _Module:
    """A loaded cubin in the device's primary context (the one torch uses)."""

    def __init__(self, cubin: Path, device_index: int):
        import torch

        drv = _driver()
        torch.cuda.init()
        with torch.cuda.device(device_index):
            torch.cuda.current_stream()  # makes torch's context current on this thread
            ctx = ctypes.c_void_p()
            drv.check(drv.lib.cuCtxGetCurrent(ctypes.byref(ctx)), "cuCtxGetCurrent")
            if not ctx.value:
                dev = ctypes.c_int()
                drv.check(drv.lib.cuDeviceGet(ctypes.byref(dev), device_index), "cuDeviceGet")
                drv.check(drv.lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
                drv.check(drv.lib.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
            self.module = ctypes.c_void_p()
            image = cubin.read_bytes()
            drv.check(drv.lib.cuModuleLoadData(ctypes.byref(self.module), image), "cuModuleLoadData")
        self.functions: dict[str, ctypes.c_void_p] = {}
        self.smem_set: dict[int, bool] = {}

    def function(self, name: str) -> ctypes.c_void_p:
        fn = self.functions.get(name)
        if fn is None:
            fn = ctypes.c_void_p()
            drv = _driver()
            drv.check(drv.lib.cuModuleGetFunction(ctypes.byref(fn), self.module, name.encode()),
                      f"cuModuleGetFunction({name})")
            self.functions[name] = fn
        return fn


_modules: dict[tuple, _Module] = {}


def _module(variant: Variant | WgVariant, device_index: int) -> _Module:
    key = (variant, device_index)
    with _lock:
        mod = _modules.get(key)
        if mod is None:
            mod = _modules[key] = _Module(build(variant), device_index)
        return mod


def _device_index(device=None) -> int:
    """`device`'s CUDA index, or the current device's."""
    import torch

    idx = torch.device(device).index if device is not None else None
    return torch.cuda.current_device() if idx is None else idx


def unavailable_reason(device=None) -> str | None:
    """None when the CUDA kernel can run on `device` (default: the current CUDA device), else why not."""
    global _reason
    try:
        import torch
    except ImportError:
        return "no torch"
    if os.environ.get("MOEPROF_MX_CUDA", "1") == "0":
        return "disabled by MOEPROF_MX_CUDA=0"
    if os.environ.get("TRITON_INTERPRET", "0") == "1" or not torch.cuda.is_available():
        return "no CUDA device"
    idx = _device_index(device)
    major, minor = torch.cuda.get_device_capability(idx)
    if (major, minor) != (9, 0):
        return f"built for sm_90 (Hopper); this device is sm_{major}{minor}"
    if _reason is not None:
        return _reason
    try:
        _module(Variant(), idx)
    except Exception as exc:  # a missing compiler or a failed build: the Triton kernels run instead
        _reason = f"build failed: {exc}"
        return _reason
    return None


def available(device=None) -> bool:
    return unavailable_reason(device) is None


_wg_reason: str | None = None


def wg_unavailable_reason(device=None) -> str | None:
    """None when the prefill kernel (mx_wgmma.cu, sm_90a) can run on `device` as well, else why not."""
    global _wg_reason
    why = unavailable_reason(device)
    if why is not None or _wg_reason is not None:
        return why or _wg_reason
    try:
        _module(WgVariant(), _device_index(device))
    except Exception as exc:  # the layer keeps the dequantize-to-bf16 prefill path
        _wg_reason = f"build failed: {exc}"
        return _wg_reason
    return None


def prepare(variant: Variant | WgVariant, device) -> None:
    """Build and load `variant` before timing or CUDA-graph capture (a load is not a stream operation)."""
    _module(variant, _device_index(device))


def smem_bytes(variant: Variant, groups: int) -> int:
    """Dynamic shared memory of an ASMEM variant (mx_mma.cu: RING_BYTES / RED_BYTES); 0 otherwise."""
    if not variant.ASMEM:
        return 0
    warps = variant.WN * variant.WK
    ring = warps * variant.D * 32 * (variant.MT * (16 + 1) + groups * 32)
    red = warps * variant.MT * groups * 4 * 32 * 4
    return max(ring, red)


def kernel_name(groups: int, gated: bool, big_scale: bool) -> str:
    return f"mx_w4a16_g{groups}_{'gated' if gated else 'down'}{'_big' if big_scale else ''}"


def _p(t) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr() if t is not None else 0)


def moe_gemm_mx(a, w_mma, s_mma, bias, topk_w, sorted_ids, counts, *, out, n_out: int, k: int, a_div: int,
                gated: bool, mul_routed: bool, big_scale: bool, block_m: int, has_foreign: bool,
                groups: int = 1, variant: Variant = Variant(), up_off: int = 0, a_scale=None):
    """One grouped GEMM through the CUDA kernel. a: bf16 [rows, k] (row = slot // a_div); w_mma / s_mma:
    [E, Nt, Kc, 32, 16] / [E, Nt, Kc, 16, 2] (quant.mma_mx_weights); bias fp32 [E, *] or None;
    sorted_ids / counts from moe_align(block_m); out bf16 [slots, n_out]: gated -> SwiGLU(gate, up) of
    column j (up bias at up_off + j), else (acc + bias) * topk_w[slot] when mul_routed. a_scale: fp32
    per row of a (e4m3 activations handed over as their exact bf16 values), applied before the bias."""
    import torch

    if groups not in GROUPS:
        raise ValueError(f"groups must be one of {GROUPS}")
    e, nt, kc = w_mma.shape[0], w_mma.shape[1], w_mma.shape[2]
    assert a.dtype == torch.bfloat16 and out.dtype == torch.bfloat16 and a.stride(1) == 1 and out.stride(1) == 1
    assert a.stride(0) % 8 == 0 and a.data_ptr() % 16 == 0, "activation rows must be 16-byte aligned"
    assert a_scale is None or (a_scale.dtype == torch.float32 and a_scale.is_contiguous())
    assert kc * 64 >= k >= 64 and k % 32 == 0 and e <= MAX_EXPERTS
    return _launch(kernel_name(groups, gated, big_scale), variant, smem_bytes(variant, groups), a, a_scale,
                   w_mma, s_mma, bias, topk_w, sorted_ids, counts, out=out, n_out=n_out, k=k, a_div=a_div,
                   mul_routed=mul_routed, block_m=block_m, has_foreign=has_foreign, up_off=up_off)


def _launch(name: str, variant: Variant | WgVariant, smem: int, a, a_scale, w, s, bias, topk_w, sorted_ids, counts, *, out,
            n_out: int, k: int, a_div: int, mul_routed: bool, block_m: int, has_foreign: bool, up_off: int):
    """Launch kernel `name` of `variant` (every kernel takes the same arguments, mx_common.cuh MX_PARAMS:
    MX_ARGS, MX8_ARGS) on torch's current stream: one CTA row per expert with rows (+ one
    for the foreign rows), one CTA column per WN * MT tiles (the prefill kernel: grid x and y swapped, 4 *
    NWG tiles per CTA)."""
    import torch

    e, nt, kc = w.shape[0], w.shape[1], w.shape[2]
    nv = topk_w.numel()
    mod = _module(variant, _device_index(a.device))
    fn = mod.function(name)
    if smem > 48 * 1024 and not mod.smem_set.get(id(fn)):
        # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: opt in to more than 48 KB
        _driver().check(_driver().lib.cuFuncSetAttribute(fn, 8, smem), "cuFuncSetAttribute")
        mod.smem_set[id(fn)] = True
    grid_x = min(e, nv) + (1 if has_foreign else 0)
    if isinstance(variant, WgVariant):
        # the prefill kernel: x = tile groups, y = experts (an expert's CTAs run together, sharing its
        # activation rows through L2)
        threads = variant.threads()
        grid_x, grid_y = -(-nt // (4 * variant.NWG)), grid_x
    else:
        threads = 32 * variant.WN * variant.WK
        grid_y = -(-nt // (variant.WN * variant.MT))
    if grid_x == 0 or nv == 0:
        return out
    args = [
        _p(a), ctypes.c_longlong(a.stride(0)), ctypes.c_int(a_div), _p(a_scale),
        _p(w), _p(s),
        _p(bias), ctypes.c_longlong(bias.stride(0) if bias is not None else 0), ctypes.c_int(up_off),
        _p(out), ctypes.c_longlong(out.stride(0)), _p(topk_w if mul_routed else None),
        _p(sorted_ids), _p(counts), ctypes.c_int(e), ctypes.c_int(nv),
        ctypes.c_int(block_m), ctypes.c_int(1 if has_foreign else 0), ctypes.c_int(n_out),
        ctypes.c_int(k), ctypes.c_int(kc), ctypes.c_int(nt),
    ]
    params = (ctypes.c_void_p * len(args))(*[ctypes.cast(ctypes.pointer(x), ctypes.c_void_p) for x in args])
    stream = ctypes.c_void_p(torch.cuda.current_stream(a.device).cuda_stream)
    drv = _driver()
    drv.check(drv.lib.cuLaunchKernel(fn, grid_x, grid_y, 1, threads, 1, 1, smem, stream,
                                     params, None), "cuLaunchKernel")
    return out


def kernel_name_wg(gated: bool, big_scale: bool) -> str:
    return f"mx_wg_{'gated' if gated else 'down'}{'_big' if big_scale else ''}"


def moe_gemm_mx_wg(a, w_wg, s_wg, bias, topk_w, sorted_ids, counts, *, out, n_out: int, k: int, a_div: int,
                   gated: bool, mul_routed: bool, big_scale: bool, block_m: int, has_foreign: bool,
                   variant: WgVariant = WgVariant(), up_off: int = 0, a_scale=None):
    """One grouped GEMM through the prefill kernel (mx_wgmma.cu, warpgroup MMAs). w_wg / s_wg:
    [E, Nt, Kc, 32, 16] / [E, Nt, Kc, 32, 4] (quant.wg_mx_weights); K a multiple of 64; the rest as
    moe_gemm_mx."""
    import torch

    e, nt, kc = w_wg.shape[0], w_wg.shape[1], w_wg.shape[2]
    assert a.dtype == torch.bfloat16 and out.dtype == torch.bfloat16 and a.stride(1) == 1 and out.stride(1) == 1
    assert a.stride(0) % 8 == 0 and a.data_ptr() % 16 == 0, "activation rows must be 16-byte aligned"
    assert a_scale is None or (a_scale.dtype == torch.float32 and a_scale.is_contiguous())
    assert s_wg.shape[:3] == (e, nt, kc) and s_wg.shape[3:] == (32, 4) and s_wg.dtype == torch.uint8
    assert k % 64 == 0 and kc * 64 == k and e <= MAX_EXPERTS, "the prefill kernel takes K % 64 == 0"
    return _launch(kernel_name_wg(gated, big_scale), variant, wg_smem_bytes(variant), a, a_scale, w_wg, s_wg,
                   bias, topk_w, sorted_ids, counts, out=out, n_out=n_out, k=k, a_div=a_div,
                   mul_routed=mul_routed, block_m=block_m, has_foreign=has_foreign, up_off=up_off)


def _check_e4m3_operands(a, a_scale, out) -> None:
    """The W4A8 kernels' activations (e4m3 bytes, rows 16-byte aligned), row scales and output."""
    import torch

    assert a.dtype in (torch.float8_e4m3fn, torch.uint8) and a.element_size() == 1 and a.stride(1) == 1
    assert a.stride(0) % 16 == 0 and a.data_ptr() % 16 == 0, "activation rows must be 16-byte aligned"
    assert a_scale is not None and a_scale.dtype == torch.float32 and a_scale.is_contiguous()
    assert out.dtype == torch.bfloat16 and out.stride(1) == 1


def kernel_name_wg8(gated: bool, lut: bool = False) -> str:
    return f"mx_wg8{'l' if lut else ''}_{'gated' if gated else 'down'}"


def moe_gemm_mx_wg8(a, a_scale, w_wg8, s_wg8, bias, topk_w, sorted_ids, counts, *, out, n_out: int, k: int,
                    a_div: int, gated: bool, mul_routed: bool, block_m: int, has_foreign: bool,
                    variant: WgVariant = WgVariant(), up_off: int = 0, lut: bool = False):
    """One grouped GEMM through the e4m3 prefill kernels (mx_wgmma.cu: e4m3 wgmma, one MX group per MMA).
    a: e4m3 [rows, k] (row = slot // a_div), rows 16-byte aligned; a_scale: fp32 [rows]. lut=False (the
    mx_wg8 kernels: weights placed into e4m3, the sums rescaled per group): w_wg8 / s_wg8
    [E, Nt, Kc, 32, 16] / [E, Nt, Kc, 8, 4] (quant.wg8_mx_weights; every row's E8M0 bytes within
    quant.WG8_SCALE_SPREAD); lut=True (the mx_wg8l kernels: the group's scale in the operand through a
    table): [E, Nt, Kc, 32, 16] / [E, Nt, Kc + 1, 8, 4] (quant.wg8_lut_mx_weights). K a multiple of 64;
    the rest as moe_gemm_mx."""
    import torch

    e, nt, kc = w_wg8.shape[0], w_wg8.shape[1], w_wg8.shape[2]
    _check_e4m3_operands(a, a_scale, out)
    assert s_wg8.shape == (e, nt, kc + (1 if lut else 0), 8, 4) and s_wg8.dtype == torch.uint8
    assert k % 64 == 0 and kc * 64 == k and e <= MAX_EXPERTS, "the prefill kernel takes K % 64 == 0"
    return _launch(kernel_name_wg8(gated, lut), variant, wg_smem_bytes(variant, e4m3=True), a, a_scale, w_wg8, s_wg8,
                   bias, topk_w, sorted_ids, counts, out=out, n_out=n_out, k=k, a_div=a_div,
                   mul_routed=mul_routed, block_m=block_m, has_foreign=has_foreign, up_off=up_off)


def kernel_name8(groups: int, gated: bool, f16_mma: bool = False) -> str:
    return f"mx_w4a8_g{groups}_{'gated' if gated else 'down'}{'_f16' if f16_mma else ''}"


def moe_gemm_mx8(a, a_scale, w_mma8, s_mma8, bias, topk_w, sorted_ids, counts, *, out, n_out: int, k: int,
                 a_div: int, gated: bool, mul_routed: bool, block_m: int, has_foreign: bool, groups: int = 1,
                 variant: Variant = Variant(), up_off: int = 0, f16_mma: bool = False):
    """One grouped GEMM through the W4A8 kernel (mx_mma.cu: mx_w4a8_body) on e4m3 activations.
    a: e4m3 (float8_e4m3fn or uint8) [rows, k], rows 16-byte aligned (row = slot // a_div); a_scale: fp32
    [rows], applied before the bias; w_mma8 / s_mma8: [E, Nt, Kc, 32, 16] / [E, Nt, Kc, 8, 4]
    (quant.mma8_mx_weights); f16_mma: each e4m3 MMA step written as its two f16 MMAs (the kernels
    named *_f16: what ptxas makes of it on sm_90, without its add of the zero accumulator); the rest
    as moe_gemm_mx."""
    import torch

    if groups not in GROUPS:
        raise ValueError(f"groups must be one of {GROUPS}")
    e, nt, kc = w_mma8.shape[0], w_mma8.shape[1], w_mma8.shape[2]
    _check_e4m3_operands(a, a_scale, out)
    assert s_mma8.shape[:3] == (e, nt, kc) and s_mma8.shape[3:] == (8, 4) and s_mma8.dtype == torch.uint8
    assert kc * 64 >= k >= 64 and k % 32 == 0 and e <= MAX_EXPERTS
    return _launch(kernel_name8(groups, gated, f16_mma), variant, 0, a, a_scale, w_mma8, s_mma8, bias, topk_w,
                   sorted_ids, counts, out=out, n_out=n_out, k=k, a_div=a_div, mul_routed=mul_routed,
                   block_m=block_m, has_foreign=has_foreign, up_off=up_off)
