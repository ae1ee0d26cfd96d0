"""Load a capture folder (manifest.json + kernels.csv + points.csv) into validated tables.

Every problem a user can fix is one line of MoeprofError: missing folder or file, truncated or
unparsable file, foreign or unknown manifest version, missing columns.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moeprof.errors import MoeprofError
from moeprof.capture_folder import (
    COUNTER_METRICS,
    KERNEL_COLUMNS,
    KERNELS_FILE,
    MANIFEST_FILE,
    MANIFEST_VERSION,
    POINT_COLUMNS,
    POINTS_FILE,
)

EXAMPLE_ENV = "MOEPROF_EXAMPLE_CAPTURE"
MANIFEST_SCHEMA = "moeprof.capture"
# Columns without which the analysis cannot run (the rest of the schema may be absent: filled empty).
REQUIRED_KERNEL_COLUMNS = ["collector", "format", "batch", "kernel_name", "duration_ns"]
REQUIRED_POINT_COLUMNS = ["format", "batch", "repeat", "layer_time_ns"]
# kernels.csv as read: schema columns plus every counter (float64; NaN where a collector did not read it).
KERNEL_TABLE_COLUMNS = {**KERNEL_COLUMNS, **dict.fromkeys(COUNTER_METRICS, "float64")}


@dataclass
class Capture:
    path: Path
    manifest: dict[str, Any]
    kernels: pd.DataFrame
    points: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    @property
    def gpu_name(self) -> str:
        gpu = self.manifest.get("gpu") or {}
        return str(gpu.get("name") or gpu.get("spec") or "unknown GPU")

    @property
    def workload(self) -> dict[str, Any]:
        return dict(self.manifest.get("workload") or {})

    @property
    def label(self) -> str:
        w = self.workload
        return f"{w.get('model') or w.get('mode') or 'workload'} on {self.gpu_name}"


def example_capture_path() -> Path:
    """The shipped example capture (override with $MOEPROF_EXAMPLE_CAPTURE)."""
    env = os.environ.get(EXAMPLE_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "data" / "example_capture"


def _read_manifest(folder: Path) -> dict[str, Any]:
    file = folder / MANIFEST_FILE
    if not file.is_file():
        raise MoeprofError(f"{folder}: not a capture folder (no {MANIFEST_FILE})")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MoeprofError(f"{file}: not valid JSON, truncated? ({exc.msg}, line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MoeprofError(f"{file}: cannot read ({exc})") from None
    if not isinstance(manifest, dict):
        raise MoeprofError(f"{file}: expected a JSON object")
    if manifest.get("schema", MANIFEST_SCHEMA) != MANIFEST_SCHEMA:
        raise MoeprofError(f"{file}: not a moeprof capture manifest (schema {manifest.get('schema')!r})")
    version = manifest.get("manifest_version")
    if version != MANIFEST_VERSION:
        raise MoeprofError(
            f"{file}: manifest version {version!r} is not supported (this moeprof reads version {MANIFEST_VERSION})"
        )
    for key in ("gpu", "workload", "collectors"):
        if manifest.get(key) is not None and not isinstance(manifest[key], dict):
            raise MoeprofError(f"{file}: {key!r} must be a JSON object, got {type(manifest[key]).__name__}")
    for name, info in (manifest.get("collectors") or {}).items():
        if info is not None and not isinstance(info, dict):
            raise MoeprofError(f"{file}: collector {name!r} must be a JSON object, got {type(info).__name__}")
    for key in ("tp", "ep"):
        v = (manifest.get("workload") or {}).get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise MoeprofError(f"{file}: workload {key} must be a positive integer, got {v!r}")
    return manifest


def _table_file(folder: Path, name: str) -> Path:
    """`name`, or its gzip-compressed form `name.gz` (shipped examples are compressed)."""
    plain, packed = folder / name, folder / f"{name}.gz"
    return packed if not plain.exists() and packed.exists() else plain


def _read_csv(file: Path, columns: dict[str, str], required: list[str]) -> pd.DataFrame:
    if not file.is_file():
        raise MoeprofError(f"{file.parent}: capture is missing {file.name}")
    if file.stat().st_size == 0:
        raise MoeprofError(f"{file}: empty file (truncated capture?)")
    if file.suffix != ".gz":  # gzip carries its own length and CRC checks
        with open(file, "rb") as fh:  # a writer that died mid-row leaves no final newline
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) not in (b"\n", b"\r"):
                raise MoeprofError(f"{file}: truncated (last line is incomplete)")
    try:
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
        df = pd.read_csv(file, dtype=dtypes, keep_default_na=False, na_values=[""], low_memory=False)
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise MoeprofError(f"{file}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    for col, kind in columns.items():
        if col not in df.columns:
            df[col] = "" if kind == "str" else (pd.array([pd.NA] * len(df), dtype="Int64") if kind == "Int64" else np.nan)
        elif kind == "Int64":
            df[col] = pd.to_numeric(df[col], errors="coerce").round().astype("Int64")
        elif kind == "str":
            df[col] = df[col].fillna("").astype(str)
    return df


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
    manifest = _read_manifest(folder)
    kernels = _read_csv(_table_file(folder, KERNELS_FILE), KERNEL_TABLE_COLUMNS, REQUIRED_KERNEL_COLUMNS)
    points = _read_csv(_table_file(folder, POINTS_FILE), POINT_COLUMNS, REQUIRED_POINT_COLUMNS)
    warnings: list[str] = []
    if manifest.get("status") not in (None, "complete"):
        warnings.append(f"capture status is {manifest.get('status')!r}: some points or collectors may be missing")
    for name, info in (manifest.get("collectors") or {}).items():
        if isinstance(info, dict) and info.get("status") == "failed":
            warnings.append(f"collector {name} failed: {info.get('reason') or 'no reason given'}")
    if points.empty:
        warnings.append("points.csv has no rows: layer times come from kernel sums only")
    return Capture(path=folder, manifest=manifest, kernels=kernels, points=points, warnings=warnings)
