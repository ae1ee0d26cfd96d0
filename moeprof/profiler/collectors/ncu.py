"""Nsight Compute collector: an explicit metric list, NVTX-filtered replay, report -> kernel table.

ncu silently drops metric names it does not know, so the list is checked against
`ncu --query-metrics --chip <chip>` before the run and against the report after it.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from moeprof.errors import MoeprofError
from moeprof.profiler.collectors import ranges, table
from moeprof.capture_folder import COUNTER_METRICS

# kernel-table column -> ncu launch metric (always collectable, not listed by --query-metrics)
LAUNCH_METRICS = {
    "grid_x": "launch__grid_dim_x", "grid_y": "launch__grid_dim_y", "grid_z": "launch__grid_dim_z",
    "block_x": "launch__block_dim_x", "block_y": "launch__block_dim_y", "block_z": "launch__block_dim_z",
    "registers_per_thread": "launch__registers_per_thread", "stream_id": "launch__stream_id",
}
UNLISTED_PREFIXES = ("launch__", "device__", "profiler__", "numa__", "nvlink__")
NVTX_COLUMN = "thread Domain:Push/Pop_Range:PL_Type:PL_Value:CLR_Type:Color:Msg_Type:Msg"
PERM_ERROR = "ERR_NVGPUCTRPERM"


def metrics() -> list[str]:
    """Every metric we ask ncu for: the counters of schema.COUNTER_METRICS plus launch attributes."""
    return list(dict.fromkeys([*COUNTER_METRICS.values(), *LAUNCH_METRICS.values()]))


def base_name(metric: str) -> str:
    """'dram__bytes_read.sum.peak_sustained' -> 'dram__bytes_read' (what --query-metrics lists)."""
    return metric.split(".", 1)[0]


def parse_query_metrics(text: str) -> set[str]:
    """Base metric names from `ncu --query-metrics --chip X` (names may carry a 'UNIT.Config.' prefix)."""
    names = set()
    for line in text.splitlines():
        tok = line.split(None, 1)[0] if line.strip() else ""
        if "__" in tok and not tok.startswith("=="):
            names.add(tok.rsplit(".", 1)[-1])
    return names


def query_metrics(ncu: str, chip: str, timeout: float = 120) -> set[str]:
    p = subprocess.run([ncu, "--query-metrics", "--chip", chip], capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        last = (p.stderr or p.stdout).strip().splitlines()[-1:] or [f"exit {p.returncode}"]
        raise MoeprofError(f"ncu --query-metrics --chip {chip} failed: {last[0][:200]}")
    return parse_query_metrics(p.stdout)


def unknown_metrics(requested: list[str], available: set[str]) -> list[str]:
    """Requested metrics whose base name the chip does not list (launch/device attributes are not checked)."""
    return [m for m in requested if not m.startswith(UNLISTED_PREFIXES) and base_name(m) not in available]


def profile_command(ncu: str, out_base: Path, argv: list[str], metric_list: list[str], *,
                    nvtx_include: list[str] | None = None, launch_count: int | None = None,
                    clock_control: str = "none", cache_control: str = "all", replay_mode: str = "kernel",
                    kernel_regex: str | None = None, launch_skip: int = 0) -> list[str]:
    """`ncu` profiling argv. kernel_regex is searched in the demangled name (templates and
    arguments included); launch_skip and launch_count count only the launches it selects."""
    cmd = [ncu, "--clock-control", clock_control, "--cache-control", cache_control, "--replay-mode", replay_mode,
           "--metrics", ",".join(metric_list), "-o", str(out_base), "-f"]
    cmd += ["--nvtx"]  # without it the report carries no NVTX state at all
    for f in nvtx_include or []:
        cmd += ["--nvtx-include", f]
    if kernel_regex:
        cmd += ["--kernel-name-base", "demangled", "--kernel-name", f"regex:{kernel_regex}"]
    if launch_skip:
        cmd += ["--launch-skip", str(launch_skip)]
    if launch_count:
        cmd += ["--launch-count", str(launch_count)]
    return [*cmd, *argv]


def export_csv(ncu: str, rep: Path, timeout: float = 1800) -> Path:
    """`ncu --import X.ncu-rep --csv --page raw --print-units base` -> X.csv beside it."""
    out = rep.with_suffix(".csv")
    p = subprocess.run([ncu, "--import", str(rep), "--csv", "--page", "raw", "--print-units", "base"],
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0 or not p.stdout.startswith('"'):
        last = (p.stderr or p.stdout).strip().splitlines()[-1:] or [f"exit {p.returncode}"]
        raise MoeprofError(f"ncu csv export failed for {rep.name}: {last[0][:200]}")
    tmp = out.with_suffix(".csv.tmp")
    tmp.write_text(p.stdout)
    tmp.replace(out)
    return out


_QUOTED = re.compile(r'"([^"]*)"')


def nvtx_path_from_cell(cell: str) -> str:
    """'569  "<default domain>:moe:none:...:none"  "<default domain>:bf16:none:..."' -> 'moe/bf16'.

    Each quoted item is Domain:Name:PL_Type:PL_Value:CLR_Type:Color:Msg_Type:Msg; the name may hold ':'.
    """
    names = []
    for item in _QUOTED.findall(cell or ""):
        parts = item.split(":")
        names.append(":".join(parts[1:-6]) if len(parts) >= 8 else item)
    return "/".join(names)


def _numbers(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s.astype(str).str.replace(",", "", regex=False).str.strip().replace({"": None, "n/a": None}),
                         errors="coerce")


def read_csv(path: str | Path) -> tuple[pd.DataFrame, set[str]]:
    """Kernel table (collector 'ncu') and the metric names present, from a raw-page CSV export."""
    path = Path(path)
    if not path.exists():
        raise MoeprofError(f"ncu csv export not found: {path}")
    text = path.read_text()
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or "Kernel Name" not in rows[0]:
        raise MoeprofError(f"{path.name}: not an ncu raw-page CSV (no 'Kernel Name' column)")
    header = rows[0]
    body = rows[1:]
    if body and body[0][:1] == [""] and "ID" in header:  # units row
        body = body[1:]
    df = pd.DataFrame(body, columns=header) if body else pd.DataFrame(columns=header)
    present = {c for c in header if "__" in c}
    raw = pd.DataFrame(index=df.index)
    raw["id"] = _numbers(df["ID"]) if "ID" in df else np.arange(len(df))
    raw["name"] = df["Kernel Name"]
    raw["nvtx_path"] = df[NVTX_COLUMN].map(nvtx_path_from_cell) if NVTX_COLUMN in df else ""
    for col, m in {**COUNTER_METRICS, **LAUNCH_METRICS}.items():
        if m in df:
            raw[col] = _numbers(df[m])
    if "stream_id" not in raw and "Stream" in df:
        raw["stream_id"] = _numbers(df["Stream"])
    return from_raw(raw), present


def from_raw(raw: pd.DataFrame) -> pd.DataFrame:
    """Common tail of both readers: raw has id, name, nvtx_path and metric columns named as in the schema."""
    raw = raw.sort_values("id", kind="mergesort").reset_index(drop=True)
    parts = ranges.split_path(raw["nvtx_path"])
    raw = pd.concat([raw, parts], axis=1)
    raw["repeat"] = ranges.number_repeats_by_phase(raw)
    raw["collector"] = "ncu"
    raw["kernel_name"] = table.short_kernel_names(raw["name"])
    if "gpu_time_ns" in raw:
        raw["duration_ns"] = raw["gpu_time_ns"]
    return table.normalize(raw)


def read_report(path: str | Path, ncu_report) -> tuple[pd.DataFrame, set[str]]:
    """Kernel table from an .ncu-rep through NVIDIA's ncu_report module."""
    ctx = ncu_report.load_report(str(path))
    wanted = {**COUNTER_METRICS, **LAUNCH_METRICS}
    rows, present = [], set()
    demangled = getattr(ncu_report.IAction, "NameBase_DEMANGLED", None)
    i = 0
    for ri in range(ctx.num_ranges()):
        rng = ctx.range_by_idx(ri)
        for ai in range(rng.num_actions()):
            a = rng.action_by_idx(ai)
            row = {"id": i, "name": a.name(demangled) if demangled is not None else a.name()}
            i += 1
            names: list[str] = []
            st = a.nvtx_state()
            if st is not None:
                for d in st.domains():
                    names += [str(x) for x in st.domain_by_id(d).push_pop_ranges()]
            row["nvtx_path"] = "/".join(names)
            for col, m in wanted.items():
                mv = a.metric_by_name(m)
                if mv is None:
                    continue
                present.add(m)
                try:
                    row[col] = mv.as_double()
                except Exception:  # noqa: BLE001 - string-valued metric
                    row[col] = np.nan
            rows.append(row)
    raw = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["id", "name", "nvtx_path"])
    return from_raw(raw), present


def missing_after(requested: list[str], present: set[str]) -> list[str]:
    """Requested metrics absent from the report (ncu drops unknown names without an error).

    The CSV expands a metric into its rollups (x.sum -> x.sum, x.avg, ...), so match on the full name."""
    return [m for m in requested if m not in present]


def failure_reason(log: str, returncode: int) -> str:
    """One line saying why an ncu run failed."""
    if PERM_ERROR in log:
        return (f"no permission to read GPU performance counters ({PERM_ERROR}): run as root or set "
                "NVreg_RestrictProfilingToAdminUsers=0")
    errs = [ln.strip() for ln in log.splitlines() if ln.startswith("==ERROR==")]
    if errs:
        return errs[0][:240]
    if "No kernels were profiled" in log:
        return "no kernels were profiled (the NVTX include, kernel-name or launch-skip filter selected nothing)"
    return f"ncu exited with {returncode}"
