"""Bad data never becomes a verdict: checks on a capture's tables and manifest after they are read.

Rows that cannot be sound are dropped, and every drop is recorded (table, rows, reason) so the
reports can say what was left out; where nothing sound is left the capture is refused in one line.

kernels.csv
  batch, repeat    a positive (batch) / non-negative (repeat) integer or empty; 4.6 or -4 is not a
                   point: the row is dropped (never rounded).
  duration_ns      finite and > 0. A launch without a sound duration makes its whole layer call
                   unsound (summing the rest would understate the call), so the call (collector,
                   format, batch, repeat) is dropped; without a repeat index only the launch is.
  duplicates       the same launch twice (collector, stream, start, kernel, point, repeat) would
                   double the times: the repeats are dropped.
  counters         negative or infinite counter values are set to n/a (the row's time is kept).
points.csv
  batch, repeat    as above; layer_time_ns finite and > 0, else the row is dropped.
  NVML clocks      sm_clock_*_mhz finite and > 0, power_median_w finite and >= 0, the *_fraction shares
                   within [0, 1]; else set to n/a (the row's time is kept).
manifest.json
  workload dims must be consistent (top_k <= experts). (Where gpu.spec and gpu.name name different
  GPUs, analysis.expected trusts the name and says so; a model that is no preset skips the
  whole-model numbers there too.)
Text from a capture (manifest strings, format and kernel names) loses its control characters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from moeprof.capture_folder import Manifest
from moeprof.errors import MoeprofError
from moeprof.untrusted import clean_text, has_control

# Columns that identify one launch: the same values twice are one launch recorded twice.
LAUNCH_KEY = ["collector", "rank", "format", "batch", "repeat", "nvtx_path", "kernel_name", "stream_id", "start_ns"]
# Columns that identify one layer call of a collector (on one rank, in multi-rank captures).
CALL_KEY = ["collector", "rank", "format", "batch", "repeat"]
NON_NEGATIVE_INT_COLUMNS = ["repeat", "grid_x", "grid_y", "grid_z", "block_x", "block_y", "block_z",
                            "registers_per_thread", "stream_id", "start_ns", "experts_touched"]
# Measured quantities that cannot be zero (a clock of 0 MHz is a failed read, not a measurement).
POSITIVE_FLOAT_COLUMNS = ["sm_clock_median_mhz", "sm_clock_min_mhz"]


@dataclass(frozen=True)
class Dropped:
    """Rows left out of the analysis, and why."""
    table: str      # kernels.csv | points.csv | manifest.json
    rows: int       # rows dropped (values set to n/a, for counters)
    reason: str

    def line(self) -> str:
        return f"{self.table}: {self.rows:,} {'row' if self.rows == 1 else 'rows'} dropped: {self.reason}"

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def numeric(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(float64 values, mask of non-empty text that is not a number). 'nan'/'inf' text parses."""
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        return raw.astype("float64"), pd.Series(False, index=raw.index)  # read as numbers: nothing to parse
    text = raw.astype("string").str.strip()
    values = pd.to_numeric(text, errors="coerce").astype("float64")
    unparsable = values.isna() & text.notna() & (text != "") & ~text.str.lower().isin(["nan", "na", "n/a", "null"])
    return values, unparsable.fillna(False).astype(bool)


def _integer_problems(values: pd.Series, text_bad: pd.Series, minimum: int) -> pd.Series:
    """Rows whose (non-empty) value is not an integer >= minimum."""
    v = values.to_numpy(dtype=float)
    present = ~np.isnan(v) | text_bad.to_numpy()
    ok = np.isfinite(v) & (np.floor(v) == v) & (v >= minimum)
    return pd.Series(present & ~ok, index=values.index)


def _describe(values: pd.Series, mask: pd.Series, limit: int = 3) -> str:
    text = values[mask].astype("string").fillna("").str.slice(0, 24)
    shown = pd.unique(text.where(text != "", "empty"))[:limit]
    return ", ".join(shown) + (", ..." if mask.sum() > len(shown) else "")


