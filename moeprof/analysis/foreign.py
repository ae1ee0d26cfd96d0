"""What a program moeprof did not write ran on the GPU: a kernel table without moeprof's NVTX.

`kernel_report(capture)` groups the launches by kernel identity and role:
  identity  the short demangled name, plus grid and block where they separate the launches of one
            name into a few configurations (a name whose grid follows the batch is one identity)
  role      classify.classify: engine name patterns, gemm1/gemm2 by launch order in the layer call
  time      the timing collector's durations (nsys > torch > ncu): calls, total, median, share
  counters  ncu rows joined to the timed launches by kernel name and order (join_ncu), so a counter
            row inherits the role of the launch it measured (gemm1 and gemm2 of one kernel apart);
            DRAM bandwidth and tensor FLOP/s from ncu's own duration, against the card's peaks.
It also says which labels would turn the table into a format verdict, and how to add them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from moeprof.analysis import classify, expected, metrics
from moeprof.analysis.load import Capture
from moeprof.errors import MoeprofError

MAX_CONFIGS_PER_NAME = 4   # more grid/block configurations than this: the grid follows the data
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GENERIC_TOKENS = {"cutlass", "device_kernel", "detail", "native", "cuda", "kernel", "void", "unsigned", "float",
                   "double", "bool", "true", "false", "int", "char", "long", "short", "const", "struct", "class",
                   "anonymous", "namespace", "Shape", "Stride", "Layout", "Int", "cute", "std", "enable_3x_kernel_for_sm9x",
                   "enable_sm90_or_later", "at", "arch", "gemm", "epilogue", "collective", "fusion", "thread"}


@dataclass
class KernelReport:
    capture: Capture
    table: pd.DataFrame               # one row per (role, identity)
    timing_collector: str
    total_time_ns: float
    peaks: metrics.Peaks
    notes: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)

    @property
    def gpu_label(self) -> str:
        return self.capture.gpu_name


def display_name(name: str, width: int = 60) -> str:
    """A readable form of a (possibly huge) templated kernel name: its head and distinctive template tokens."""
    if len(name) <= width:
        return name
    head, _, rest = name.partition("<")
    tokens: list[str] = []
    for tok in _IDENT_RE.findall(rest):
        if len(tok) >= 6 and tok not in _GENERIC_TOKENS and tok not in tokens and not tok.startswith("_"):
            tokens.append(tok)
    text = f"{head}<{', '.join(tokens)}>" if tokens else head
    return text if len(text) <= width else text[: width - 2] + "…>"


def identities(k: pd.DataFrame) -> pd.Series:
    """Kernel identity per launch: the name, plus grid/block where a name has a few configurations."""
    grid = k[["grid_x", "grid_y", "grid_z"]].astype("string").fillna("?").agg("x".join, axis=1)
    block = k[["block_x", "block_y", "block_z"]].astype("string").fillna("?").agg("x".join, axis=1)
    config = "grid " + grid + " block " + block
    n_conf = config.groupby(k["kernel_name"]).transform("nunique")
    split = (n_conf > 1) & (n_conf <= MAX_CONFIGS_PER_NAME)
    return k["kernel_name"].where(~split, k["kernel_name"] + " [" + config + "]")


def join_ncu(timed: pd.DataFrame, ncu: pd.DataFrame, kernel_regex: str | None, launch_skip: int) -> tuple[pd.DataFrame, str]:
    """ncu rows with the index of the timed launch each one measured (column `timed_index`; -1 unmatched).

    ncu profiled the launches its kernel filter selected, after skipping `launch_skip` of them, in
    launch order; the same program under nsys launched the same sequence. So the i-th ncu row of a
    name is the i-th selected launch of that name after the skipped ones. Grid and block of each
    pair are compared: a mismatch means the two runs launched different work."""
    ncu = ncu.copy()
    ncu["timed_index"] = -1
    if ncu.empty or timed.empty:
        return ncu, "no ncu rows" if ncu.empty else "no timed launches to join ncu rows to"
    t = timed.sort_values("start_ns", kind="stable")
    if kernel_regex:
        try:
            rx = re.compile(kernel_regex)
        except re.error:
            rx = None
        if rx is not None:
            t = t[t["kernel_name"].map(lambda n: bool(rx.search(n)))]
    t = t.iloc[int(launch_skip or 0):]
    left = pd.DataFrame({"kernel_name": t["kernel_name"].to_numpy(), "nth": t.groupby("kernel_name").cumcount().to_numpy(),
                         "timed_index": t.index.to_numpy()})
    ncu = ncu.drop(columns="timed_index")
    ncu["nth"] = ncu.groupby("kernel_name").cumcount()
    m = ncu.reset_index().merge(left, on=["kernel_name", "nth"], how="left").set_index("index")
    m["timed_index"] = m["timed_index"].fillna(-1).astype("int64")
    hit = m["timed_index"] >= 0
    dims = ["grid_x", "grid_y", "grid_z", "block_x", "block_y", "block_z"]
    tdims = timed.loc[m.loc[hit, "timed_index"], dims].to_numpy(dtype=float)
    ndims = m.loc[hit, dims].to_numpy(dtype=float)
    known = ~np.isnan(ndims).any(axis=1)
    bad = known & (tdims != ndims).any(axis=1)
    if bad.any():
        m.loc[m.index[hit][bad], "timed_index"] = -1
    how = (f"ncu rows joined to {timed['collector'].iloc[0]} launches by kernel name and order: "
           f"{int(hit.sum() - bad.sum())} of {len(m)} matched")
    if bad.any():
        how += f", {int(bad.sum())} dropped (grid/block differ from the launch they would pair with)"
    return m.drop(columns="nth"), how


def _hints(k: pd.DataFrame, capture: Capture) -> list[str]:
    paths = k.loc[k["nvtx_path"] != "", "nvtx_path"].value_counts()
    where = str(capture.path)
    formats = sorted(set(k["format"]) - {""})
    missing = (f"Format {', '.join(formats)} but no batch label" if formats else "No format/batch labels")
    lines = [
        f"{missing}, so no format verdict. Label the runs and compare them:",
        "  moeprof capture --label format=fp8 --label batch=64 -- CMD      (whole run; then again with format=bf16)",
        f"  moeprof analyze {where} --nvtx-pattern 'REGEX'                  (named groups format, batch, phase, layer)",
        "  with moeprof.mark(format=\"fp8\", batch=64): layer(x)             (in the program: one mark per layer call)",
        "  moeprof analyze RUN_FP8 RUN_BF16 [--model gpt-oss-120b]           (one verdict over the labelled runs)",
    ]
    if len(paths):
        lines.append("NVTX ranges seen (most launches first): " + "; ".join(f"{p!r} ({n})" for p, n in paths.head(3).items()))
    else:
        lines.append("The program pushed no NVTX range: use --label or moeprof.mark.")
    return lines


def kernel_report(capture: Capture, timing: str | None = None) -> KernelReport:
    """Per-kernel report of a capture (any program), with roles and, where ncu ran, counters."""
    raw = capture.kernels
    if raw.empty or raw["duration_ns"].notna().sum() == 0:
        raise MoeprofError(f"{capture.path}: no GPU kernels in kernels.csv (did the program launch any CUDA kernel?)")
    k = classify.classify(raw)
    have = [c for c in metrics.TIMING_PREFERENCE if ((k["collector"] == c) & k["duration_ns"].notna()).any()]
    collector = timing or (have[0] if have else None)
    if collector not in have:
        raise MoeprofError(f"capture has no kernel timings from collector {timing!r}")
    timed = k[(k["collector"] == collector) & k["duration_ns"].notna()].copy()
    dur = timed["duration_ns"].to_numpy(dtype=float)
    if not np.isfinite(dur).all() or (dur < 0).any():
        raise MoeprofError(f"{capture.path}: kernels.csv holds non-finite or negative kernel durations")
    notes: list[str] = []
    if timed["start_ns"].notna().all():
        dup = timed.duplicated(["start_ns", "kernel_name", "stream_id"])
        if dup.any():
            notes.append(f"dropped {int(dup.sum())} duplicated launches (same start, kernel and stream)")
            timed = timed[~dup]
    zero = timed["duration_ns"] == 0
    if zero.any():
        notes.append(f"dropped {int(zero.sum())} launches with zero duration")
        timed = timed[~zero]
    timed["identity"] = identities(timed)
    timed["role"] = timed["role"].astype(str)
    total = float(timed["duration_ns"].sum())
    keys = ["role", "identity"]
    g = timed.groupby(keys, sort=False)
    t = g["duration_ns"].agg(calls="size", total_ns="sum", median_ns="median").reset_index()
    t["kernel_name"] = g["kernel_name"].first().to_numpy()
    t["share_pct"] = t["total_ns"] / total * 100.0
    config = t["identity"].str.extract(r" \[(grid [^\]]+)\]$")[0].fillna("")
    t["display_name"] = t["kernel_name"].map(display_name) + np.where(config != "", " [" + config + "]", "")
    exp = expected.resolve(capture.manifest)
    pk = metrics.peaks(k, capture.manifest, exp.gpu)
    ncu = k[k["collector"] == "ncu"]
    joined = None
    if collector == "ncu":  # the timed rows carry their own counters
        notes.append("kernel times come from ncu replay (caches flushed, serialized): slower than real runs")
        joined = timed
    elif not ncu.empty:
        opts = capture.manifest.collector("ncu").option_dict
        joined, how = join_ncu(timed, ncu, opts.get("kernel_regex"), int(opts.get("launch_skip") or 0))
        notes.append(how)
        joined = joined[joined["timed_index"] >= 0]
        joined = joined.assign(role=timed.loc[joined["timed_index"], "role"].to_numpy(),
                               identity=timed.loc[joined["timed_index"], "identity"].to_numpy())
    if joined is not None and not joined.empty:
        cols = metrics.COUNTER_SUM_COLUMNS
        weighted = {f"_w_{c}": joined[c] * joined["gpu_time_ns"] for c in metrics.COUNTER_TIME_WEIGHTED}
        c = joined.assign(**weighted).groupby(keys, sort=False)[cols + list(weighted)].sum(min_count=1)
        c["ncu_launches"] = joined.groupby(keys, sort=False).size()
        for col in metrics.COUNTER_TIME_WEIGHTED:
            c[col] = c[f"_w_{col}"] / c["gpu_time_ns"]
        t = t.merge(c.drop(columns=list(weighted)).reset_index(), on=keys, how="left")
    t = metrics._add_counter_metrics(t, pk)
    t["ncu_launches"] = t.get("ncu_launches", pd.Series(np.nan, index=t.index))
    counted = t["dram_bytes"].notna() & (t["gpu_time_ns"] > 0)
    t["dram_bw_bytes_per_s"] = (t["dram_bytes"] / t["gpu_time_ns"] * 1e9).where(counted)
    t["dram_bw_pct_of_peak"] = t["dram_bw_bytes_per_s"] / pk.dram_bytes_per_s * 100.0
    t["executed_tflop_per_s"] = (t["tensor_ops"] / t["gpu_time_ns"] * 1e-3).where(t["gpu_time_ns"] > 0)
    t["peak_tensor_flop_per_s"] = [pk.tensor(p) if p in metrics.MEASURED_PATHS else np.nan for p in t["tensor_path"]]
    t["tensor_pct_of_peak"] = t["executed_tflop_per_s"] * 1e12 / t["peak_tensor_flop_per_s"] * 100.0
    t["bound_measured"] = metrics.classify_bound(t["dram_bw_pct_of_peak"],
                                                 t["tensor_pipe_active_pct"].where(t["tensor_pipe_active_pct"].notna(),
                                                                                   t["tensor_pct_of_peak"]))
    t["role"] = pd.Categorical(t["role"], categories=classify.ROLES)
    t = t.sort_values(["total_ns"], ascending=False).reset_index(drop=True)
    if exp.gpu is None:
        notes.append(exp.notes.get("gpu", "no GPU spec"))
    labelled = raw["batch"].notna().any()
    hints = [] if labelled else _hints(raw, capture)
    dropped = [d.line() for d in capture.dropped]  # rows validation left out as unsound
    return KernelReport(capture, t, collector, total, pk, notes + dropped + list(capture.warnings), hints)
