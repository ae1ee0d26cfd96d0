"""Stand-in for sglang.srt.utils: the platform predicates and helpers the fused-MoE path reads."""

from __future__ import annotations

import functools
import os

import torch


@functools.lru_cache(maxsize=1)
def is_cuda() -> bool:
    return torch.cuda.is_available() and torch.version.cuda is not None


def is_hip() -> bool:
    return False


def is_xpu() -> bool:
    return False


def is_musa() -> bool:
    return False


def is_npu() -> bool:
    return False


def is_cpu() -> bool:
    return False


def cpu_has_amx_support() -> bool:
    return False


@functools.lru_cache(maxsize=1)
def is_sm90_supported() -> bool:
    return is_cuda() and torch.cuda.get_device_capability()[0] >= 9


@functools.lru_cache(maxsize=1)
def is_sm100_supported() -> bool:
    return is_cuda() and torch.cuda.get_device_capability()[0] >= 10


def get_bool_env_var(name: str, default: str = "false") -> bool:
    return os.getenv(name, default).lower() in ("true", "1")


def get_device_name(device_id: int = 0) -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(device_id)
    return "cpu"
