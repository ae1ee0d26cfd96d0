"""PyTorch profiler collector (fallback where neither nsys nor ncu runs): chrome trace -> kernel table.

Kernels ("cat": "kernel") are attached through args.correlation to their launching runtime/driver
call, and from its thread and time to the user_annotation ranges (record_function) open then.
torch.cuda.nvtx ranges do not appear in the trace: the point runner mirrors them as record_function.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from moeprof.errors import MoeprofError
from moeprof.profiler.collectors import ranges, table

LAUNCH_CATS = ("cuda_runtime", "cuda_driver")
RANGE_CATS = ("user_annotation",)


def _ns(us: pd.Series) -> pd.Series:
    return (pd.to_numeric(us, errors="coerce") * 1000).round().astype("int64")


def read_trace(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MoeprofError(f"cannot read PyTorch trace {path.name}: {exc}") from None
    events = doc.get("traceEvents") if isinstance(doc, dict) else None
    if events is None:
        raise MoeprofError(f"{path.name}: not a chrome trace (no traceEvents)")
    ev = pd.DataFrame([e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", *LAUNCH_CATS, *RANGE_CATS)])
    if ev.empty or not (ev["cat"] == "kernel").any():
        return table.empty_kernels()
    args = ev["args"].apply(lambda a: a if isinstance(a, dict) else {})
    ev["corr"] = args.map(lambda a: a.get("correlation"))
    k = ev[ev["cat"] == "kernel"].reset_index(drop=True)
    ka = args[ev["cat"] == "kernel"].reset_index(drop=True)
    launch = ev[ev["cat"].isin(LAUNCH_CATS) & ev["corr"].notna()][["corr", "tid", "ts"]]
    launch = launch.drop_duplicates("corr").rename(columns={"tid": "ltid", "ts": "lts"})
    k = k.merge(launch, on="corr", how="left")
    rg = ev[ev["cat"].isin(RANGE_CATS)]
    rng = pd.DataFrame({"tid": pd.to_numeric(rg["tid"], errors="coerce").astype("int64"), "start": _ns(rg["ts"]),
                        "end": _ns(rg["ts"]) + _ns(rg["dur"]), "name": rg["name"].astype(str)})
    ok = k["lts"].notna()
    k = ranges.label_launches(
        k, ok, pd.DataFrame({"tid": pd.to_numeric(k.loc[ok, "ltid"]).astype("int64"), "t": _ns(k.loc[ok, "lts"])}), rng)
    grid = ka.map(lambda a: (list(a.get("grid") or []) + [np.nan] * 3)[:3])
    block = ka.map(lambda a: (list(a.get("block") or []) + [np.nan] * 3)[:3])
    dur = pd.to_numeric(k["dur"], errors="coerce") * 1000
    out = pd.DataFrame({
        "collector": "torch", "format": k["format"], "batch": k["batch"], "phase": k["phase"], "repeat": k["repeat"],
        "nvtx_path": k["nvtx_path"], "kernel_name": table.short_kernel_names(k["name"]),
        "start_ns": _ns(k["ts"]), "duration_ns": dur,
        "grid_x": grid.str[0], "grid_y": grid.str[1], "grid_z": grid.str[2],
        "block_x": block.str[0], "block_y": block.str[1], "block_z": block.str[2],
        "registers_per_thread": ka.map(lambda a: a.get("registers per thread")),
        "stream_id": ka.map(lambda a: a.get("stream")),
        "gpu_time_ns": dur,
    })
    return table.normalize(out)
