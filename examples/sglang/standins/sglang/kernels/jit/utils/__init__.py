"""Stand-in for sglang.kernels.jit.utils (the upstream one builds CUDA sources at run time)."""

import functools

import torch

cache_once = functools.lru_cache(maxsize=None)


@cache_once
def is_arch_support_pdl() -> bool:
    # Upstream: programmatic dependent launch on compute capability 9.0 and newer.
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9
