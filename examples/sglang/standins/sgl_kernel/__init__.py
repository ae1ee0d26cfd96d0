"""Stand-in for sgl_kernel (a 373 MB CUDA wheel pinned to another torch build).

Only `moe_sum_reduce` is imported by the Triton fused-MoE path on CUDA; it is served by SGLang's
own Triton implementation, `moe_sum_reduce_triton` (same arguments: x [tokens, top_k, hidden],
out [tokens, hidden], routed scaling factor), which upstream uses on ROCm and for small batches.
"""


def moe_sum_reduce(x, out, routed_scaling_factor):
    from sglang.kernels.ops.moe.fused_moe_triton_kernels import moe_sum_reduce_triton

    moe_sum_reduce_triton(x, out, routed_scaling_factor)
