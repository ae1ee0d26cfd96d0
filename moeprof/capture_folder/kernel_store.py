"""Storage of the kernel table in a capture folder: columnar Parquet (kernels.parquet) where pyarrow
is installed, CSV (kernels.csv, or kernels.csv.gz in shipped examples) otherwise and in older captures.

Parquet keeps a million-launch table small and quick to load: text columns (kernel names, NVTX
paths, formats, phases) are dictionary-encoded, so each distinct name is stored once per page, and
numbers keep their types. Readers accept every form; a folder holding two forms is refused (which
one is right cannot be told).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from moeprof.capture_folder import KERNEL_COLUMNS, KERNELS_FILE
from moeprof.errors import MoeprofError

PARQUET_FILE = "kernels.parquet"
MAX_ROWS = 200_000_000  # a Parquet footer claiming more rows than this is refused before reading


def _python_text_storage() -> None:
    """pandas 3 stores text in arrow where pyarrow is installed (a dependency here, for the Parquet
    table). moeprof keeps Python storage, set when this module is imported (by the loader and the
    collectors, before any table is built): the same dtypes with or without pyarrow, and row
    selections of million-launch tables share string objects instead of copying string bytes."""
    if getattr(pd.options.mode, "string_storage", None) == "auto":
        pd.options.mode.string_storage = "python"


_python_text_storage()


def _python_text_dtype():
    try:  # pandas >= 2.3: the "str" dtype with Python storage
        return pd.StringDtype("python", na_value=np.nan)
    except TypeError:
        return object


TEXT_DTYPE = _python_text_dtype()


def text_column(s: pd.Series) -> pd.Series:
    """A text column as analysis reads it: '' for missing, Python-stored strings, each distinct value
    one object shared by all its rows. Arrow-stored text (pandas' default where pyarrow is installed)
    copies string bytes on every row selection; a launch table is filtered many times."""
    if s.dtype == TEXT_DTYPE and not s.hasnans:
        return s
    if isinstance(s.dtype, pd.CategoricalDtype):  # Parquet dictionary columns: already factorized
        codes, uniq = s.cat.codes.to_numpy(), s.cat.categories
    else:
        codes, uniq = pd.factorize(s, use_na_sentinel=True)
    vals = np.append(np.asarray([str(u) for u in uniq], dtype=object), "")  # code -1 (missing) -> ''
    return pd.Series(pd.array(vals[codes], dtype=TEXT_DTYPE), index=s.index)


def parquet_available() -> bool:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def kernel_files(folder: Path) -> list[Path]:
    """The kernel-table files present in a capture folder, in any of its forms."""
    return [p for p in (folder / PARQUET_FILE, folder / KERNELS_FILE, folder / f"{KERNELS_FILE}.gz") if p.exists()]


def table_path(folder: Path) -> Path:
    """Where this moeprof writes the kernel table of `folder`: the form already there, else Parquet
    where pyarrow is installed, else CSV."""
    present = kernel_files(folder)
    if present:
        return present[0]
    return folder / (PARQUET_FILE if parquet_available() else KERNELS_FILE)


def _text_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if KERNEL_COLUMNS.get(c) == "str"]


def write(path: Path, df: pd.DataFrame) -> None:
    """Write the kernel table atomically (tmp file + rename), as Parquet or CSV by the file name."""
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        out = df.copy()
        for c in _text_columns(out):
            out[c] = out[c].astype(object).where(out[c].notna(), "").astype(str)
        table = pa.Table.from_pandas(out, preserve_index=False)
        pq.write_table(table, tmp, compression="zstd", use_dictionary=_text_columns(out) or False)
    else:
        df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def read(path: Path) -> pd.DataFrame:
    """A Parquet kernel table as written by `write` (text columns as pandas text, '' for missing).
    CSV forms are read by the caller's CSV reader."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MoeprofError(f"{path}: reading a Parquet kernel table needs pyarrow (`pip install pyarrow`)") from None
    import pyarrow as pa

    try:
        f = pq.ParquetFile(path)
        if f.metadata.num_rows > MAX_ROWS:
            raise MoeprofError(f"{path}: {f.metadata.num_rows} rows, more than moeprof reads ({MAX_ROWS})")
        meta = f.schema_arrow
        text = [c for c in meta.names if KERNEL_COLUMNS.get(c) == "str"]
        table = pq.read_table(path, read_dictionary=text)  # names arrive as dictionaries: decoded once each
    except (pa.ArrowException, OSError) as exc:
        raise MoeprofError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0][:160]})") from None
    # self_destruct frees each arrow column once converted; the pool then hands freed memory back
    df = table.to_pandas(self_destruct=True, split_blocks=True)
    del table
    for c in _text_columns(df):
        df[c] = text_column(df[c])
    release_arrow_memory()
    return df


def release_arrow_memory() -> None:
    """Hand pyarrow's freed buffers back to the system (its allocator keeps them otherwise)."""
    try:
        import pyarrow as pa
    except ImportError:
        return
    pa.default_memory_pool().release_unused()
