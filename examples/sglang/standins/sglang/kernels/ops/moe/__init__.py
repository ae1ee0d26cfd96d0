"""Stand-in for sglang.kernels.ops.moe: `moe_align_block_size` without sgl_kernel's CUDA op.

Upstream dispatches to sgl_kernel's CUDA align kernel (pinned to another torch build, so it cannot
be installed on the GPU machine). Here the same buffer contract is met by the Triton reference
SGLang ships with its tests (`sglang/test/kernels/moe_align.py`, four launches named
`moe_align_block_size_stage1..4`), after the pad slots are filled with `numel` as the CUDA kernel
does when asked to pad. The "+1 offset" convention (bucket 0 for expert -1, filtered by expert
parallelism) is met by calling the reference on the real experts only: with no filtered tokens
bucket 0 is empty, so offsets and expert ids are the same.
"""

from __future__ import annotations

import torch

from sglang.test.kernels.moe_align import moe_align_block_size_triton


def moe_align_block_size(
    topk_ids: torch.Tensor,
    num_buckets: int,
    block_size: int,
    sorted_token_ids: torch.Tensor,
    expert_ids: torch.Tensor,
    num_tokens_post_pad: torch.Tensor,
    cumsum_buffer: torch.Tensor,
    pad_sorted_token_ids: bool = True,
    ignore_invalid_expert: bool = False,
) -> None:
    if ignore_invalid_expert:
        raise NotImplementedError("stand-in align: ignore_invalid_expert is not supported")
    if pad_sorted_token_ids:
        sorted_token_ids.fill_(topk_ids.numel())
    # Expert ids must be int32 and contiguous for the reference's pointer arithmetic.
    ids = topk_ids.to(torch.int32).contiguous()
    moe_align_block_size_triton(ids, num_buckets - 1, block_size, sorted_token_ids, expert_ids,
                                num_tokens_post_pad)
