"""Cross-rank analysis: interval unions, exposed communication, slowest rank, imbalance, bus bandwidth,
and bad multi-rank input.

The multi-rank fixture is SYNTHESIZED from single-GPU rows until a real 2-GPU capture exists: rank 0
is the real nsys rows of tests/data/example_slice (H100, fp8 and mxfp4 at batch 64, unchanged), rank 1
the same calls with their timeline stretched 1.5x about each call's start (a slower rank, as an
overloaded EP rank would be), and each rank gets one NCCL all-reduce kernel per call, placed to
overlap the call's last kernel by 1000 ns and to last 30000 ns. Expected values are derived by hand
from those placements and checked against a 1-ns boolean timeline, not from the code under test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moeprof.analysis.load import load_capture
from moeprof.analysis.ranks import analyze_ranks, comm_kind, union_ns
from moeprof.cli import main

SLICE = Path(__file__).parent / "data" / "example_slice"
AR = "ncclDevKernel_AllReduce_Sum_bf16_RING_LL"
OVERLAP, COMM = 1000, 30000
STRETCH = 1.5


def _real_rows() -> pd.DataFrame:
    k = load_capture(SLICE).kernels
    k = k[(k["collector"] == "nsys") & (k["batch"] == 64) & k["format"].isin(["fp8", "mxfp4"]) & (k["repeat"] < 3)]
    return k.copy()


def _rank_rows(k: pd.DataFrame, rank: int, stretch: float) -> pd.DataFrame:
    parts = []
    for (fmt, rep), g in k.groupby(["format", "repeat"]):
        g = g.copy()
        t0 = int(g["start_ns"].min())
        g["start_ns"] = (t0 + (g["start_ns"] - t0) * stretch).round().astype("int64")
        g["duration_ns"] = (g["duration_ns"] * stretch).round()  # whole ns, like the start times
        end = float((g["start_ns"] + g["duration_ns"]).max())
        comm = g.iloc[[0]].copy()
        comm["phase"], comm["kernel_name"], comm["nvtx_path"] = "allreduce", AR, f"moe/{fmt}/64/allreduce"
        comm["start_ns"], comm["duration_ns"] = int(end - OVERLAP), float(COMM)
        parts += [g, comm]
    return pd.concat(parts).assign(rank=rank)


def _write(folder: Path, k: pd.DataFrame, per_rank: dict | None = None, world: int = 2) -> Path:
    folder.mkdir(parents=True)
    m = json.loads((SLICE / "manifest.json").read_text())
    m["workload"].update(tp=2, ep=1, world_size=world)
    m["ranks"] = {"world_size": world, "run_id": "r1", "per_rank": per_rank or {
        str(r): {"gpu_name": m["gpu"]["name"], "run_id": "r1"} for r in range(world)}}
    (folder / "manifest.json").write_text(json.dumps(m))
    k.to_csv(folder / "kernels.csv", index=False)
    shutil.copy(SLICE / "points.csv", folder / "points.csv")
    return folder


@pytest.fixture(scope="module")
def real():
    return _real_rows()


def _two_ranks(real):
    return pd.concat([_rank_rows(real, 0, 1.0), _rank_rows(real, 1, STRETCH)], ignore_index=True)


def _timeline_union(starts, ends) -> int:
    t0 = int(min(starts))
    line = np.zeros(int(max(ends)) - t0 + 1, dtype=bool)
    for s, e in zip(starts, ends):
        line[int(s) - t0:int(e) - t0] = True
    return int(line.sum())


def test_union_by_hand():
    assert union_ns(np.array([0, 5, 20]), np.array([10, 12, 30])) == 22
    assert union_ns(np.array([0, 2]), np.array([10, 3])) == 10  # nested
    assert union_ns(np.array([]), np.array([])) == 0


def test_comm_kinds():
    assert comm_kind(AR) == "allreduce"
    assert comm_kind("ncclKernel_AllReduce_RING_LL_Sum_bfloat16") == "allreduce"
    assert comm_kind("ncclDevKernel_SendRecv", "dispatch") == "alltoall"
    assert comm_kind("ncclDevKernel_SendRecv", "") == "sendrecv"
    assert comm_kind("_moe_gemm_kernel", "gemm1") == ""


def test_exposed_overlap_slowest_and_imbalance(real, tmp_path):
    folder = _write(tmp_path / "c", _two_ranks(real))
    ra = analyze_ranks(load_capture(folder))
    assert ra.world_size == 2 and ra.ranks_present == [0, 1] and ra.cross_rank and not ra.notes
    c = ra.calls.set_index(["format", "repeat", "rank"])
    for (fmt, rep), g in real.groupby(["format", "repeat"]):
        ends = (g["start_ns"] + g["duration_ns"]).to_numpy()
        last = g.iloc[int(np.argmax(ends))]
        assert last["duration_ns"] > OVERLAP  # so the all-reduce's first 1000 ns sit under compute
        u0 = _timeline_union(g["start_ns"], ends)
        r0, r1 = c.loc[(fmt, rep, 0)], c.loc[(fmt, rep, 1)]
        assert r0["compute_ns"] == pytest.approx(u0, abs=2)
        assert r1["compute_ns"] == pytest.approx(STRETCH * u0, abs=len(g) * 2)
        for r in (r0, r1):
            assert r["comm_ns"] == COMM and r["overlap_ns"] == pytest.approx(OVERLAP)
            assert r["comm_exposed_ns"] == pytest.approx(COMM - OVERLAP)
        span0 = ends.max() - g["start_ns"].min()
        assert r0["span_ns"] == pytest.approx(span0 - OVERLAP + COMM)
        assert r1["span_ns"] == pytest.approx(STRETCH * span0 - OVERLAP + COMM, abs=2)
    lay = ra.layer.set_index("format")
    for fmt in ("fp8", "mxfp4"):
        assert lay.loc[fmt, "slowest_rank"] == 1
        assert lay.loc[fmt, "imbalance"] == pytest.approx(STRETCH / ((1 + STRETCH) / 2), rel=1e-4)  # 1.2
        assert lay.loc[fmt, "comm_exposed_ns"] == pytest.approx(COMM - OVERLAP)
    # tp=2 all-reduce of bf16 [64, 2880]: 2*(1/2)*64*2880*2 = 368,640 bytes per rank in 30 us
    comm = ra.comm.set_index(["format", "kind"])
    assert comm.loc[("fp8", "allreduce"), "bytes_per_rank"] == 368_640
    assert comm.loc[("fp8", "allreduce"), "bus_gbps"] == pytest.approx(368_640 / 30_000)
    assert any("batch 64: layer wall time across ranks" in ln for ln in ra.lines)


def test_missing_rank_is_one_line_and_rest_analyzed(real, tmp_path):
    folder = _write(tmp_path / "c", _rank_rows(real, 0, 1.0))
    ra = analyze_ranks(load_capture(folder))
    assert ra.ranks_present == [0]
    assert [n for n in ra.notes if n.startswith("ranks missing: 1 of 2")]
    assert ra.layer["calls"].tolist() == [3, 3]


def test_ranks_from_other_cards_or_runs(real, tmp_path):
    k = _two_ranks(real)
    other = {"0": {"gpu_name": "NVIDIA H200", "run_id": "r1"}, "1": {"gpu_name": "NVIDIA H100 80GB HBM3", "run_id": "r1"}}
    ra = analyze_ranks(load_capture(_write(tmp_path / "a", k, other)))
    assert not ra.cross_rank and ra.layer["wall_ns"].isna().all()
    assert [n for n in ra.notes if n.startswith("ranks ran on different GPUs (rank 0: NVIDIA H200, rank 1: NVIDIA H100")]
    runs = {"0": {"gpu_name": "g", "run_id": "a"}, "1": {"gpu_name": "g", "run_id": "b"}}
    ra = analyze_ranks(load_capture(_write(tmp_path / "b", k, runs)))
    assert not ra.cross_rank and [n for n in ra.notes if n.startswith("ranks come from different runs (run ids a, b)")]


def test_truncated_rank_keeps_common_calls(real, tmp_path):
    k = _two_ranks(real)
    k = k[~((k["rank"] == 1) & (k["format"] == "fp8") & (k["repeat"] == 2))]  # rank 1's report ends early
    ra = analyze_ranks(load_capture(_write(tmp_path / "c", k)))
    assert [n for n in ra.notes if n.startswith("fp8/64: rank(s) 1 have fewer layer calls")]
    lay = ra.layer.set_index("format")
    assert lay.loc["fp8", "calls"] == 2 and lay.loc["mxfp4", "calls"] == 3


def test_cli_analyze_prints_the_cross_rank_view(real, tmp_path, capsys):
    folder = _write(tmp_path / "c", _two_ranks(real))
    rc = main(["analyze", str(folder)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "Across ranks:" in out and "fp8/64 allreduce: 0.37 MB per rank" in out
