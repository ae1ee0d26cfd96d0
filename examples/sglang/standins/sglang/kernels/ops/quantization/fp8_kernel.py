"""Stand-in for sglang.kernels.ops.quantization.fp8_kernel (upstream: sgl_kernel CUDA ops).

`scaled_fp8_quant(x, scale=None)` as upstream for per-tensor W8A8: with no scale, a dynamic
per-tensor scale = max|x| / 448 (e4m3 max), then x / scale rounded to float8_e4m3fn with
saturation; with a scale, static quantization. Two Triton launches (absmax, quantize) named
`scaled_fp8_quant_absmax_kernel` and `scaled_fp8_quant_kernel`; the scale buffer is zeroed by torch.
Per-token and block-wise quantization are not on this path and raise.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

FP8_E4M3_MAX = 448.0


@triton.jit
def scaled_fp8_quant_absmax_kernel(x_ptr, scale_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
    tl.atomic_max(scale_ptr, tl.max(tl.abs(x), axis=0) / 448.0)


@triton.jit
def scaled_fp8_quant_kernel(x_ptr, out_ptr, scale_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    scale = tl.maximum(tl.load(scale_ptr), 1e-12)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = tl.clamp(x / scale, -448.0, 448.0)
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


def scaled_fp8_quant(input: torch.Tensor, scale: torch.Tensor | None = None, num_token_padding=None,
                     use_per_token_if_dynamic: bool = False):
    assert input.ndim == 2, f"Expected 2D input tensor, got {input.ndim}D"
    if num_token_padding or use_per_token_if_dynamic:
        raise NotImplementedError("stand-in scaled_fp8_quant: per-tensor scales only")
    x = input.contiguous()
    out = torch.empty(x.shape, device=x.device, dtype=torch.float8_e4m3fn)
    n = x.numel()
    block = 4096
    grid = (triton.cdiv(n, block),)
    if scale is None:
        scale = torch.zeros(1, device=x.device, dtype=torch.float32)
        if n:
            scaled_fp8_quant_absmax_kernel[grid](x, scale, n, BLOCK=block)
    if n:
        scaled_fp8_quant_kernel[grid](x, out, scale, n, BLOCK=block)
    return out, scale


def _not_on_this_path(*_a, **_k):
    raise NotImplementedError("stand-in: block-wise / per-token fp8 quantization is not used by the example")


per_token_group_quant_fp8 = sglang_per_token_group_quant_fp8 = _not_on_this_path
