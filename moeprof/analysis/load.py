"""Load a capture folder (manifest.json + kernels.csv + points.csv) into validated tables.

Every problem a user can fix is one line of MoeprofError: missing folder or file, truncated or
unparsable file, foreign or unknown manifest version, missing columns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from moeprof.analysis import validate
from moeprof.capture_folder import (
    KERNEL_TABLE_COLUMNS,
    KERNELS_FILE,
    MANIFEST_FILE,
    POINT_COLUMNS,
    POINTS_FILE,
    Manifest,
    coerce_columns,
    read_manifest,
)
from moeprof.errors import MoeprofError
from moeprof.untrusted import check_table_size

EXAMPLE_ENV = "MOEPROF_EXAMPLE_CAPTURE"
# Columns without which the analysis cannot run (the rest of the schema may be absent: filled empty).
REQUIRED_KERNEL_COLUMNS = ["collector", "format", "batch", "kernel_name", "duration_ns"]
REQUIRED_POINT_COLUMNS = ["format", "batch", "repeat", "layer_time_ns"]


@dataclass
class Capture:
    path: Path
    manifest: Manifest
    kernels: pd.DataFrame
    points: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    dropped: list[validate.Dropped] = field(default_factory=list)  # rows left out by validation, and why

    @property
    def gpu_name(self) -> str:
        return self.manifest.gpu.label

    @property
    def workload(self) -> dict[str, Any]:
        """The workload as the manifest's JSON (current version) for reports; `manifest.workload` is typed."""
        return self.manifest.workload.to_json()

    @property
    def label(self) -> str:
        return self.manifest.label

    @property
    def sustain_s(self) -> float:
        """Seconds of back-to-back calls before each point's CUDA-event timing (--sustain-s; 0 where the
        capture has none or its manifest holds no sound number: a folder is data)."""
        v = self.manifest.collector("events").option_dict.get("sustain_s")
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < float("inf") else 0.0


def example_capture_path() -> Path:
    """The shipped example capture (override with $MOEPROF_EXAMPLE_CAPTURE)."""
    env = os.environ.get(EXAMPLE_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "data" / "example_capture"


def _table_file(folder: Path, name: str) -> Path:
    """`name`, or its gzip-compressed form `name.gz` (shipped examples are compressed)."""
    plain, packed = folder / name, folder / f"{name}.gz"
    if plain.exists() and packed.exists():
        raise MoeprofError(f"{folder}: holds both {name} and {name}.gz; which one is the capture's is ambiguous "
                           f"(remove the other)")
    return packed if packed.exists() else plain


def _read_csv(file: Path, columns: dict[str, str], required: list[str]) -> pd.DataFrame:
    if not file.is_file():
        raise MoeprofError(f"{file.parent}: capture is missing {file.name}")
    if file.stat().st_size == 0:
        raise MoeprofError(f"{file}: empty file (truncated capture?)")
    check_table_size(file)
    try:
        if file.suffix != ".gz":  # gzip carries its own length and CRC checks
            with open(file, "rb") as fh:  # a writer that died mid-row leaves no final newline
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) not in (b"\n", b"\r"):
                    raise MoeprofError(f"{file}: truncated (last line is incomplete)")
        header = pd.read_csv(file, nrows=0).columns
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise MoeprofError(f"{file}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise MoeprofError(f"{file}: missing column(s) {', '.join(missing)}")
    dtypes: dict[str, Any] = {}
    for col in header:
        kind = columns.get(col)
        if kind == "str":
            dtypes[col] = str
        elif kind == "float64":
            dtypes[col] = "float64"
        # Int64 columns are parsed as floats (fast C path), converted below.
    try:
        try:
            df = pd.read_csv(file, dtype=dtypes, keep_default_na=False, na_values=[""], low_memory=False)
        except ValueError:  # text in a number column ('NaN', 'inf', 'n/a', ...): validate.clean_table sorts it out
            df = pd.read_csv(file, dtype=str, keep_default_na=False, na_values=[""], low_memory=False)
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise MoeprofError(f"{file}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    return df  # as read: validate.clean_table checks it before the one coercion


def _read_kernel_table(folder: Path) -> pd.DataFrame:
    """kernels.parquet (columnar, written where pyarrow is installed) or kernels.csv[.gz]; never two."""
    from moeprof.capture_folder import kernel_store

    present = kernel_store.kernel_files(folder)
    parquet = folder / kernel_store.PARQUET_FILE
    if parquet in present:
        if len(present) > 1:
            raise MoeprofError(f"{folder}: holds both {parquet.name} and {present[1].name}; "
                               f"remove the one that is not this capture's kernel table")
        df = kernel_store.read(parquet)
        missing = [c for c in REQUIRED_KERNEL_COLUMNS if c not in df.columns]
        if missing:
            raise MoeprofError(f"{parquet}: missing column(s) {', '.join(missing)}")
        return df
    return _read_csv(_table_file(folder, KERNELS_FILE), KERNEL_TABLE_COLUMNS, REQUIRED_KERNEL_COLUMNS)


def load_capture(path: str | os.PathLike[str] | None = None) -> Capture:
    """Read and validate a capture folder; None -> the shipped example capture."""
    folder = Path(path) if path is not None else example_capture_path()
    if not folder.exists():
        if path is None:
            raise MoeprofError(
                f"no example capture at {folder} (pass a capture folder, or set ${EXAMPLE_ENV})"
            )
        raise MoeprofError(f"{folder}: no such capture folder")
    if not folder.is_dir():
        raise MoeprofError(f"{folder}: not a folder (a capture is a folder holding {MANIFEST_FILE})")
    manifest, warnings = validate.check_manifest(read_manifest(folder))
    kernels_raw = _read_kernel_table(folder)
    points_raw = _read_csv(_table_file(folder, POINTS_FILE), POINT_COLUMNS, REQUIRED_POINT_COLUMNS)
    kernels, dropped = validate.clean_table(kernels_raw, KERNEL_TABLE_COLUMNS, KERNELS_FILE, "duration_ns", True)
    points, dropped_points = validate.clean_table(points_raw, POINT_COLUMNS, POINTS_FILE, "layer_time_ns", False)
    dropped += dropped_points
    if kernels.empty and points.empty and (len(kernels_raw) or len(points_raw)):
        raise MoeprofError(f"{folder}: no sound rows left in {KERNELS_FILE} or {POINTS_FILE} ("
                           + "; ".join(d.line() for d in dropped) + ")")
    del kernels_raw
    kernels = coerce_columns(kernels, KERNEL_TABLE_COLUMNS, keep_other=True)
    points = coerce_columns(points, POINT_COLUMNS, keep_other=True)
    from moeprof.capture_folder import kernel_store
    kernel_store.release_arrow_memory()  # arrow buffers a Parquet table's first frame pointed into
    if manifest.status not in (None, "complete"):
        warnings.append(f"capture status is {manifest.status!r}: some points or collectors may be missing")
    for name, info in manifest.collectors.items():
        if info.status == "failed":
            warnings.append(f"collector {name} failed: {info.reason or 'no reason given'}")
    if points.empty:
        warnings.append("points.csv has no rows: layer times come from kernel sums only")
    return Capture(path=folder, manifest=manifest, kernels=kernels, points=points, warnings=warnings,
                   dropped=dropped)
