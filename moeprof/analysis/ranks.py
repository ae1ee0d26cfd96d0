"""Several ranks: per-rank kernel tables on one timeline, communication, exposed time, imbalance.

Input: a capture whose kernels.csv has a `rank` column (capture --tp/--ep N, or --ranks N).
Per rank and layer call (format, batch, repeat) on the nsys timeline:
  span_ns          first kernel start to last kernel end on that rank
  compute_ns       length of the union of the non-communication kernels' intervals
  comm_ns          length of the union of the communication (NCCL) kernels' intervals
  overlap_ns       time when both ran (compute_ns + comm_ns - busy_ns, busy_ns the union of all)
  comm_exposed_ns  communication time not hidden under compute (busy_ns - compute_ns)
Interval unions, not sums: kernels on several streams overlap, and summing them would count the
same nanosecond twice. An NCCL kernel's time includes waiting for its peers, so a rank that
arrives early shows a long collective: the slowest rank per call is the one with the longest span,
and the imbalance is the largest rank's compute time over the ranks' mean (expert parallelism:
the most loaded rank sets the pace).
Per (format, batch): medians over the calls that every rank has; the layer's wall time across
ranks is the longest rank span of each call. Achieved bus bandwidth: the bytes one rank sends per
call by the model (roofline/comm.py: uniform routing for ep) over the shortest rank's
communication time of the call (that rank waited least).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from moeprof.capture_folder import COMM_PHASES, RANK_COLUMN

_COMM_NAME = re.compile(r"^nccl|nccl(?:Dev)?Kernel", re.IGNORECASE)
_KINDS = [("allreduce", r"allreduce"), ("alltoall", r"alltoall"), ("allgather", r"allgather"),
          ("reducescatter", r"reducescatter"), ("broadcast", r"broadcast"), ("sendrecv", r"sendrecv|send|recv")]


def is_comm(name: str) -> bool:
    return bool(_COMM_NAME.search(name or ""))


def comm_kind(name: str, phase: str = "") -> str:
    """allreduce | alltoall | allgather | reducescatter | broadcast | sendrecv for an NCCL kernel, '' else.
    NCCL runs an all-to-all as grouped send/recv: inside a dispatch/collect phase that is the all-to-all."""
    if not is_comm(name):
        return ""
    n = name.lower().replace("_", "")
    kind = next((k for k, rx in _KINDS if re.search(rx, n)), "other")
    if kind in ("sendrecv", "other") and phase in ("dispatch", "collect"):
        return "alltoall"
    return kind


def union_ns(starts: np.ndarray, ends: np.ndarray) -> float:
    """Total length of the union of [start, end) intervals."""
    if len(starts) == 0:
        return 0.0
    order = np.argsort(starts, kind="stable")
    s, e = np.asarray(starts, dtype="float64")[order], np.asarray(ends, dtype="float64")[order]
    run_end = np.maximum.accumulate(e)
    # a new block starts where an interval begins after everything before it ended
    new = np.empty(len(s), dtype=bool)
    new[0] = True
    new[1:] = s[1:] > run_end[:-1]
    block = np.cumsum(new) - 1
    b_start = s[new]
    b_end = pd.Series(e).groupby(block).max().to_numpy()
    return float((b_end - b_start).sum())


@dataclass
class RankAnalysis:
    world_size: int
    ranks_present: list[int]
    calls: pd.DataFrame            # per rank and layer call
    layer: pd.DataFrame            # per (format, batch)
    comm: pd.DataFrame             # per (format, batch, comm kind)
    notes: list[str] = field(default_factory=list)
    cross_rank: bool = True        # False when the ranks cannot be compared (other cards, other runs)
    lines: list[str] = field(default_factory=list)


def _manifest(capture) -> dict:
    """The manifest as plain JSON data (the typed contract keeps extra keys such as `ranks`)."""
    m = capture.manifest
    return m.to_json() if hasattr(m, "to_json") else dict(m)


def has_ranks(kernels: pd.DataFrame) -> bool:
    return RANK_COLUMN in kernels.columns and kernels[RANK_COLUMN].notna().any()


def call_table(kernels: pd.DataFrame) -> pd.DataFrame:
    """Per (format, batch, repeat, rank): span, compute/comm unions, overlap, exposed communication."""
    k = kernels[(kernels["collector"] == "nsys") & kernels["batch"].notna() & kernels["repeat"].notna()
                & kernels[RANK_COLUMN].notna() & kernels["start_ns"].notna() & kernels["duration_ns"].notna()].copy()
    cols = ["format", "batch", "repeat", "rank", "span_ns", "compute_ns", "comm_ns", "busy_ns", "overlap_ns",
            "comm_exposed_ns", "comm_kernel_sum_ns", "kernels"]
    if k.empty:
        return pd.DataFrame(columns=cols)
    k["start"] = k["start_ns"].astype("float64")
    k["end"] = k["start"] + k["duration_ns"].astype("float64")
    k["comm"] = [is_comm(n) for n in k["kernel_name"].astype(str)]
    rows = []
    for (fmt, b, rep, r), g in k.groupby(["format", "batch", "repeat", RANK_COLUMN], sort=True):
        c, m = g[~g["comm"]], g[g["comm"]]
        u_c = union_ns(c["start"].to_numpy(), c["end"].to_numpy())
        u_m = union_ns(m["start"].to_numpy(), m["end"].to_numpy())
        u_all = union_ns(g["start"].to_numpy(), g["end"].to_numpy())
        rows.append({"format": fmt, "batch": int(b), "repeat": int(rep), "rank": int(r),
                     "span_ns": float(g["end"].max() - g["start"].min()), "compute_ns": u_c, "comm_ns": u_m,
                     "busy_ns": u_all, "overlap_ns": u_c + u_m - u_all, "comm_exposed_ns": u_all - u_c,
                     "comm_kernel_sum_ns": float(m["duration_ns"].sum()), "kernels": len(g)})
    return pd.DataFrame(rows, columns=cols)


def _comm_bytes(workload: dict, batch: int, kind: str) -> float | None:
    """Bytes one rank sends per call for a collective of the sharded layer (roofline/comm.py)."""
    from moeprof.roofline.comm import allreduce_bytes_per_rank, alltoall_bytes_per_rank

    h, k = workload.get("hidden_size"), workload.get("top_k")
    tp, ep = int(workload.get("tp") or 1), int(workload.get("ep") or 1)
    if not h or not k:
        return None
    if kind == "allreduce" and tp > 1:
        return allreduce_bytes_per_rank(batch / ep * h * 2, tp)
    if kind == "alltoall" and ep > 1:
        return 2 * alltoall_bytes_per_rank(k * batch / ep * h * 2, ep)  # dispatch + collect
    return None


def check_ranks(capture, kernels: pd.DataFrame) -> tuple[int, list[int], list[str], bool]:
    """(world size, ranks with kernels, one line per problem, whether ranks can be compared)."""
    m = _manifest(capture)
    info = m.get("ranks") if isinstance(m.get("ranks"), dict) else {}
    present = sorted(int(r) for r in kernels[RANK_COLUMN].dropna().unique())
    world = int(info.get("world_size") or (m.get("workload") or {}).get("world_size") or (max(present) + 1 if present else 0))
    notes: list[str] = []
    missing = [r for r in range(world) if r not in present]
    failed = ((m.get("collectors") or {}).get("nsys") or {}).get("ranks_failed") or {}
    if missing:
        why = "; ".join(f"{k}: {v}" for k, v in failed.items()) or "no report in the folder"
        notes.append(f"ranks missing: {', '.join(map(str, missing))} of {world} have no kernels ({why}); "
                     f"cross-rank figures use the ranks present and are lower bounds")
    elif failed:
        notes.append("some rank reports could not be read: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    extra = [r for r in present if r >= world]
    if extra:
        notes.append(f"kernels carry rank(s) {', '.join(map(str, extra))} beyond the world size {world}: dropped")
    comparable = True
    per = info.get("per_rank") or {}
    cards = {str(v.get("gpu_name")) for v in per.values() if isinstance(v, dict) and v.get("gpu_name")}
    if len(cards) > 1:
        comparable = False
        notes.append("ranks ran on different GPUs (" + ", ".join(
            f"rank {r}: {v.get('gpu_name')}" for r, v in sorted(per.items())) + "): no cross-rank imbalance, "
            "slowest rank or wall time; per-rank tables only")
    runs = {str(v.get("run_id")) for v in per.values() if isinstance(v, dict) and v.get("run_id")}
    if len(runs) > 1:
        comparable = False
        notes.append(f"ranks come from different runs (run ids {', '.join(sorted(runs))}): not merged across ranks; "
                     f"per-rank tables only")
    return world, [r for r in present if r < world], notes, comparable


def analyze_ranks(capture, kernels: pd.DataFrame | None = None) -> RankAnalysis:
    k = capture.kernels if kernels is None else kernels
    world, present, notes, comparable = check_ranks(capture, k)
    k = k[k[RANK_COLUMN].isin(present)]
    calls = call_table(k)
    w = _manifest(capture).get("workload") or {}
    layer_rows, comm_rows = [], []
    for (fmt, b), g in calls.groupby(["format", "batch"], sort=True):
        per_call = g.groupby("repeat")["rank"].nunique()
        full = per_call[per_call == len(present)].index
        short = [r for r in present if g[g["rank"] == r]["repeat"].nunique() < g["repeat"].nunique()]
        if short:
            notes.append(f"{fmt}/{b}: rank(s) {', '.join(map(str, short))} have fewer layer calls than the others "
                         f"(report cut short?); cross-rank figures use the {len(full)} calls every rank has")
        gg = g[g["repeat"].isin(full)]
        row = {"format": fmt, "batch": int(b), "calls": len(full),
               "compute_ns": float(gg.groupby("repeat")["compute_ns"].max().median()) if len(gg) else np.nan,
               "comm_ns": float(gg["comm_ns"].median()) if len(gg) else np.nan,
               "comm_exposed_ns": float(gg["comm_exposed_ns"].median()) if len(gg) else np.nan,
               "overlap_ns": float(gg["overlap_ns"].median()) if len(gg) else np.nan,
               "wall_ns": np.nan, "slowest_rank": pd.NA, "imbalance": np.nan}
        if comparable and len(gg):
            by = gg.pivot(index="repeat", columns="rank", values="span_ns")
            row["wall_ns"] = float(by.max(axis=1).median())
            row["slowest_rank"] = Counter(by.idxmax(axis=1)).most_common(1)[0][0]
            comp = gg.pivot(index="repeat", columns="rank", values="compute_ns")
            row["imbalance"] = float((comp.max(axis=1) / comp.mean(axis=1)).median())
        layer_rows.append(row)
    kc = k[(k["collector"] == "nsys") & k["repeat"].notna() & k["batch"].notna()]
    if len(kc):
        kinds = [comm_kind(n, p) for n, p in zip(kc["kernel_name"].astype(str), kc["phase"].astype(str))]
        kc = kc.assign(kind=kinds)
        kc = kc[kc["kind"] != ""]
        for (fmt, b, kind), g in kc.groupby(["format", "batch", "kind"], sort=True):
            per = g.groupby(["repeat", RANK_COLUMN])["duration_ns"].sum().unstack()
            per = per.dropna() if comparable else per
            t_min = float(per.min(axis=1).median()) if len(per) else np.nan
            nbytes = _comm_bytes(w, int(b), kind)
            comm_rows.append({"format": fmt, "batch": int(b), "kind": kind, "kernels_per_call": len(g) / max(1, len(per)) / max(1, len(present)),
                              "time_ns": t_min, "bytes_per_rank": nbytes,
                              "bus_gbps": nbytes / t_min if nbytes and t_min > 0 else np.nan})
    ra = RankAnalysis(world, present, calls, pd.DataFrame(layer_rows), pd.DataFrame(comm_rows), notes, comparable)
    ra.lines = summary_lines(ra, capture)
    return ra


def _us(ns: float) -> str:
    return "n/a" if ns != ns else f"{ns / 1e3:,.1f} µs"


def summary_lines(ra: RankAnalysis, capture) -> list[str]:
    """Plain words: per batch the layer's wall time across ranks per format, communication, imbalance."""
    w = _manifest(capture).get("workload") or {}
    tp, ep = int(w.get("tp") or 1), int(w.get("ep") or 1)
    lines = [f"{ra.world_size} ranks (tp={tp}, ep={ep}), ranks with kernels: {', '.join(map(str, ra.ranks_present)) or 'none'}"]
    lines += [f"note: {n}" for n in ra.notes]
    if ra.layer.empty:
        return lines + ["no layer calls with NVTX ranges on the nsys timeline of any rank"]
    link = None
    try:
        from moeprof.roofline.gpus import get_gpu

        spec = (_manifest(capture).get("gpu") or {}).get("spec")
        link = get_gpu(spec).link_bytes_per_s if spec else None
    except Exception:  # noqa: BLE001 - an unknown card has no link figure
        link = None
    for b, g in ra.layer.groupby("batch", sort=True):
        key = "wall_ns" if ra.cross_rank else "compute_ns"
        g = g.dropna(subset=[key]).sort_values(key)
        if g.empty:
            lines.append(f"batch {b}: no call that every rank ran")
            continue
        parts = []
        for _, r in g.iterrows():
            s = f"{r['format']} {_us(r[key])}"
            s += f" (comm {_us(r['comm_ns'])}, exposed {_us(r['comm_exposed_ns'])}"
            if ra.cross_rank and r["slowest_rank"] is not pd.NA:
                s += f", slowest rank {r['slowest_rank']}, imbalance {r['imbalance']:.2f}x"
            parts.append(s + ")")
        what = "wall time across ranks" if ra.cross_rank else "compute time of the slowest rank"
        head = f"batch {b}: layer {what}: " + "; ".join(parts)
        if len(g) > 1:
            a, z = g.iloc[0], g.iloc[-1]
            head += f" -> {a['format']} {z[key] / a[key]:.2f}x faster than {z['format']}"
            if a["comm_exposed_ns"] == a["comm_exposed_ns"] and a["comm_exposed_ns"] > 0:
                wo = (z[key] - z["comm_exposed_ns"]) / max(a[key] - a["comm_exposed_ns"], 1.0)
                head += f" ({wo:.2f}x without the exposed communication, which does not depend on the format)"
        lines.append(head)
    for _, c in ra.comm.iterrows():
        if c["bus_gbps"] == c["bus_gbps"]:
            ref = f" ({c['bus_gbps'] * 1e9 / link:.0%} of the {link / 1e9:.0f} GB/s NVLink figure)" if link else ""
            lines.append(f"{c['format']}/{c['batch']} {c['kind']}: {c['bytes_per_rank'] / 1e6:.2f} MB per rank in "
                         f"{_us(c['time_ns'])} (fastest rank): bus bandwidth {c['bus_gbps']:.1f} GB/s{ref}")
    return lines


def single_rank_kernels(kernels: pd.DataFrame, rank: int = 0) -> pd.DataFrame:
    """One rank's rows per collector (the per-format, per-role tables of the single-GPU analysis read one
    rank): `rank` where the collector saw it, else the collector's lowest rank (ncu profiles one chosen rank)."""
    if not has_ranks(kernels):
        return kernels
    ranks = kernels[RANK_COLUMN]
    keep = ranks.isna().to_numpy(copy=True)
    for _, g in kernels.groupby("collector", sort=False):
        seen = g[RANK_COLUMN].dropna()
        if seen.empty:
            continue
        r = rank if (seen == rank).any() else int(seen.min())
        keep |= (kernels.index.isin(g.index) & (ranks == r)).to_numpy()
    return kernels[keep]


def counter_rank(kernels: pd.DataFrame) -> int | None:
    """The rank ncu profiled, where the capture has ncu rows with a rank."""
    r = kernels.loc[kernels["collector"] == "ncu", RANK_COLUMN].dropna() if RANK_COLUMN in kernels else pd.Series([], dtype=float)
    return int(r.min()) if len(r) else None


COMM_ROLE_PHASES = tuple(COMM_PHASES)