def _clean_strings(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Control characters out of text columns, checked once per distinct value (a launch table repeats
    few names)."""
    for col in columns:
        if col not in df:
            continue
        # A Python set finds the distinct values: it uses the hash each str caches, where pandas'
        # unique re-reads every (often long) name of every row.
        distinct = set(df[col].to_numpy(dtype=object).tolist())
        fix = {v: clean_text(v) for v in distinct if isinstance(v, str) and has_control(v)}
        if fix:
            df[col] = df[col].map(lambda v: fix.get(v, v) if isinstance(v, str) else v)
    return df


def clean_table(raw: pd.DataFrame, columns: dict[str, str], table: str,
                time_column: str, whole_calls: bool) -> tuple[pd.DataFrame, list[Dropped]]:
    """Typed, validated copy of a table read as text: (table, what was dropped).

    `columns` maps the schema's columns to str | float64 | Int64; `time_column` must be finite and
    positive where a row belongs to a point; with `whole_calls` a bad time drops the whole layer call.
    """
    df = raw
    dropped: list[Dropped] = []
    bad_rows = pd.Series(False, index=df.index)
    parsed: dict[str, pd.Series] = {}
    for col, kind in columns.items():
        if col not in df or kind == "str":
            continue
        values, text_bad = numeric(df[col])
        parsed[col] = values
        if col == "batch":
            bad = _integer_problems(values, text_bad, 1)
            if bad.any():
                dropped.append(Dropped(table, int(bad.sum()),
                                       f"batch is not a positive integer ({_describe(df[col], bad)})"))
                bad_rows |= bad
        elif kind == "Int64" and col in NON_NEGATIVE_INT_COLUMNS:
            bad = _integer_problems(values, text_bad, 0) & ~bad_rows
            if bad.any():
                dropped.append(Dropped(table, int(bad.sum()),
                                       f"{col} is not a non-negative integer ({_describe(df[col], bad)})"))
                bad_rows |= bad
        elif kind == "float64" and col != time_column:
            bad = (text_bad | np.isinf(values) | (values < 0)) & ~bad_rows
            what = "negative, infinite or not a number"
            if col in POSITIVE_FLOAT_COLUMNS:
                bad |= (values == 0) & ~bad_rows
                what = "not a positive number"
            elif col.endswith("_fraction"):
                bad |= (values > 1) & ~bad_rows
                what = "not a share within [0, 1]"
            if bad.any():
                dropped.append(Dropped(table, int(bad.sum()), f"{col} {what}: "
                                                               f"set to n/a ({_describe(df[col], bad)})"))
                parsed[col] = values.where(~bad)
    # Integer columns that arrive as integers (a Parquet table) keep their own values once checked:
    # their unsound rows are dropped below, and a float copy would only be turned back into integers
    # by coerce_columns (a million-row round trip per column, inexact above 2**53).
    kept = [c for c in parsed if c != time_column and columns[c] == "Int64"
            and pd.api.types.is_integer_dtype(df[c].dtype)]
    df = df.assign(**{c: v for c, v in parsed.items() if c not in kept})
    # Times: finite and positive where the row belongs to a point (kernels outside MoE ranges: dropped alone).
    t, t_bad_text = parsed[time_column], numeric(raw[time_column])[1]
    bad_t = (~np.isfinite(t) | (t <= 0) | t_bad_text) & ~bad_rows
    if bad_t.any():
        dropped.append(Dropped(table, int(bad_t.sum()),
                               f"{time_column} missing, zero, negative, infinite or not a number "
                               f"({_describe(raw[time_column], bad_t)})"))
        if whole_calls:
            call_key = [c for c in CALL_KEY if c in df]
            in_point = bad_t & df["batch"].notna() & df["repeat"].notna()  # a known layer call
            calls = df.loc[in_point, call_key].drop_duplicates()
            if len(calls):
                same_call = df[call_key].merge(calls.assign(_bad=True), on=call_key, how="left")["_bad"]
                rest = same_call.fillna(False).to_numpy(dtype=bool) & ~bad_t.to_numpy() & ~bad_rows.to_numpy()
                if rest.any():
                    dropped.append(Dropped(table, int(rest.sum()),
                                           f"the rest of the {len(calls):,} layer calls holding a launch without a "
                                           f"sound {time_column} (a partial call would understate its time)"))
                bad_t |= pd.Series(rest, index=df.index)
        bad_rows |= bad_t
    if bad_rows.any():
        df = df[~bad_rows.to_numpy()]
    # (the schema dtypes are set after this by capture_folder.coerce_columns: the values are integral now)
    # Columns outside the schema (e.g. a multi-rank capture's `rank`) that were read as text: numbers
    # where every value is one, as a plain CSV read would give them; text otherwise.
    extra = [c for c in df.columns if c not in columns]
    for col in extra:
        if df[col].dtype == object or pd.api.types.is_string_dtype(df[col].dtype):
            try:
                df[col] = pd.to_numeric(df[col])
            except (ValueError, TypeError):
                pass
    df = _clean_strings(df, [c for c, k in columns.items() if k == "str"]
                        + [c for c in extra if not pd.api.types.is_numeric_dtype(df[c])])
    if whole_calls:
        key = [c for c in LAUNCH_KEY if c in df]
        timed = df["start_ns"].notna() if "start_ns" in df else pd.Series(False, index=df.index)
        # candidates first on the cheap numeric part of the key (a launch's start and stream), then the full key
        quick = [c for c in ("start_ns", "stream_id", "rank") if c in df]
        cand = timed & df.duplicated(subset=quick, keep=False) if quick else timed
        dup = pd.Series(False, index=df.index)
        if cand.any():
            dup = df[cand].duplicated(subset=key, keep="first").reindex(df.index, fill_value=False)
        if (~timed).any():  # rows without a start time (ncu): identical in every column
            dup |= df[~timed].duplicated(keep="first").reindex(df.index, fill_value=False)
        if dup.any():
            dropped.append(Dropped(table, int(dup.sum()), "duplicated launches (same collector, point, repeat, stream, "
                                                          "start time and kernel): kept once"))
            df = df[~dup.to_numpy()]
    else:
        key = [c for c in ("format", "batch", "repeat") if c in df]
        dup = df.duplicated(keep="first")
        if dup.any():
            dropped.append(Dropped(table, int(dup.sum()), "duplicated rows (identical in every column): kept once"))
            df = df[~dup.to_numpy()]
        same_call = df.duplicated(subset=key, keep=False) & df["repeat"].notna()
        if same_call.any():
            raise MoeprofError(f"{table}: {int(same_call.sum())} rows share a (format, batch, repeat) with different "
                               f"values: the capture is inconsistent")
    return df.reset_index(drop=True), dropped


def check_left(table: str, before: int, after: int, dropped: list[Dropped]) -> None:
    """Refuse when every row of a table that had rows was dropped: nothing sound is left."""
    if before and not after:
        why = "; ".join(d.reason for d in dropped if d.table == table)
        raise MoeprofError(f"{table}: no sound rows left ({before:,} rows, all dropped: {why})")


# ------------------------------------------------------------------------------------------------
# manifest

def check_manifest(manifest: Manifest) -> tuple[Manifest, list[str]]:
    """(manifest, notes); MoeprofError for a layer shape that cannot exist. Control characters were
    removed as the manifest was read (capture_folder.read_manifest); a GPU spec that contradicts the
    GPU name is resolved where the spec is looked up (analysis.expected.resolve)."""
    shape = manifest.workload.shape
    if shape is not None and shape.top_k > shape.num_experts:
        raise MoeprofError(f"manifest workload.top_k {shape.top_k} exceeds num_experts {shape.num_experts}: "
                           f"the manifest is inconsistent")
    return manifest, []
