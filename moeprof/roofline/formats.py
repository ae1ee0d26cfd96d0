"""Weight formats: storage cost of a weight matrix and the tensor-core path its GEMM runs on.

A weight matrix is [N, K]: N output channels, K the reduction dim (GEMM y = x @ W^T).

| name        | weights                        | activations into the MMA      | MMA path            |
| ----------- | ------------------------------ | ----------------------------- | ------------------- |
| bf16        | bf16                           | bf16                          | bf16                |
| fp8         | e4m3, fp32 scale per out chan  | e4m3, fp32 scale per token    | fp8                 |
| fp8-block   | e4m3, fp32 scale per 128x128   | e4m3, fp32 scale per token per 128 channels | fp8   |
| mxfp4       | e2m1, e8m0 scale per 32 (4.25 bits) | bf16 (W4A16)             | bf16                |
| mxfp4-w4a8  | e2m1, e8m0 scale per 32        | e4m3, fp32 scale per token    | fp8                 |
| mxfp4-w4a4  | e2m1, e8m0 scale per 32        | e2m1, e8m0 scale per 32       | fp4 if native, else fp8 |

Rule for the MMA path: a tensor-core MMA runs at the rate of its *wider* operand. FP4 weights
with BF16 activations (mxfp4, W4A16) are dequantized to BF16 in the kernel and multiplied at the
BF16 rate on every GPU, Blackwell included: Blackwell's FP4 rate (kind::mxf4) needs FP4 on both
sides, and its mixed-width kind::f8f6f4 path still requires 8-bit-or-narrower operands. So:
mxfp4 -> bf16 everywhere; mxfp4-w4a8 -> fp8 (Hopper: e2m1 upcast to e4m3, which is exact;
Blackwell: kind::f8f6f4 at the FP8 rate); only mxfp4-w4a4 reaches the FP4 rate, and only where
the GPU has native FP4 MMA (Hopper falls back to FP8 after an exact e2m1->e4m3 upcast).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from moeprof.errors import MoeprofError
from moeprof.roofline.gpus import GpuSpec

BF16_BYTES = 2
FP32_BYTES = 4


@dataclass(frozen=True)
class WeightFormat:
    name: str
    description: str
    weight_bits: float          # bits per weight element, without scales
    weight_scale: str           # "none" | "channel" | "block128" | "mx32"
    act_bits: float             # bits per activation element fed to the MMA
    act_scale: str              # "none" | "token" | "token128" | "mx32"
    mma_dtype: str              # MMA input type on a GPU that supports it natively

    # --- weights -------------------------------------------------------------------------
    def weight_scale_bytes(self, n: int, k: int) -> float:
        """Bytes of scales for an [n, k] weight matrix."""
        if self.weight_scale == "none":
            return 0.0
        if self.weight_scale == "channel":      # one fp32 per output channel
            return FP32_BYTES * n
        if self.weight_scale == "block128":     # one fp32 per 128x128 tile
            return FP32_BYTES * math.ceil(n / 128) * math.ceil(k / 128)
        if self.weight_scale == "mx32":         # one e8m0 byte per 32 elements along k
            return 1.0 * n * math.ceil(k / 32)
        raise AssertionError(self.weight_scale)

    def weight_bytes(self, n: int, k: int) -> float:
        """Bytes of an [n, k] weight matrix including its scales (no bias)."""
        return n * k * self.weight_bits / 8 + self.weight_scale_bytes(n, k)

    def weight_bytes_per_param(self, k: int = 2880, n: int = 2880) -> float:
        """Average bytes per weight element including scales, for an [n, k] matrix."""
        return self.weight_bytes(n, k) / (n * k)

    # --- activations ---------------------------------------------------------------------
    @property
    def act_bytes_per_element(self) -> float:
        return self.act_bits / 8

    def act_scale_bytes(self, rows: float, k: int) -> float:
        """Bytes of scales for `rows` activation rows of width k."""
        if self.act_scale == "none":
            return 0.0
        if self.act_scale == "token":
            return FP32_BYTES * rows
        if self.act_scale == "token128":
            return FP32_BYTES * rows * math.ceil(k / 128)
        if self.act_scale == "mx32":
            return 1.0 * rows * math.ceil(k / 32)
        raise AssertionError(self.act_scale)

    def act_bytes(self, rows: float, k: int) -> float:
        """Bytes of `rows` activation rows of width k in the MMA input type, with scales."""
        return rows * k * self.act_bytes_per_element + self.act_scale_bytes(rows, k)

    # --- tensor-core path ----------------------------------------------------------------
    def mma_path(self, gpu: GpuSpec) -> str:
        """'bf16' | 'fp8' | 'fp4': which tensor-core rate this format's GEMMs run at on `gpu`."""
        if self.mma_dtype == "fp4" and not gpu.native_fp4_mma:
            return "fp8"
        return self.mma_dtype


_FORMATS: tuple[WeightFormat, ...] = (
    WeightFormat("bf16", "BF16 weights and activations", 16, "none", 16, "none", "bf16"),
    WeightFormat(
        "fp8", "FP8 e4m3 weights (fp32 scale per output channel), FP8 activations (per token)",
        8, "channel", 8, "token", "fp8",
    ),
    WeightFormat(
        "fp8-block", "FP8 e4m3 weights (fp32 scale per 128x128 block), FP8 activations (per token per 128)",
        8, "block128", 8, "token128", "fp8",
    ),
    WeightFormat(
        "mxfp4", "MXFP4 weights (e2m1, e8m0 scale per 32), BF16 activations: W4A16, BF16 MMA",
        4, "mx32", 16, "none", "bf16",
    ),
    WeightFormat(
        "mxfp4-w4a8", "MXFP4 weights, FP8 activations (per token): FP8 MMA",
        4, "mx32", 8, "token", "fp8",
    ),
    WeightFormat(
        "mxfp4-w4a4", "MXFP4 weights and activations: FP4 MMA where native, else FP8 (modelled only)",
        4, "mx32", 4, "mx32", "fp4",
    ),
)

_BY_NAME = {f.name: f for f in _FORMATS}

DEFAULT_FORMATS = ("bf16", "fp8", "mxfp4")


def format_names() -> list[str]:
    return [f.name for f in _FORMATS]


def all_formats() -> tuple[WeightFormat, ...]:
    return _FORMATS


def get_format(name: str | WeightFormat) -> WeightFormat:
    if isinstance(name, WeightFormat):
        return name
    key = name.strip().lower().replace("_", "-")
    fmt = _BY_NAME.get(key)
    if fmt is None:
        raise MoeprofError(f"unknown format {name!r}; valid: {', '.join(format_names())}")
    return fmt
