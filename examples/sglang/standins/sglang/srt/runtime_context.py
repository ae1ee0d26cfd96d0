"""Stand-in for sglang.srt.runtime_context: one GPU, no server (the values of a default launch)."""

from types import SimpleNamespace

_EXEC = SimpleNamespace(
    moe=SimpleNamespace(enable_fused_moe_sum_all_reduce=False),
    deterministic=SimpleNamespace(enable_deterministic_inference=False),
)
_PARALLEL = SimpleNamespace(tp_group=None, tp_size=1, moe_ep_size=1, attn_dp_size=1)


def get_exec():
    return _EXEC


def get_parallel():
    return _PARALLEL
