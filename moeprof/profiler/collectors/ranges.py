"""Attach kernel launches to the NVTX push/pop ranges open on the launching thread (vectorized).

Push/pop ranges nest properly per thread, so between two consecutive range boundaries on a
thread the open stack is constant. We compute each range's full path (parent path + name, one
vectorized pass per nesting level), turn every boundary into a "segment" carrying the path of the
innermost range open after it, and merge_asof each launch onto the last boundary at or before it.
Cost: O((ranges + launches) log n); 1M launches take a few seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from moeprof.capture_folder import NVTX_ROOT, PHASES
from moeprof.capture_folder.labels import split_path  # noqa: F401  (the NVTX path grammar; collectors use it from here)

_OPEN_END = np.iinfo(np.int64).max // 4  # end of a range never popped
_LAYER_RE = rf"(?:^|/){NVTX_ROOT}/[^/]+/\d+$"


def range_paths(ranges: pd.DataFrame) -> pd.DataFrame:
    """ranges: tid, start, end, name (end may be NA: never popped). Adds depth, parent, path.

    parent is the row position (0..n-1 after reset_index) of the enclosing range, -1 at top level.
    """
    r = ranges.reset_index(drop=True).copy()
    r["start"] = r["start"].astype("int64")
    r["end"] = pd.to_numeric(r["end"]).fillna(_OPEN_END).astype("int64")
    r["name"] = r["name"].fillna("").astype(str)
    n = len(r)
    if n == 0:
        return r.assign(depth=pd.Series(dtype="int64"), parent=pd.Series(dtype="int64"), path=pd.Series(dtype=str))
    # depth = number of ranges open at this range's start (itself included); at equal times ends go first.
    ev = pd.DataFrame({
        "tid": np.concatenate([r["tid"].to_numpy(), r["tid"].to_numpy()]),
        "t": np.concatenate([r["start"].to_numpy(), r["end"].to_numpy()]),
        "kind": np.concatenate([np.ones(n, np.int8), np.zeros(n, np.int8)]),  # 0 = end, 1 = start
        "delta": np.concatenate([np.ones(n, np.int64), -np.ones(n, np.int64)]),
        "row": np.concatenate([np.arange(n), np.arange(n)]),
        # among equal starts the outer (longer) one opens first
        "neg_end": np.concatenate([-r["end"].to_numpy(), np.zeros(n, np.int64)]),
    })
    ev = ev.sort_values(["tid", "t", "kind", "neg_end"], kind="mergesort")
    ev["depth"] = ev.groupby("tid", sort=False)["delta"].cumsum()
    starts = ev[ev["kind"] == 1]
    r.loc[starts["row"].to_numpy(), "depth"] = starts["depth"].to_numpy()
    r["depth"] = r["depth"].astype("int64")
    # parent: the last range at depth-1 on the same thread that started at or before this one.
    r["_pos"] = np.arange(n)
    r["_order"] = 0
    r.loc[starts["row"].to_numpy(), "_order"] = np.arange(len(starts))  # global start order
    left = r[["tid", "depth", "_order", "_pos"]].sort_values("_order")
    right = r[["tid", "depth", "_order", "_pos"]].rename(columns={"_pos": "parent"})
    right = right.assign(depth=right["depth"] + 1).sort_values("_order")
    m = pd.merge_asof(left, right, on="_order", by=["tid", "depth"], allow_exact_matches=False)
    r.loc[m["_pos"].to_numpy(), "parent"] = m["parent"].fillna(-1).to_numpy()
    r["parent"] = r["parent"].astype("int64")
    # path, one vectorized step per nesting level
    path = r["name"].to_numpy(dtype=object).copy()
    depth = r["depth"].to_numpy()
    parent = r["parent"].to_numpy()
    for d in range(2, int(depth.max()) + 1):
        sel = np.flatnonzero(depth == d)
        par = parent[sel]
        ok = par >= 0
        path[sel[ok]] = path[par[ok]] + "/" + r["name"].to_numpy(dtype=object)[sel[ok]]
    r["path"] = path
    return r.drop(columns=["_pos", "_order"])


def attach(launches: pd.DataFrame, ranges: pd.DataFrame) -> pd.DataFrame:
    """launches: tid, t (launch time on the CPU, same clock as ranges). ranges: tid, start, end, name.

    Returns a frame aligned with `launches` (same index) with columns nvtx_path and call_start:
    the path of the ranges open at t (start <= t < end), '' where none, and the start time of the
    open moe/<format>/<batch> range (the layer call; NA outside one), used to number repeats.
    """
    out = pd.DataFrame(index=launches.index)
    if len(launches) == 0 or len(ranges) == 0:
        out["nvtx_path"] = ""
        out["call_start"] = pd.array([pd.NA] * len(launches), dtype="Int64")
        return out
    r = range_paths(ranges)
    # ranges repeat a few distinct paths: match each once
    codes, uniq = pd.factorize(r["path"].astype(object))
    is_call = pd.Series(np.asarray(uniq, dtype=object)).str.contains(_LAYER_RE, regex=True).to_numpy(dtype=bool)[codes]
    # call_start of each range: its own start if it is a layer call, else inherited from its parent.
    call = np.where(is_call, r["start"].to_numpy(), -1)
    depth = r["depth"].to_numpy()
    parent = r["parent"].to_numpy()
    for d in range(2, int(depth.max()) + 1):
        sel = np.flatnonzero((depth == d) & (call < 0))
        par = parent[sel]
        ok = par >= 0
        call[sel[ok]] = call[par[ok]]
    path = r["path"].to_numpy(dtype=object)
    par_path = np.where(parent >= 0, path[np.maximum(parent, 0)], "")
    par_call = np.where(parent >= 0, call[np.maximum(parent, 0)], -1)
    # boundaries: key 2t for an end, 2t+1 for a start, 2t+1 for a launch: a launch at a range's
    # start is inside it, at its end outside it.
    seg = pd.DataFrame({
        "tid": np.concatenate([r["tid"].to_numpy(), r["tid"].to_numpy()]),
        "key": np.concatenate([2 * r["start"].to_numpy() + 1, 2 * r["end"].to_numpy()]),
        # among equal keys keep the innermost start / the outermost end (last after sorting)
        "tie": np.concatenate([depth, -depth]),
        "nvtx_path": np.concatenate([path, par_path]),
        "call_start": np.concatenate([call, par_call]),
    })
    seg = seg.sort_values(["key", "tie"], kind="mergesort").drop_duplicates(["tid", "key"], keep="last")
    seg_path = seg["nvtx_path"].to_numpy(dtype=object)
    seg_call = seg["call_start"].to_numpy()
    right = pd.DataFrame({"tid": seg["tid"].to_numpy(), "key": seg["key"].to_numpy(), "_s": np.arange(len(seg))})
    left = pd.DataFrame({"tid": launches["tid"].to_numpy(), "key": 2 * launches["t"].astype("int64").to_numpy() + 1,
                         "_i": np.arange(len(launches))}).sort_values("key", kind="mergesort")
    m = pd.merge_asof(left, right, on="key", by="tid", direction="backward").sort_values("_i")
    s = m["_s"].fillna(-1).astype("int64").to_numpy()
    hit = s >= 0
    paths = np.full(len(s), "", dtype=object)
    paths[hit] = seg_path[s[hit]]
    calls = np.full(len(s), -1, dtype=np.int64)
    calls[hit] = seg_call[s[hit]]
    out["nvtx_path"] = paths
    out["call_start"] = pd.array(np.where(calls >= 0, calls, 0), dtype="Int64")
    out.loc[calls < 0, "call_start"] = pd.NA
    return out

def label_launches(k: pd.DataFrame, launched: pd.Series, launches: pd.DataFrame, ranges: pd.DataFrame) -> pd.DataFrame:
    """k with nvtx_path, call_start, format, batch, phase and repeat of each kernel.

    launched: mask of k's rows whose launch is known; launches: their tid and t, in k[launched]'s order
    (see attach); ranges: tid, start, end, name. Rows not launched get '' / NA.
    """
    att = attach(launches, ranges)
    k["nvtx_path"] = ""
    k["call_start"] = pd.array([pd.NA] * len(k), dtype="Int64")
    k.loc[launched, "nvtx_path"] = att["nvtx_path"].to_numpy()
    k.loc[launched, "call_start"] = att["call_start"].to_numpy()
    k = pd.concat([k, split_path(k["nvtx_path"])], axis=1)
    k["repeat"] = number_repeats_by_call(k)
    return k


def number_repeats_by_call(df: pd.DataFrame) -> pd.Series:
    """Repeat index from the start time of each launch's layer-call range, per (format, batch)."""
    rep = pd.Series(pd.NA, index=df.index, dtype="Int64")
    has = df["call_start"].notna() & (df["format"] != "")
    if has.any():
        sub = df.loc[has, ["format", "batch", "call_start"]]
        rep.loc[has] = (sub.groupby(["format", "batch"])["call_start"].rank(method="dense") - 1).astype("int64").to_numpy()
    return rep


def number_repeats_by_phase(df: pd.DataFrame) -> pd.Series:
    """Repeat index without timestamps (ncu): in launch order per (format, batch), a new layer call
    starts where the first phase (route) begins again after other phases."""
    first = PHASES[0]
    rep = pd.Series(pd.NA, index=df.index, dtype="Int64")
    has = df["format"] != ""
    if not has.any():
        return rep
    sub = df.loc[has, ["format", "batch", "phase"]].copy()
    prev = sub.groupby(["format", "batch"])["phase"].shift().fillna(first)
    sub["_new"] = ((sub["phase"] == first) & (prev != first)).astype("int64")
    rep.loc[has] = sub.groupby(["format", "batch"])["_new"].cumsum().astype("int64").to_numpy()
    return rep
