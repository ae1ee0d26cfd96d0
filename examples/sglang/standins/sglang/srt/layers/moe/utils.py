"""Stand-in for sglang.srt.layers.moe.utils: the two server settings the Triton path reads."""

import os

TRITON_PADDING_SIZE = 128  # upstream value, used only when SGLANG_MOE_PADDING=1
AITER_PADDING_SIZE = 128


def get_moe_padding_size(is_aiter_moe: bool) -> int:
    if is_aiter_moe:
        return AITER_PADDING_SIZE
    return TRITON_PADDING_SIZE if bool(int(os.getenv("SGLANG_MOE_PADDING", "0"))) else 0


def get_moe_runner_backend() -> str:
    return "triton"
