"""Nsight Systems collector: run a command under `nsys profile`, export sqlite, read the kernel table.

Each kernel is attached to the NVTX push/pop stack open on the thread that launched it:
kernel.correlationId -> CUPTI_ACTIVITY_KIND_RUNTIME (globalTid, start) -> NVTX_EVENTS
(eventType 59, same globalTid, start <= runtime.start < end).
"""

from __future__ import annotations

import io
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from moeprof.errors import MoeprofError
from moeprof.profiler.collectors import ranges, table

# --cuda-graph-trace=node: kernels replayed from a CUDA graph appear one by one (each carries the
# correlationId of the cudaGraphLaunch that replayed it), not as one graph-wide range.
PROFILE_OPTIONS = ["--trace=cuda,nvtx", "--cuda-graph-trace=node", "--sample=none", "--cpuctxsw=none",
                   "--backtrace=none"]
NVTX_PUSH_POP = 59
KNOWN_SCHEMA_MAJOR = 3  # EXPORT_SCHEMA_VERSION of nsys 2024-2025 exports
_TID_TO_PID = 2**24  # globalPid = globalTid with the low 24 bits cleared

REQUIRED: dict[str, list[str]] = {
    "META_DATA_EXPORT": ["name", "value"],
    "StringIds": ["id", "value"],
    "CUPTI_ACTIVITY_KIND_KERNEL": ["start", "end", "correlationId", "globalPid", "demangledName", "streamId",
                                   "gridX", "gridY", "gridZ", "blockX", "blockY", "blockZ", "registersPerThread"],
    "CUPTI_ACTIVITY_KIND_RUNTIME": ["start", "correlationId", "globalTid"],
}
OPTIONAL: dict[str, list[str]] = {  # absent when the program pushed no NVTX range
    "NVTX_EVENTS": ["start", "end", "eventType", "text", "textId", "globalTid"],
}


def profile_command(nsys: str, out_base: Path, argv: list[str], options: list[str] | None = None) -> list[str]:
    """`nsys profile` writing <out_base>.nsys-rep."""
    return [nsys, "profile", *(options or PROFILE_OPTIONS), "-o", str(out_base), "--force-overwrite=true", *argv]


