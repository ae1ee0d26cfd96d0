"""Nsight Systems collector: run a command under `nsys profile`, export sqlite, read the kernel table.

Each kernel is attached to the NVTX push/pop stack open on the thread that launched it:
kernel.correlationId -> CUPTI_ACTIVITY_KIND_RUNTIME (globalTid, start) -> NVTX_EVENTS
(eventType 59, same globalTid, start <= runtime.start < end).
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

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


def read_kernels(path: str | Path) -> pd.DataFrame:
    """The normalized kernel table (collector 'nsys') of one nsys sqlite export."""
    path = Path(path)
    if not path.exists():
        raise MoeprofError(f"nsys export not found: {path}")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        _, present = check_schema(con, path)
        k = pd.read_sql_query(
            """SELECT k.start, k."end", k.correlationId, k.globalPid, s.value AS name, k.streamId,
                      k.gridX, k.gridY, k.gridZ, k.blockX, k.blockY, k.blockZ, k.registersPerThread
               FROM CUPTI_ACTIVITY_KIND_KERNEL k LEFT JOIN StringIds s ON s.id = k.demangledName
               ORDER BY k.start""", con)
        rt = pd.read_sql_query("SELECT correlationId, globalTid, start AS t FROM CUPTI_ACTIVITY_KIND_RUNTIME", con)
        if "NVTX_EVENTS" in present:
            nv = pd.read_sql_query(
                f"""SELECT n.globalTid AS tid, n.start, n."end", COALESCE(n.text, s.value) AS name
                    FROM NVTX_EVENTS n LEFT JOIN StringIds s ON s.id = n.textId
                    WHERE n.eventType = {NVTX_PUSH_POP}""", con)
        else:
            nv = pd.DataFrame({"tid": pd.Series(dtype="int64"), "start": pd.Series(dtype="int64"),
                               "end": pd.Series(dtype="int64"), "name": pd.Series(dtype=str)})
    finally:
        con.close()
    return kernels_from_frames(k, rt, nv)


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
