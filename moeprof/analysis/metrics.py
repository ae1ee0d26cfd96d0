"""Measured metrics per (format, batch, role) and per layer call, set against the roofline.

Inputs: a classified kernel table (classify.classify), points.csv, the analytical cost per point
(expected.Expectations.costs) and the peaks (capture clocks where ncu read them, else the spec).

Sources, stated in `*_source` columns:
  times      a timing collector's kernel durations (nsys > torch > ncu: ncu replays each kernel
             with flushed caches, so its durations are a last resort); layer times from points.csv
             (CUDA events) where present.
  counters   ncu rows: bytes and tensor ops summed per layer call, median over calls.
  tensor ops ncu counts one FMA as 2 ops (sm__ops_path_tensor_*: a 256x2880x5760 BF16 GEMM reads
             exactly 2*M*N*K), so executed ops and useful FLOPs share a unit:
             executed/useful is the overcount and (executed - useful)/executed the share of the
             executed tensor work spent on padding (tile remainders, block-aligned expert groups).
             Counted types: FP8, BF16 and (newer captures) FP16 source; `tensor_inst_executed`
             tells "tensor instructions of an uncounted type" from "no tensor-core work".
  bound      measured class of the expert GEMMs: memory (DRAM >= BUSY_PCT of peak), compute (tensor
             pipe >= BUSY_PCT active), else latency/issue (neither unit is busy: stalls, unpacking,
             too little parallelism). Within BOUND_MARGIN_PCT points of BUSY_PCT the class is
             "memory (borderline)" / "compute (borderline)": counters of two tools (or two runs)
             differ by tenths of a point, and such a difference must not flip the sentence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from moeprof.analysis.classify import GEMM_ROLES, ROLES
from moeprof.capture_folder import POINT_CLOCK_COLUMNS, Manifest

TIMING_PREFERENCE = ("nsys", "torch", "ncu")
COUNTER_SUM_COLUMNS = ["gpu_time_ns", "dram_read_bytes", "dram_write_bytes", "tensor_pipe_active_cycles",
                       "tensor_ops_fp8", "tensor_ops_bf16_hgmma", "tensor_ops_bf16_hmma", "tensor_ops_fp16",
                       "tensor_inst_executed"]
TENSOR_OP_COLUMNS = ["tensor_ops_fp8", "tensor_ops_bf16_hgmma", "tensor_ops_bf16_hmma", "tensor_ops_fp16"]
# Counters averaged over a call, weighted by each kernel's ncu duration.
COUNTER_TIME_WEIGHTED = ["tensor_pipe_active_pct", "sm_throughput_pct"]
BUSY_PCT = 60.0  # a unit at or above this share of its peak is what bounds the kernel
# Points either side of BUSY_PCT where the class is called borderline: larger than the spread between
# ncu's own throughput metrics for one kernel (e.g. 59.9% from bytes/time vs 60.0% dram__throughput).
BOUND_MARGIN_PCT = 2.0
BORDERLINE = " (borderline)"
MEASURED_PATHS = ("fp8", "bf16", "fp16")  # a measured path that names one MMA type sets the roofline peak
# MMA paths -> the peak they run at (FP16-source MMAs run at the BF16 rate on every tensor-core GPU).
_PEAK_ALIAS = {"fp16": "bf16"}


@dataclass
class Peaks:
    sm_clock_hz: float = np.nan
    sm_count: float = np.nan
    dram_bytes_per_s: float = np.nan
    tensor_flops_per_s: dict[str, float] = field(default_factory=dict)  # path -> FLOP/s
    tensor_source: str = "n/a"
    dram_source: str = "n/a"

    def tensor(self, path: str | None) -> float:
        path = _PEAK_ALIAS.get(str(path), str(path))
        return self.tensor_flops_per_s.get(path, np.nan)


def _median(df: pd.DataFrame, col: str) -> float:
    return float(df[col].median()) if col in df and len(df) else np.nan


def peaks(kernels: pd.DataFrame, manifest: Manifest, gpu) -> Peaks:
    """Peaks from the capture's own clocks: ncu per-cycle peaks x measured clock, where ncu read
    them; else the spec's per-SM per-cycle rate x SMs x measured clock; else the spec's peaks."""
    p = Peaks()
    ncu = kernels[kernels["collector"] == "ncu"]
    sm_clock, sm_count = _median(ncu, "sm_clock_hz"), _median(ncu, "sm_count")
    if not np.isfinite(sm_count):
        sm_count = float(manifest.gpu.sm_count or (gpu.sm_count if gpu else np.nan))
    p.sm_clock_hz, p.sm_count = sm_clock, sm_count
    per_cycle = {"fp8": _median(ncu, "tensor_ops_fp8_peak_per_cycle"),
                 "bf16": _median(ncu, "tensor_ops_bf16_hgmma_peak_per_cycle")}
    if np.isfinite(sm_clock) and all(np.isfinite(v) for v in per_cycle.values()):
        p.tensor_flops_per_s = {d: v * sm_clock for d, v in per_cycle.items()}
        p.tensor_source = (f"ncu per-cycle peaks (BF16 {per_cycle['bf16']:,.0f}, FP8 {per_cycle['fp8']:,.0f} "
                           f"FLOP/cycle) x capture SM clock {sm_clock / 1e9:.3f} GHz")
    elif gpu is not None:
        paths = ["bf16", "fp8"] + (["fp4"] if gpu.native_fp4_mma else [])
        if np.isfinite(sm_clock) and np.isfinite(sm_count):
            p.tensor_flops_per_s = {d: gpu.tensor_flops_per_cycle_per_sm(d) * sm_count * sm_clock for d in paths}
            p.tensor_source = (f"spec per-cycle rate x {sm_count:.0f} SMs x capture SM clock {sm_clock / 1e9:.3f} GHz")
        else:
            p.tensor_flops_per_s = {d: gpu.tensor_flops_per_s(d) for d in paths}
            p.tensor_source = f"spec ({gpu.display_name} at {gpu.boost_clock_hz / 1e9:.2f} GHz; no clock in capture)"
    if gpu is not None and gpu.native_fp4_mma and "fp4" not in p.tensor_flops_per_s and np.isfinite(sm_clock):
        p.tensor_flops_per_s["fp4"] = gpu.tensor_flops_per_cycle_per_sm("fp4") * sm_count * sm_clock
    dram_clock, bytes_per_cycle = _median(ncu, "dram_clock_hz"), _median(ncu, "dram_bytes_per_cycle_peak")
    if np.isfinite(dram_clock) and np.isfinite(bytes_per_cycle):
        p.dram_bytes_per_s = dram_clock * bytes_per_cycle
        p.dram_source = f"ncu {bytes_per_cycle:,.0f} B/cycle x capture DRAM clock {dram_clock / 1e9:.3f} GHz"
    elif gpu is not None:
        p.dram_bytes_per_s = gpu.hbm_bandwidth_bytes_per_s
        p.dram_source = f"spec ({gpu.display_name})"
    return p


def timing_collector(kernels: pd.DataFrame, prefer: str | None = None) -> str | None:
    """The collector whose durations time the kernels."""
    have = set(kernels.loc[kernels["duration_ns"].notna() & kernels["batch"].notna(), "collector"].unique())
    if prefer:
        return prefer if prefer in have else None
    return next((c for c in TIMING_PREFERENCE if c in have), None)


def _point_rows(kernels: pd.DataFrame, collector: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The collector's rows that belong to a point, batch as int64; only `columns` (and batch) where given.
    Naming the columns a caller reads keeps a row selection of a wide, million-launch table from
    copying every other column."""
    keep = ((kernels["collector"] == collector) & kernels["batch"].notna()).to_numpy()
    if columns is None:
        k = kernels[keep]
    else:
        k = kernels.loc[keep, [c for c in kernels.columns if c in columns or c == "batch"]]
    return k.assign(batch=k["batch"].astype("int64"))