def export_sqlite(nsys: str, rep: Path, env: dict[str, str] | None = None, timeout: float = 1800) -> Path:
    out = rep.with_suffix(".sqlite")
    cmd = [nsys, "export", "--type", "sqlite", "-o", str(out), "--force-overwrite", "true", str(rep)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if p.returncode != 0 or not out.exists():
        last = (p.stderr or p.stdout).strip().splitlines()[-1:] or [f"exit {p.returncode}"]
        raise MoeprofError(f"nsys export failed for {rep.name}: {last[0][:200]}")
    return out


def _columns(con: sqlite3.Connection, tab: str) -> list[str]:
    return [r[1] for r in con.execute(f"PRAGMA table_info({tab})")]


def schema_version(con: sqlite3.Connection) -> str:
    row = con.execute("SELECT value FROM META_DATA_EXPORT WHERE name = 'EXPORT_SCHEMA_VERSION'").fetchone()
    return row[0] if row else "unknown"


def check_schema(con: sqlite3.Connection, path: Path) -> tuple[str, set[str]]:
    """Export schema version and the optional tables present; one-line error on anything missing."""
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "META_DATA_EXPORT" not in tables:
        raise MoeprofError(f"{path.name}: not an nsys sqlite export (no META_DATA_EXPORT table)")
    version = schema_version(con)
    where = f"{path.name} (nsys export schema {version}, moeprof reads {KNOWN_SCHEMA_MAJOR}.x)"
    if "CUPTI_ACTIVITY_KIND_KERNEL" not in tables:
        raise MoeprofError(f"{where}: no CUPTI_ACTIVITY_KIND_KERNEL table: no CUDA kernel was traced")
    for tab, cols in REQUIRED.items():
        if tab not in tables:
            raise MoeprofError(f"{where}: missing table {tab}")
        missing = [c for c in cols if c not in _columns(con, tab)]
        if missing:
            raise MoeprofError(f"{where}: table {tab} lacks columns {', '.join(missing)}")
    present = set()
    for tab, cols in OPTIONAL.items():
        if tab in tables:
            missing = [c for c in cols if c not in _columns(con, tab)]
            if missing:
                raise MoeprofError(f"{where}: table {tab} lacks columns {', '.join(missing)}")
            present.add(tab)
    return version, present


_CHUNK_ROWS = 250_000  # rows per query: bounds the text a query builds (SQLite caps a value at 1 GB; memory)


def _query_frame(con: sqlite3.Connection, select: list[str], names: list[str], rest: str,
                 params: tuple = ()) -> pd.DataFrame:
    """Integer columns of a set-based query, transferred as one CSV text built inside SQLite
    (group_concat) and parsed by pandas' C reader: a per-row Python fetch of a million launches
    costs more than the query itself. NULLs arrive as -1."""
    line = " || ',' || ".join(f"IFNULL({e}, -1)" for e in select)
    text = con.execute(f"SELECT group_concat({line}, char(10)) {rest}", params).fetchone()[0]
    if not text:
        return pd.DataFrame({n: pd.Series(dtype="int64") for n in names})
    return pd.read_csv(io.StringIO(text), header=None, names=names, dtype="int64", engine="c")


def read_kernels(path: str | Path) -> pd.DataFrame:
    """The normalized kernel table (collector 'nsys') of one nsys sqlite export."""
    path = Path(path)
    if not path.exists():
        raise MoeprofError(f"nsys export not found: {path}")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        _, present = check_schema(con, path)
        k, names = _read_launches(con)
        nv = _read_ranges(con) if "NVTX_EVENTS" in present else pd.DataFrame(
            {"tid": pd.Series(dtype="int64"), "start": pd.Series(dtype="int64"), "end": pd.Series(dtype="int64"),
             "name": pd.Series(dtype=object)})
    finally:
        con.close()
    return kernels_from_launches(k, names, nv)


def _read_launches(con: sqlite3.Connection) -> tuple[pd.DataFrame, dict[int, str]]:
    """Kernels with the runtime call that launched them (a cudaGraphLaunch for kernels replayed from
    a CUDA graph: they carry its correlationId). Columns: start, end, name_id, stream, grid/block
    dims, registers, and tid, t of the launch call (-1 where none is known).

    Each table is read whole by one query; the match on (process, correlationId) is a hash join in
    pandas: on a 1M-launch export it took 4.3 s of CPU against 5.5 s for the same LEFT JOIN inside
    SQLite, which has to index the runtime table first (docs/performance.md)."""
    lo, hi = con.execute("SELECT MIN(rowid), MAX(rowid) FROM CUPTI_ACTIVITY_KIND_KERNEL").fetchone()
    cols = {"start": "start", "end": '"end"', "name_id": "demangledName", "stream_id": "streamId",
            "grid_x": "gridX", "grid_y": "gridY", "grid_z": "gridZ", "block_x": "blockX", "block_y": "blockY",
            "block_z": "blockZ", "registers_per_thread": "registersPerThread", "corr": "correlationId",
            "pid": "globalPid"}
    parts = [_query_frame(con, list(cols.values()), list(cols),
                          "FROM CUPTI_ACTIVITY_KIND_KERNEL WHERE rowid >= ? AND rowid < ?", (a, a + _CHUNK_ROWS))
             for a in range(int(lo or 0), int(hi or -1) + 1, _CHUNK_ROWS)]
    k = pd.concat(parts, ignore_index=True) if len(parts) > 1 else (
        parts[0] if parts else pd.DataFrame({c: pd.Series(dtype="int64") for c in cols}))
    lo, hi = con.execute("SELECT MIN(rowid), MAX(rowid) FROM CUPTI_ACTIVITY_KIND_RUNTIME").fetchone()
    parts = [_query_frame(con, ["correlationId", "globalTid", "start"], ["corr", "tid", "t"],
                          "FROM CUPTI_ACTIVITY_KIND_RUNTIME WHERE rowid >= ? AND rowid < ?", (a, a + _CHUNK_ROWS))
             for a in range(int(lo or 0), int(hi or -1) + 1, _CHUNK_ROWS)]
    rt = pd.concat(parts, ignore_index=True) if len(parts) > 1 else (
        parts[0] if parts else pd.DataFrame({c: pd.Series(dtype="int64") for c in ("corr", "tid", "t")}))
    rt["pid"] = rt["tid"] - rt["tid"] % _TID_TO_PID
    try:
        k = k.merge(rt, on=["pid", "corr"], how="left", validate="many_to_one", sort=False)
    except pd.errors.MergeError:
        raise MoeprofError("CUPTI_ACTIVITY_KIND_RUNTIME holds duplicated (process, correlationId) records: "
                           "launches cannot be matched to their calls") from None
    del rt
    k = k.drop(columns=["corr", "pid"])
    k[["tid", "t"]] = k[["tid", "t"]].fillna(-1).astype("int64")
    if not k["start"].is_monotonic_increasing:
        k = k.sort_values("start", kind="stable", ignore_index=True)
    names = dict(con.execute("""SELECT id, value FROM StringIds
                                WHERE id IN (SELECT DISTINCT demangledName FROM CUPTI_ACTIVITY_KIND_KERNEL)"""))
    return k, names


def _read_ranges(con: sqlite3.Connection) -> pd.DataFrame:
    """NVTX push/pop ranges: tid, start, end (-1: never popped), name; names travel as codes of a
    temporary dictionary table (few distinct names, many ranges)."""
    con.execute("DROP TABLE IF EXISTS temp.moeprof_nvname")
    con.execute("CREATE TEMP TABLE moeprof_nvname(code INTEGER PRIMARY KEY, name TEXT UNIQUE)")
    name = "IFNULL(COALESCE(n.text, s.value), '')"
    con.execute(f"""INSERT OR IGNORE INTO moeprof_nvname(name)
        SELECT DISTINCT {name} FROM NVTX_EVENTS n LEFT JOIN StringIds s ON s.id = n.textId
        WHERE n.eventType = {NVTX_PUSH_POP}""")
    codes = dict(con.execute("SELECT code, name FROM moeprof_nvname"))
    nv = _query_frame(con, ["n.globalTid", "n.start", 'n."end"', "c.code"], ["tid", "start", "end", "code"],
                      f"""FROM NVTX_EVENTS n LEFT JOIN StringIds s ON s.id = n.textId
                          JOIN moeprof_nvname c ON c.name = {name} WHERE n.eventType = {NVTX_PUSH_POP}""")
    con.execute("DROP TABLE temp.moeprof_nvname")
    end = nv["end"].astype("float64")
    end[nv["end"] < 0] = np.nan
    return pd.DataFrame({"tid": nv["tid"], "start": nv["start"], "end": end,
                         "name": nv["code"].map(codes).astype(object)})


def kernels_from_launches(k: pd.DataFrame, names: dict[int, str], nv: pd.DataFrame) -> pd.DataFrame:
    """The kernel table from launches already joined to their launch call (see _read_launches)."""
    launched = k["t"].to_numpy() >= 0
    k["name"] = table.short_kernel_names_from_ids(k["name_id"], names)
    lab = ranges.label_launches(
        k, pd.Series(launched, index=k.index),
        pd.DataFrame({"tid": k["tid"].to_numpy()[launched], "t": k["t"].to_numpy()[launched]}),
        nv.assign(tid=nv["tid"].astype("int64")),
    )
    dur = (lab["end"] - lab["start"]).astype("float64")
    out = pd.DataFrame({
        "collector": "nsys",
        "format": lab["format"], "batch": lab["batch"], "phase": lab["phase"], "repeat": lab["repeat"],
        "nvtx_path": lab["nvtx_path"], "kernel_name": lab["name"],
        "start_ns": lab["start"], "duration_ns": dur,
        **{c: lab[c] for c in ("grid_x", "grid_y", "grid_z", "block_x", "block_y", "block_z",
                                 "registers_per_thread", "stream_id")},
        "gpu_time_ns": dur,
    })
    return table.normalize(out)


def kernels_from_frames(k: pd.DataFrame, rt: pd.DataFrame, nv: pd.DataFrame) -> pd.DataFrame:
    """Join kernels to their launching runtime call and the NVTX ranges open then (all vectorized)."""
    rt = rt.assign(globalPid=rt["globalTid"] - rt["globalTid"] % _TID_TO_PID)
    k = k.merge(rt, on=["globalPid", "correlationId"], how="left", validate="many_to_one")
    launched = k["t"].notna()
    k = ranges.label_launches(
        k, launched,
        pd.DataFrame({"tid": k.loc[launched, "globalTid"].astype("int64"), "t": k.loc[launched, "t"].astype("int64")}),
        nv.assign(tid=nv["tid"].astype("int64")),
    )
    out = pd.DataFrame({
        "collector": "nsys",
        "format": k["format"], "batch": k["batch"], "phase": k["phase"], "repeat": k["repeat"],
        "nvtx_path": k["nvtx_path"],
        "kernel_name": table.short_kernel_names(k["name"]),
        "start_ns": k["start"], "duration_ns": (k["end"] - k["start"]).astype("float64"),
        "grid_x": k["gridX"], "grid_y": k["gridY"], "grid_z": k["gridZ"],
        "block_x": k["blockX"], "block_y": k["blockY"], "block_z": k["blockZ"],
        "registers_per_thread": k["registersPerThread"], "stream_id": k["streamId"],
        "gpu_time_ns": (k["end"] - k["start"]).astype("float64"),
    })
    return table.normalize(out)
