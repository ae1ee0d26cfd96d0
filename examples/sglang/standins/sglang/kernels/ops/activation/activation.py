"""Stand-in for sglang.kernels.ops.activation.activation (upstream: CUDA sources built at run time).

`silu_and_mul(x, out)` writes silu(x[:, :d]) * x[:, d:] for x of width 2d, as upstream, in one
Triton launch named `silu_and_mul_kernel`. Upstream's optional row filter (skip rows routed to
expert -1 under expert parallelism) computes every row here; with one GPU no row is filtered.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def silu_and_mul_kernel(x_ptr, out_ptr, d, stride_x, stride_out, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < d
    gate = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x + d + cols, mask=mask, other=0.0).to(tl.float32)
    y = gate / (1.0 + tl.exp(-gate)) * up
    tl.store(out_ptr + row * stride_out + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(x: torch.Tensor, out: torch.Tensor | None = None, **_row_filter) -> torch.Tensor:
    d = x.shape[-1] // 2
    x2 = x.reshape(-1, 2 * d)
    if out is None:
        out = torch.empty((x2.shape[0], d), device=x.device, dtype=x.dtype)
    rows = x2.shape[0]
    if rows:
        block = 1024
        silu_and_mul_kernel[(rows, triton.cdiv(d, block))](x2, out, d, x2.stride(0), out.stride(0), BLOCK=block)
    return out


def _not_on_this_path(*_a, **_k):
    raise NotImplementedError("stand-in: this activation is not used by the example")


gelu_and_mul = gelu_tanh_and_mul = silu_and_mul_with_activation_rounding = _not_on_this_path