def call_role_times(kernels: pd.DataFrame, collector: str) -> pd.DataFrame:
    """format, batch, call_id, role -> time_ns (sum of durations), launches. Missing roles count 0."""
    k = _point_rows(kernels, collector, ["format", "call_id", "role", "duration_ns"])
    cols = ["format", "batch", "call_id", "role"]
    g = k.groupby(cols, observed=True, sort=False)["duration_ns"].agg(["sum", "size"]).reset_index()
    g = g.rename(columns={"sum": "time_ns", "size": "launches"})
    g["role"] = g["role"].astype(str)
    # A role seen at a point counts 0 in the point's calls that lack it (so medians stay per call).
    roles_at = g[["format", "batch", "role"]].drop_duplicates()
    calls = g[["format", "batch", "call_id"]].drop_duplicates()
    full = calls.merge(roles_at, on=["format", "batch"])
    g = full.merge(g, on=cols, how="left").fillna({"time_ns": 0.0, "launches": 0})
    return g


def _counters_per_call(kernels: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """ncu counters summed per layer call (and `by`), then median over calls."""
    k = _point_rows(kernels, "ncu")
    if k.empty:
        return pd.DataFrame(columns=by)
    weighted = {f"_w_{c}": k[c] * k["gpu_time_ns"] for c in COUNTER_TIME_WEIGHTED}
    k = k.assign(role=k["role"].astype(str), **weighted)
    per_call = k.groupby(by + ["call_id"], observed=True, sort=False)[COUNTER_SUM_COLUMNS + list(weighted)].sum(min_count=1)
    per_call = per_call.reset_index()
    med = per_call.groupby(by, observed=True, sort=False).median(numeric_only=True).reset_index()
    med = med.drop(columns=["call_id"])
    for c in COUNTER_TIME_WEIGHTED:
        med[c] = med[f"_w_{c}"] / med["gpu_time_ns"]
    med["ncu_calls"] = per_call.groupby(by, observed=True, sort=False).size().to_numpy()
    return med.drop(columns=list(weighted))


# tensor_path values that are not an MMA type
PATH_NOT_COLLECTED = "n/a"     # no FP8/BF16 ops counted, FP16 ops and tensor instructions not collected
PATH_UNCOUNTED = "uncounted"   # tensor instructions ran, but none of the counted op types
PATH_NONE = "none"             # no tensor instructions at all: no tensor-core work


def tensor_path(fp8_ops: pd.Series, bf16_ops: pd.Series, fp16_ops: pd.Series | None = None,
                tensor_inst: pd.Series | None = None) -> pd.Series:
    """Which MMA path executed the tensor ops.

    fp8 | bf16 | fp16 | mixed (more than one counted type) where ops were counted; where none were:
    'uncounted' (tensor instructions > 0), 'none' (tensor instructions == 0), 'n/a' (neither FP16 ops
    nor tensor instructions collected, so "no tensor work" cannot be told from "an uncounted type");
    '' without any tensor counters.
    """
    nan = pd.Series(np.nan, index=fp8_ops.index)
    f = fp8_ops.to_numpy(dtype=float)
    b = bf16_ops.to_numpy(dtype=float)
    h = (fp16_ops if fp16_ops is not None else nan).to_numpy(dtype=float)
    inst = (tensor_inst if tensor_inst is not None else nan).to_numpy(dtype=float)
    counted = [(name, np.nan_to_num(x) > 0) for name, x in (("fp8", f), ("bf16", b), ("fp16", h))]
    n_types = sum(m.astype(int) for _, m in counted)
    any_counter = ~(np.isnan(f) & np.isnan(b) & np.isnan(h))
    out = np.where(any_counter, PATH_NOT_COLLECTED, "").astype(object)
    zero = any_counter & (n_types == 0)
    known_h = ~np.isnan(h)
    out[zero & ~np.isnan(inst) & (inst > 0)] = PATH_UNCOUNTED
    out[zero & ~np.isnan(inst) & (inst == 0)] = PATH_NONE
    # FP16 ops collected as 0 and no instruction count: every common MMA type was counted, so none ran.
    out[zero & np.isnan(inst) & known_h] = PATH_NONE
    for name, m in counted:
        out[m & (n_types == 1)] = name
    out[n_types > 1] = "mixed"
    return pd.Series(out, index=fp8_ops.index)


def classify_bound(dram_pct: pd.Series, tensor_busy_pct: pd.Series, threshold: float = BUSY_PCT,
                   margin: float = BOUND_MARGIN_PCT) -> pd.Series:
    """memory | compute | latency/issue | '' (counters missing), from how busy DRAM and the tensor pipe
    are; 'memory (borderline)' / 'compute (borderline)' where the busier unit is within `margin`
    points of `threshold` (either side)."""
    d, t = dram_pct.to_numpy(dtype=float), tensor_busy_pct.to_numpy(dtype=float)
    out = np.where(np.isnan(d) | np.isnan(t), "", "latency/issue").astype(object)
    low = threshold - margin
    mem, comp = np.nan_to_num(d) >= low, np.nan_to_num(t) >= low
    memory_wins = mem & (~comp | (np.nan_to_num(d) >= np.nan_to_num(t)))
    compute_wins = comp & ~memory_wins
    for unit, wins, value in (("memory", memory_wins, d), ("compute", compute_wins, t)):
        clear = wins & (np.nan_to_num(value) >= threshold + margin)
        out[clear] = unit
        out[wins & ~clear] = unit + BORDERLINE
    return pd.Series(out, index=dram_pct.index)


def bound_class(label: object) -> str:
    """The class of a bound label without its borderline qualifier ('memory (borderline)' -> 'memory')."""
    return str(label or "").removesuffix(BORDERLINE)


def dram_bytes(c: pd.DataFrame) -> pd.Series:
    """DRAM bytes read + written; NaN where either counter is missing (never a partial total)."""
    return c["dram_read_bytes"] + c["dram_write_bytes"]


def tensor_ops(c: pd.DataFrame) -> pd.Series:
    """Tensor ops over every counted MMA type (FP8, BF16 HGMMA/HMMA, FP16); NaN where none was read."""
    return c[[x for x in TENSOR_OP_COLUMNS if x in c]].sum(axis=1, min_count=1)


def _add_counter_metrics(t: pd.DataFrame, pk: Peaks) -> pd.DataFrame:
    for col in COUNTER_SUM_COLUMNS + COUNTER_TIME_WEIGHTED + ["ncu_calls"]:
        if col not in t.columns:
            t[col] = np.nan
    t["dram_bytes"] = dram_bytes(t)
    t["tensor_ops_bf16"] = t[["tensor_ops_bf16_hgmma", "tensor_ops_bf16_hmma"]].sum(axis=1, min_count=1)
    t["tensor_ops"] = tensor_ops(t)
    t["tensor_path"] = tensor_path(t["tensor_ops_fp8"], t["tensor_ops_bf16"], t["tensor_ops_fp16"],
                                   t["tensor_inst_executed"])
    t["executed_tflop_per_s"] = t["tensor_ops"] / t["gpu_time_ns"] * 1e-3
    return t


def _add_roofline(t: pd.DataFrame, pk: Peaks, flops: pd.Series, nbytes: pd.Series, time_ns: pd.Series,
                  path: pd.Series, nbytes_as_built: pd.Series | None = None) -> pd.DataFrame:
    """Achieved rates and % of roofline (ideal bytes) and of the as-built bound, for rows with analytic
    FLOPs/bytes and a measured time."""
    t["useful_flops"] = flops
    t["useful_tflop_per_s"] = flops / time_ns * 1e-3
    # Padding: share of the executed tensor work that was not useful. Undefined without executed ops,
    # and where fewer ops were counted than the GEMM needs (part of the work ran on an uncounted type).
    ex = t["tensor_ops"]
    t["executed_over_useful"] = (ex / flops).where((ex > 0) & (flops > 0))
    t["padding_pct"] = ((ex - flops) / ex * 100.0).where(t["executed_over_useful"] >= 1.0 - 1e-6).clip(lower=0.0)
    counters = t["dram_bytes"].notna() & (t["gpu_time_ns"] > 0)
    t["dram_bw_bytes_per_s"] = np.where(counters, t["dram_bytes"] / t["gpu_time_ns"] * 1e9, nbytes / time_ns * 1e9)
    t["dram_bw_source"] = np.where(counters, "ncu counters",
                                   np.where(nbytes.notna(), "analytic bytes / measured time", "n/a"))
    t["peak_dram_bytes_per_s"] = pk.dram_bytes_per_s
    t["dram_bw_pct_of_peak"] = t["dram_bw_bytes_per_s"] / pk.dram_bytes_per_s * 100.0
    t["peak_tensor_flop_per_s"] = [pk.tensor(p) for p in path]
    t["tensor_pct_of_peak"] = t["useful_tflop_per_s"] * 1e12 / t["peak_tensor_flop_per_s"] * 100.0
    t_roof = np.maximum(flops / t["peak_tensor_flop_per_s"], nbytes / pk.dram_bytes_per_s)
    t["t_roofline_ns"] = t_roof * 1e9
    t["pct_of_roofline"] = t["t_roofline_ns"] / time_ns * 100.0
    if nbytes_as_built is not None:
        t["t_as_built_ns"] = np.maximum(flops / t["peak_tensor_flop_per_s"], nbytes_as_built / pk.dram_bytes_per_s) * 1e9
        t["pct_of_as_built"] = t["t_as_built_ns"] / time_ns * 100.0
    # How busy the tensor pipe was: ncu's active share where read (padding work included), else useful
    # FLOP/s against the path's peak.
    pipe = t["tensor_pipe_active_pct"] if "tensor_pipe_active_pct" in t else pd.Series(np.nan, index=t.index)
    t["tensor_busy_pct"] = pipe.where(pipe.notna(), t["tensor_pct_of_peak"])
    t["tensor_busy_source"] = np.where(pipe.notna(), "tensor pipe active (ncu)",
                                       np.where(t["tensor_pct_of_peak"].notna(), "useful FLOP/s / MMA peak", "n/a"))
    dram_known = t["dram_bw_source"].eq("ncu counters")
    t["bound_measured"] = classify_bound(t["dram_bw_pct_of_peak"].where(dram_known), t["tensor_busy_pct"])
    return t


def role_table(kernels: pd.DataFrame, costs: pd.DataFrame, pk: Peaks, collector: str,
               role_times: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (format, batch, role): time median and spread over calls, share, rates, % of roofline.
    `role_times`: call_role_times(kernels, collector), where the caller has computed it already."""
    crt = call_role_times(kernels, collector) if role_times is None else role_times
    keys = ["format", "batch", "role"]
    g = crt.groupby(keys, sort=False)
    t = g["time_ns"].agg(time_median_ns="median", n_calls="size").reset_index()
    t["time_p10_ns"] = g["time_ns"].quantile(0.10).to_numpy()
    t["time_p90_ns"] = g["time_ns"].quantile(0.90).to_numpy()
    t["launches_per_call"] = g["launches"].median().to_numpy()
    total = t.groupby(["format", "batch"])["time_median_ns"].transform("sum")
    t["share_pct"] = t["time_median_ns"] / total * 100.0
    t["tokens_per_s"] = t["batch"] / (t["time_median_ns"] * 1e-9)
    t["timing_source"] = collector
    t = t.merge(_counters_per_call(kernels, keys), on=keys, how="left")
    t = _add_counter_metrics(t, pk)
    # Analytic FLOPs/bytes exist for the expert GEMMs only.
    flops = pd.Series(np.nan, index=t.index)
    nbytes = pd.Series(np.nan, index=t.index)
    nbytes_built = pd.Series(np.nan, index=t.index)
    path = pd.Series("", index=t.index, dtype=object)
    if not costs.empty:
        c = t[keys].merge(costs, on=["format", "batch"], how="left")
        for r in GEMM_ROLES:
            sel = (t["role"] == r).to_numpy()
            flops[sel] = c.loc[sel, f"{r}_flops"].to_numpy()
            nbytes[sel] = c.loc[sel, f"{r}_bytes"].to_numpy()
            nbytes_built[sel] = c.loc[sel, f"{r}_bytes_as_built"].to_numpy()
        path = c["mma_path_model"].fillna("").astype(object)
    path = path.where(~t["tensor_path"].isin(MEASURED_PATHS), t["tensor_path"])
    t = _add_roofline(t, pk, flops, nbytes, t["time_median_ns"], path, nbytes_built)
    t["role"] = pd.Categorical(t["role"], categories=ROLES)
    return t.sort_values(["format", "batch", "role"]).reset_index(drop=True)


def _gemms_seen(kernels: pd.DataFrame, collector: str | None, points: pd.DataFrame) -> dict[str, pd.Series]:
    """Per point row: was gemm1 / gemm2 measured at all."""
    rows = kernels["batch"].notna()
    if collector is not None:
        rows &= kernels["collector"] == collector
    k = kernels.loc[rows.to_numpy(), ["format", "batch", "role"]].drop_duplicates()  # three columns, not all
    have = set(zip(k["format"], k["batch"].astype("int64"), k["role"].astype(str)))
    return {r: pd.Series([(f, int(b), r) in have for f, b in zip(points["format"], points["batch"])],
                         index=points.index) for r in GEMM_ROLES}


def layer_samples(kernels: pd.DataFrame, points: pd.DataFrame, collector: str | None) -> pd.DataFrame:
    """format, batch, time_ns: one row per layer call (CUDA events, else the call's kernel sum)."""
    pts = points[points["layer_time_ns"].notna()]
    if not pts.empty:
        return pd.DataFrame({"format": pts["format"].to_numpy(), "batch": pts["batch"].astype("int64").to_numpy(),
                             "time_ns": pts["layer_time_ns"].to_numpy(dtype=float)})
    if collector is None:
        return pd.DataFrame(columns=["format", "batch", "time_ns"])
    k = _point_rows(kernels, collector, ["format", "call_id", "duration_ns"])
    g = k.groupby(["format", "batch", "call_id"], sort=False)["duration_ns"].sum().reset_index()
    return g.rename(columns={"duration_ns": "time_ns"}).drop(columns=["call_id"])


def layer_table(kernels: pd.DataFrame, points: pd.DataFrame, costs: pd.DataFrame, pk: Peaks,
                collector: str | None, role_times: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (format, batch): layer time (CUDA events), throughput, time outside the expert GEMMs,
    achieved rates of the expert GEMMs and of the whole layer against the roofline.
    `role_times`: call_role_times(kernels, collector), where the caller has computed it already."""
    keys = ["format", "batch"]
    pts = points[points["layer_time_ns"].notna()]
    if not pts.empty:
        pts = pts.assign(batch=pts["batch"].astype("int64"))
        g = pts.groupby(keys, sort=False)
        t = g["layer_time_ns"].agg(layer_time_median_ns="median", repeats="size").reset_index()
        t["layer_time_p10_ns"] = g["layer_time_ns"].quantile(0.10).to_numpy()
        t["layer_time_p90_ns"] = g["layer_time_ns"].quantile(0.90).to_numpy()
        t["layer_time_source"] = "points.csv (CUDA events)"
        if "experts_touched" in pts:
            t["experts_touched"] = g["experts_touched"].median().to_numpy()
        # NVML while the point was timed (one value per point, on each of its rows; NaN where not read)
        for c in POINT_CLOCK_COLUMNS:
            if c in pts:
                t[c] = g[c].median().to_numpy()
    else:
        t = pd.DataFrame(columns=keys)
    if collector is not None:
        crt = call_role_times(kernels, collector) if role_times is None else role_times
        crt = crt.assign(gemm_ns=crt["time_ns"].where(crt["role"].isin(GEMM_ROLES), 0.0))
        per_call = crt.groupby(keys + ["call_id"], sort=False)[["time_ns", "gemm_ns"]].sum().reset_index()
        g = per_call.groupby(keys, sort=False)
        k = g.agg(kernel_time_median_ns=("time_ns", "median"), gemm_time_median_ns=("gemm_ns", "median"),
                  kernel_calls=("time_ns", "size")).reset_index()
        k["kernel_time_p10_ns"] = g["time_ns"].quantile(0.10).to_numpy()
        k["kernel_time_p90_ns"] = g["time_ns"].quantile(0.90).to_numpy()
        t = k if t.empty else t.merge(k, on=keys, how="outer")
        if "layer_time_median_ns" not in t or t["layer_time_median_ns"].isna().all():
            t["layer_time_median_ns"] = t["kernel_time_median_ns"]
            t["layer_time_p10_ns"] = t["kernel_time_p10_ns"]
            t["layer_time_p90_ns"] = t["kernel_time_p90_ns"]
            t["repeats"] = t["kernel_calls"]
            t["layer_time_source"] = f"sum of {collector} kernel durations"
        t["outside_gemm_ns"] = t["kernel_time_median_ns"] - t["gemm_time_median_ns"]
        t["outside_gemm_pct"] = t["outside_gemm_ns"] / t["kernel_time_median_ns"] * 100.0
        t["launch_gap_ns"] = t["layer_time_median_ns"] - t["kernel_time_median_ns"]
    if t.empty:
        return t
    t["tokens_per_s"] = t["batch"] / (t["layer_time_median_ns"] * 1e-9)
    # Expert-GEMM counters (gemm1 + gemm2) and whole-layer DRAM bytes. Counters are ncu's rows alone:
    # selecting those first keeps the relabelling below off the (much larger) timing collector's rows.
    counter_rows = kernels[(kernels["collector"] == "ncu").to_numpy()]
    ncu = (counter_rows[counter_rows["role"].isin(GEMM_ROLES)].assign(role="gemm") if "role" in counter_rows
           else counter_rows.iloc[:0])
    gc = _counters_per_call(ncu, keys)
    if not gc.empty:
        t = t.merge(gc, on=keys, how="left")
    t = _add_counter_metrics(t, pk)
    lc = _counters_per_call(counter_rows.assign(role="layer"), keys)
    t["layer_dram_bytes"] = dram_bytes(t[keys].merge(lc, on=keys, how="left")).to_numpy() if not lc.empty else np.nan
    if not costs.empty:
        t = t.merge(costs, on=keys, how="left")
        if "experts_touched" in t:
            t["experts_touched_source"] = np.where(t["experts_touched"].notna(), "points.csv", "model")
        path = t["mma_path_model"].fillna("").astype(object)
        path = path.where(~t["tensor_path"].isin(MEASURED_PATHS), t["tensor_path"])
        # Analytic work of the expert GEMMs that were measured (a capture may lack one).
        seen = _gemms_seen(kernels, collector, t[keys])
        gflops = sum(t[f"{r}_flops"].where(seen[r], 0.0) for r in GEMM_ROLES)
        gbytes = sum(t[f"{r}_bytes"].where(seen[r], 0.0) for r in GEMM_ROLES)
        gbuilt = sum(t[f"{r}_bytes_as_built"].where(seen[r], 0.0) for r in GEMM_ROLES)
        gemm_time = t.get("gemm_time_median_ns", pd.Series(np.nan, index=t.index))
        t["gemms_measured"] = [",".join(r for r in GEMM_ROLES if seen[r].iloc[i]) for i in range(len(t))]
        t = _add_roofline(t, pk, gflops.where(gflops > 0), gbytes.where(gbytes > 0), gemm_time, path,
                          gbuilt.where(gbuilt > 0))
        # Whole layer against its roofline (routing etc. add time the model does not count).
        other_flops = t["flops"] - t["gemm1_flops"] - t["gemm2_flops"]
        other_bytes = t["bytes"] - t["gemm1_bytes"] - t["gemm2_bytes"]
        t["layer_t_roofline_ns"] = np.maximum((gflops + other_flops) / t["peak_tensor_flop_per_s"],
                                              (gbytes + other_bytes) / pk.dram_bytes_per_s) * 1e9
        t["layer_pct_of_roofline"] = t["layer_t_roofline_ns"] / t["layer_time_median_ns"] * 100.0
        # The whole layer as built: its separate quant and combine passes included.
        other_built = t["bytes_as_built"] - t["gemm1_bytes_as_built"] - t["gemm2_bytes_as_built"]
        t["layer_t_as_built_ns"] = np.maximum((gflops + other_flops) / t["peak_tensor_flop_per_s"],
                                              (gbuilt + other_built) / pk.dram_bytes_per_s) * 1e9
        t["layer_pct_of_as_built"] = t["layer_t_as_built_ns"] / t["layer_time_median_ns"] * 100.0
    return t.sort_values(keys).reset_index(drop=True)
