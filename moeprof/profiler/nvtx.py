"""NVTX ranges for layer calls: moe > <format> > <batch> > <phase> (path moe/<format>/<batch>/<phase>).

Uses torch.cuda.nvtx (the GPU machine has no `nvtx` package). Everything is a no-op when disabled,
and torch is imported only when enabled.
"""

from __future__ import annotations

import contextlib

from moeprof.capture_folder import COMM_PHASES, NVTX_ROOT, PHASES

_enabled = False


@contextlib.contextmanager
def ranges(enabled: bool):
    """Enable (or disable) nvtx_range() inside the block."""
    global _enabled
    prev = _enabled
    _enabled = bool(enabled)
    try:
        yield
    finally:
        _enabled = prev


@contextlib.contextmanager
def nvtx_range(name: str, enabled: bool | None = None):
    on = _enabled if enabled is None else enabled
    if not on:
        yield
        return
    import torch

    torch.cuda.nvtx.range_push(str(name))
    try:
        yield
    finally:
        torch.cuda.nvtx.range_pop()


@contextlib.contextmanager
def _null_phase(name):
    yield


@contextlib.contextmanager
def layer_ranges(enabled: bool, fmt: str, batch: int):
    """Open moe/<fmt>/<batch> and yield a `phase(name)` context manager for the phase ranges."""
    if not enabled:
        yield _null_phase
        return

    def phase(name):
        if name not in PHASES and name not in COMM_PHASES:
            raise ValueError(f"unknown phase {name!r}; expected one of {PHASES + COMM_PHASES}")
        return nvtx_range(name, True)

    with nvtx_range(NVTX_ROOT, True), nvtx_range(fmt, True), nvtx_range(str(int(batch)), True):
        yield phase
