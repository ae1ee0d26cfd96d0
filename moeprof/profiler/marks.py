"""`moeprof.mark`: label a region of any program so `moeprof analyze` knows its weight format and batch.

    import moeprof
    with moeprof.mark(format="fp8", batch=64):
        out = moe_layer(x)

The region becomes the NVTX push/pop ranges moe > <format> > <batch> [> <phase>] in moeprof's own
NVTX domain, the same path moeprof's own layers use, so kernels launched inside it are attributed
to that (format, batch) point: one mark is one layer call (one sample of the verdict). Ranges go
through the `nvtx` package (`pip install 'moeprof[capture]'`); where it is missing, through
torch.cuda.nvtx (default domain). Nothing is imported until the first mark.
"""

from __future__ import annotations

import contextlib
import re
from typing import Callable, Iterator

from moeprof.capture_folder import NVTX_ROOT

NVTX_DOMAIN = "moeprof"
_FORMAT_RE = re.compile(r"[A-Za-z0-9_.+-]+")
_backend: tuple[Callable[[str], object], Callable[[], object]] | None = None


def _ranges() -> tuple[Callable[[str], object], Callable[[], object]]:
    """(push, pop) of the first NVTX binding found: the nvtx package, else torch.cuda.nvtx."""
    global _backend
    if _backend is None:
        try:
            import nvtx

            domain = nvtx.get_domain(NVTX_DOMAIN)

            def push(name: str) -> object:
                return domain.push_range(domain.get_event_attributes(message=name))

            _backend = (push, domain.pop_range)
        except ImportError:
            import torch

            _backend = (torch.cuda.nvtx.range_push, torch.cuda.nvtx.range_pop)
    return _backend


def check_label(format: str, batch: int, phase: str | None = None) -> list[str]:
    """The range names of a mark, after checking its values (ValueError on a bad one)."""
    if not isinstance(format, str) or not _FORMAT_RE.fullmatch(format):
        raise ValueError(f"moeprof.mark: format must be a word such as 'fp8', got {format!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"moeprof.mark: batch must be a positive integer, got {batch!r}")
    names = [NVTX_ROOT, format.lower(), str(batch)]
    if phase is not None:
        if not isinstance(phase, str) or not _FORMAT_RE.fullmatch(phase):
            raise ValueError(f"moeprof.mark: phase must be a word such as 'gemm1', got {phase!r}")
        names.append(phase)
    return names


@contextlib.contextmanager
def mark(format: str, batch: int, phase: str | None = None) -> Iterator[None]:
    """Attribute the GPU kernels launched inside the block to weight format `format` at `batch` tokens."""
    names = check_label(format, batch, phase)
    push, pop = _ranges()
    for name in names:
        push(name)
    try:
        yield
    finally:
        for _ in names:
            pop()
