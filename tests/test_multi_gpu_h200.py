"""Cross-rank analysis on real 2-GPU captures (tests/data/multi_gpu_h200, see its README).

tp2 and ep2 are the tensor- and expert-parallel gpt-oss-120b layer (fp8, mxfp4; batch 1, 64, 1024;
5 calls per point) captured with nsys, one report per rank, on two NVLink-connected H200s. Expected
values are recomputed here from the raw kernel rows with plain pandas and an interval merge written
in this file, and the communication bytes are derived by hand from the layer shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moeprof.analysis.load import load_capture
from moeprof.analysis.ranks import analyze_ranks
from moeprof.cli import main

DATA = Path(__file__).parent / "data" / "multi_gpu_h200"
HIDDEN, TOP_K = 2880, 4          # gpt-oss-120b
BF16_BYTES = 2


def _merged_length(intervals: list[tuple[float, float]]) -> float:
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + ((cur_e - cur_s) if cur_e is not None else 0.0)


def _rows(name: str) -> pd.DataFrame:
    k = load_capture(DATA / name).kernels
    k = k[k["collector"] == "nsys"].copy()
    k["end"] = k["start_ns"].astype("float64") + k["duration_ns"].astype("float64")
    return k


@pytest.mark.parametrize("name,kind", [("tp2", "allreduce"), ("ep2", "alltoall")])
def test_both_ranks_and_their_collective_are_found(name: str, kind: str) -> None:
    k = _rows(name)
    assert sorted(k["rank"].dropna().astype(int).unique()) == [0, 1]
    nccl = k[k["kernel_name"].astype(str).str.startswith("ncclDevKernel")]
    assert len(nccl) > 0
    ra = analyze_ranks(load_capture(DATA / name))
    assert ra.world_size == 2 and ra.ranks_present == [0, 1]
    assert set(ra.comm["kind"]) == {kind}


@pytest.mark.parametrize("name", ["tp2", "ep2"])
def test_layer_wall_time_is_the_slowest_ranks_span(name: str) -> None:
    k = _rows(name)
    ra = analyze_ranks(load_capture(DATA / name))
    for (fmt, batch), g in k.groupby(["format", "batch"]):
        span = g.groupby(["repeat", "rank"]).apply(lambda x: x["end"].max() - x["start_ns"].min(), include_groups=False)
        wall = float(span.unstack().max(axis=1).median())
        row = ra.layer[(ra.layer["format"] == fmt) & (ra.layer["batch"] == batch)].iloc[0]
        assert row["wall_ns"] == pytest.approx(wall, rel=1e-12), (fmt, batch)


@pytest.mark.parametrize("name", ["tp2", "ep2"])
def test_exposed_communication_is_the_union_outside_compute(name: str) -> None:
    k = _rows(name)
    k["comm"] = k["kernel_name"].astype(str).str.startswith("ncclDevKernel")
    ra = analyze_ranks(load_capture(DATA / name))
    for (fmt, batch), g in k.groupby(["format", "batch"]):
        exposed = []
        for _, c in g.groupby(["repeat", "rank"]):
            every = _merged_length(list(zip(c["start_ns"].astype(float), c["end"])))
            compute = _merged_length(list(zip(c.loc[~c["comm"], "start_ns"].astype(float), c.loc[~c["comm"], "end"])))
            exposed.append(every - compute)
        row = ra.layer[(ra.layer["format"] == fmt) & (ra.layer["batch"] == batch)].iloc[0]
        assert row["comm_exposed_ns"] == pytest.approx(float(np.median(exposed)), rel=1e-9), (fmt, batch)


def test_communication_bytes_per_rank_hand_derived() -> None:
    # TP 2, ring all-reduce of the bf16 [1024, 2880] output: 2 (N-1)/N x 1024 x 2880 x 2 bytes per rank.
    tp = analyze_ranks(load_capture(DATA / "tp2")).comm
    assert tp[(tp["format"] == "fp8") & (tp["batch"] == 1024)]["bytes_per_rank"].iloc[0] == 5_898_240
    # EP 2, dispatch + combine, each (N-1)/N x top_k x (1024 / 2) tokens x 2880 x 2 bytes.
    ep = analyze_ranks(load_capture(DATA / "ep2")).comm
    assert ep[(ep["format"] == "mxfp4") & (ep["batch"] == 1024)]["bytes_per_rank"].iloc[0] == 2 * 0.5 * TOP_K * 512 * HIDDEN * BF16_BYTES


def test_analyze_prints_the_cross_rank_view(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(DATA / "ep2")]) == 0
    out = capsys.readouterr().out
    assert "Across ranks" in out and "imbalance" in out and "alltoall" in out


def test_json_carries_the_cross_rank_view(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["analyze", str(DATA / "tp2"), "--format", "json"]) == 0
    ranks = json.loads(capsys.readouterr().out)["ranks"]
    assert ranks["world_size"] == 2 and ranks["ranks_present"] == [0, 1]
    k = _rows("tp2")
    g = k[(k["format"] == "mxfp4") & (k["batch"] == 64)]
    span = g.groupby(["repeat", "rank"]).apply(lambda x: x["end"].max() - x["start_ns"].min(), include_groups=False)
    row = next(r for r in ranks["layer"] if r["format"] == "mxfp4" and r["batch"] == 64)
    assert row["wall_ns"] == pytest.approx(float(span.unstack().max(axis=1).median()), rel=1e-12)
    assert {c["kind"] for c in ranks["communication"]} == {"allreduce"}


def test_ncu_counters_of_the_profiled_rank_reach_the_tables() -> None:
    from moeprof.analysis.pipeline import analyze

    cap = load_capture(DATA / "ep2_ncu_rank1")
    k = cap.kernels
    ncu = k[k["collector"] == "ncu"]
    assert set(ncu["rank"].dropna().astype(int)) == {1}  # ncu ran on rank 1 alone
    a = analyze(cap)
    row = a.layer[(a.layer["format"] == "mxfp4") & (a.layer["batch"] == 64)].iloc[0]
    # Tensor-op counters of rank 1's expert GEMMs, summed here from the raw rows: BF16 MMAs only.
    gemms = ncu[ncu["phase"].isin(["gemm1", "gemm2"])]
    bf16_ops = gemms["tensor_ops_bf16_hgmma"].fillna(0).sum() + gemms["tensor_ops_bf16_hmma"].fillna(0).sum()
    assert bf16_ops > 0 and gemms["tensor_ops_fp8"].fillna(0).sum() == 0 and gemms["tensor_ops_fp16"].fillna(0).sum() == 0
    assert row["tensor_path"] == "bf16"
    assert any("rank 1" in n for n in a.notes)


def test_external_torchrun_program_gets_a_kernel_report_with_communication(capsys: pytest.CaptureFixture[str]) -> None:
    from moeprof.analysis.foreign import kernel_report

    cap = load_capture(DATA / "external_ranks2")
    k = cap.kernels
    assert sorted(k["rank"].dropna().astype(int).unique()) == [0, 1]
    nccl = k[k["kernel_name"].astype(str).str.startswith("ncclDevKernel_AllReduce")]
    assert len(nccl) == 2 * 20  # twenty all-reduces on each of the two ranks
    assert main(["analyze", str(DATA / "external_ranks2")]) == 0
    out = capsys.readouterr().out
    assert "communication" in out and "ncclDevKernel" in out
