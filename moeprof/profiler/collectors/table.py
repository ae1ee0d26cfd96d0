"""The normalized kernel table (capture_folder.KERNEL_TABLE_COLUMNS) that every collector returns."""

from __future__ import annotations

import pandas as pd

from moeprof.capture_folder import KERNEL_TABLE_COLUMNS, coerce_columns, empty_table


def kernel_columns() -> list[str]:
    return list(KERNEL_TABLE_COLUMNS)


def empty_kernels() -> pd.DataFrame:
    return empty_table(KERNEL_TABLE_COLUMNS)


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """All schema columns, in schema order, with schema dtypes; missing ones empty (other columns dropped)."""
    return coerce_columns(df, KERNEL_TABLE_COLUMNS)


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


def short_kernel_names_from_ids(ids: pd.Series, names: dict[int, str]) -> pd.Series:
    """Short names of string ids (nsys StringIds), as a categorical: each distinct name once in memory."""
    codes, uniq = pd.factorize(ids)
    cats = [short_kernel_name(names.get(int(i), "")) for i in uniq]
    # distinct ids can share a short name: categories must be unique
    cat_index = pd.Index(cats)
    fixed = pd.factorize(cat_index)
    return pd.Series(pd.Categorical.from_codes(fixed[0][codes] if len(codes) else codes,
                                               categories=fixed[1]), index=ids.index)
