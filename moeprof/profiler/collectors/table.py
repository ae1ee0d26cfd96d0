"""The normalized kernel table (schema.KERNEL_COLUMNS + COUNTER_METRICS) that every collector returns."""

from __future__ import annotations

import numpy as np
import pandas as pd

from moeprof.capture_folder import COUNTER_METRICS, KERNEL_COLUMNS


def kernel_columns() -> list[str]:
    return list(KERNEL_COLUMNS) + list(COUNTER_METRICS)


def empty_kernels() -> pd.DataFrame:
    return normalize(pd.DataFrame())


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """All schema columns, in schema order, with schema dtypes; missing ones empty."""
    n = len(df)
    out = {}
    for col, dtype in KERNEL_COLUMNS.items():
        if col in df:
            s = df[col]
            if dtype == "str":
                s = s.fillna("").astype(str)
            elif dtype == "Int64":
                s = pd.to_numeric(s, errors="coerce").round().astype("Int64")
            else:
                s = pd.to_numeric(s, errors="coerce").astype(dtype)
        elif dtype == "str":
            s = pd.Series([""] * n, index=df.index, dtype=object)
        elif dtype == "Int64":
            s = pd.Series(pd.array([pd.NA] * n, dtype="Int64"), index=df.index)
        else:
            s = pd.Series(np.nan, index=df.index, dtype=dtype)
        out[col] = s
    for col in COUNTER_METRICS:
        out[col] = pd.to_numeric(df[col], errors="coerce").astype("float64") if col in df else pd.Series(np.nan, index=df.index)
    return pd.DataFrame(out, index=df.index).reset_index(drop=True)


def short_kernel_name(name: str) -> str:
    """Demangled name without the return type and the argument list (templates kept).

    'void at::native::foo<float, (int)4>(int, T1)' -> 'at::native::foo<float, (int)4>'
    """
    s = (name or "").strip()
    if s.endswith(")"):
        depth = 0
        for i in range(len(s) - 1, -1, -1):
            c = s[i]
            if c == ")":
                depth += 1
            elif c == "(":
                depth -= 1
                if depth == 0:
                    # an argument list follows the name directly (not '(anonymous namespace)' inside templates)
                    if i > 0:
                        s = s[:i]
                    break
    if s.startswith("void "):
        s = s[5:]
    return s.strip()


def short_kernel_names(names: pd.Series) -> pd.Series:
    """Vectorized over unique names (launch tables repeat few distinct names)."""
    names = names.fillna("").astype(str)
    uniq = pd.unique(names)
    return names.map(dict(zip(uniq, (short_kernel_name(u) for u in uniq))))
