"""Reading one measured point (a row of the layer table) for the verdict: missing values stay missing.

Shared by analysis/verdict.py (the numbers the verdict rests on) and analysis/sentences.py (their words).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from moeprof.analysis.classify import GEMM_ROLES
from moeprof.analysis.metrics import MEASURED_PATHS

# Bits per operand element of each MMA path: a weight narrower than its path is unpacked in the kernel.
PATH_BITS = {"fp4": 4, "fp8": 8, "fp16": 16, "bf16": 16}


def present(x) -> bool:
    """A value that was measured or modelled (not None, NaN, NA or empty)."""
    return x is not None and not (isinstance(x, float) and math.isnan(x)) and x is not pd.NA and x != ""


def get(row: pd.Series | None, col: str, default=np.nan):
    """row[col], or `default` where the column or the value is missing."""
    if row is None or col not in row.index:
        return default
    v = row[col]
    return default if v is pd.NA or v is None else v


def peak_path(r: pd.Series) -> tuple[str, bool]:
    """(MMA path whose peak the roofline uses, whether it was measured)."""
    path, model = get(r, "tensor_path", ""), get(r, "mma_path_model", "")
    if path in MEASURED_PATHS:
        return str(path), True
    return (str(model) if present(model) else ""), False


def weight_bytes(r: pd.Series) -> float:
    """The cost model's expert weight bytes of the GEMMs that were measured at this point."""
    seen = str(get(r, "gemms_measured", "gemm1,gemm2")).split(",")
    return float(sum(get(r, f"{g}_weight_bytes") for g in GEMM_ROLES if g in seen)) if seen != [""] else np.nan
