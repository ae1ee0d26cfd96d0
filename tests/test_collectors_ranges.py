"""NVTX range attachment (vectorized interval logic)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from moeprof.profiler.collectors import ranges


def _r(rows):
    return pd.DataFrame(rows, columns=["tid", "start", "end", "name"])


def test_nesting_boundaries_and_threads():
    rg = _r([
        (1, 0, 100, "moe"), (1, 0, 100, "bf16"), (1, 1, 99, "8"),
        (1, 2, 50, "route"), (1, 50, 98, "gemm1"),
        (2, 0, 1000, "other"),
        (1, 200, None, "open"),  # never popped
    ])
    L = pd.DataFrame({"tid": [1, 1, 1, 1, 1, 1, 2, 3, 1], "t": [0, 2, 49, 50, 98, 99, 10, 10, 500]})
    a = ranges.attach(L, rg)
    assert a["nvtx_path"].tolist() == [
        "moe/bf16",              # both start at 0, the longer one outside
        "moe/bf16/8/route",      # start inclusive
        "moe/bf16/8/route",
        "moe/bf16/8/gemm1",      # end exclusive: route closed, gemm1 open at 50
        "moe/bf16/8",            # gemm1 closed at 98
        "moe/bf16",
        "other", "", "open",
    ]
    cs = a["call_start"]
    assert cs.iloc[1] == 1 and cs.iloc[3] == 1 and pd.isna(cs.iloc[0]) and pd.isna(cs.iloc[6])


def test_split_path_and_repeats():
    paths = pd.Series(["moe/fp8/16/gemm1", "step/moe/bf16/2048", "other/x", "", "moe/fp8/x/gemm1"])
    s = ranges.split_path(paths)
    assert s["format"].tolist() == ["fp8", "bf16", "", "", ""]
    assert s["batch"].tolist()[:2] == [16, 2048] and s["batch"].isna().tolist()[2:] == [True] * 3
    assert s["phase"].tolist() == ["gemm1", "", "", "", ""]
    # per-expert loops revisit gemm1 within one call; only a new 'route' starts a new call
    df = pd.DataFrame({"format": ["a"] * 8, "batch": [1] * 8,
                       "phase": ["route", "route", "gemm1", "gemm2", "gemm1", "route", "gemm1", "gemm1"]})
    assert ranges.number_repeats_by_phase(df).tolist() == [0, 0, 0, 0, 0, 1, 1, 1]


def test_million_launches_vectorized():
    # 100k layer calls (4-deep + 3 phases) and 1M kernel launches
    n_calls, per_phase = 100_000, 3
    t0 = np.arange(n_calls, dtype=np.int64) * 1000
    rows = {"tid": [], "start": [], "end": [], "name": []}
    for name, s, e in (("moe", 0, 900), ("bf16", 1, 899), ("64", 2, 898), ("route", 3, 300), ("gemm1", 300, 600),
                       ("gemm2", 600, 897)):
        rows["tid"].append(np.full(n_calls, 7)); rows["start"].append(t0 + s); rows["end"].append(t0 + e)
        rows["name"].append(np.full(n_calls, name, dtype=object))
    rg = pd.DataFrame({k: np.concatenate(v) for k, v in rows.items()})
    offs = np.array([10, 20, 30, 310, 320, 330, 610, 620, 630, 950])  # last one outside the call
    lt = (t0[:, None] + offs[None, :]).ravel()
    L = pd.DataFrame({"tid": np.full(len(lt), 7), "t": lt})
    t = time.perf_counter()
    a = ranges.attach(L, rg)
    took = time.perf_counter() - t
    assert len(a) == 1_000_000
    assert took < 30, took
    assert (a["nvtx_path"].iloc[:10].tolist() == ["moe/bf16/64/route"] * 3 + ["moe/bf16/64/gemm1"] * 3
            + ["moe/bf16/64/gemm2"] * 3 + [""])
    assert a["call_start"].iloc[-2] == t0[-1] + 2
