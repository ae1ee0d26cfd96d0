"""Kernels replayed from a CUDA graph (nsys --cuda-graph-trace=node) are attributed to the NVTX range
open at the graph launch. Fixture: examples/graph_replay.py captured on an H200 (tests/fixtures/README.md)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from moeprof.profiler.collectors import nsys

FIX = Path(__file__).parent / "fixtures" / "nsys_graph_replay.sqlite"
REPLAYS = 4  # --repeats of the capture command


def _sql(query: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{FIX}?mode=ro", uri=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


# Independent of the reader: kernels whose launching runtime call is a graph launch, and the NVTX
# push/pop range (eventType 59) on the launching thread that encloses that call, straight from SQL.
GRAPH_KERNELS = """
SELECT k.start, n.text FROM CUPTI_ACTIVITY_KIND_KERNEL k
JOIN CUPTI_ACTIVITY_KIND_RUNTIME r ON r.correlationId = k.correlationId
JOIN StringIds s ON s.id = r.nameId
LEFT JOIN NVTX_EVENTS n ON n.eventType = 59 AND n.globalTid = r.globalTid AND n.start <= r.start AND r.start < n."end"
     AND n.text LIKE 'moe/%'
WHERE s.value LIKE 'cudaGraphLaunch%'"""

EAGER_COUNTS = """
SELECT n.text, COUNT(*) FROM CUPTI_ACTIVITY_KIND_KERNEL k
JOIN CUPTI_ACTIVITY_KIND_RUNTIME r ON r.correlationId = k.correlationId
JOIN NVTX_EVENTS n ON n.eventType = 59 AND n.globalTid = r.globalTid AND n.start <= r.start AND r.start < n."end"
WHERE n.text LIKE 'eager/%/%' AND n.text NOT LIKE 'eager/%/%/%'
GROUP BY n.text"""


def test_graph_replayed_kernels_take_the_range_open_at_the_graph_launch():
    k = nsys.read_kernels(FIX)
    graph = dict(_sql(GRAPH_KERNELS))
    assert len(graph) == 196 and None not in graph.values()  # every replay was launched inside a moe/ range
    got = k.set_index("start_ns").loc[sorted(graph)]
    assert (got["nvtx_path"] == [graph[s] for s in sorted(graph)]).all()
    assert set(k.loc[k["format"] != "", "start_ns"]) == set(graph)  # nothing else is labelled moe/
    eager = {name.split("/", 1)[1]: n for name, n in _sql(EAGER_COUNTS)}
    assert set(eager) == {"bf16/1", "bf16/64", "fp8/1", "fp8/64"}
    for (fmt, batch), g in k[k["format"] != ""].groupby(["format", "batch"]):
        per_replay = g.groupby("repeat").size()
        # each replay ran the kernels of one eager call of the same layer, once
        assert list(per_replay.index) == list(range(REPLAYS)), (fmt, batch)
        assert (per_replay == eager[f"{fmt}/{batch}"]).all(), (fmt, batch, per_replay.tolist())
        assert (g["phase"] == "").all()  # a graph replay has no per-phase ranges
    # attribution by the launch call, not by GPU time: some replayed kernels ran after the range
    # around graph.replay() was popped, and still carry it
    late = _sql(GRAPH_KERNELS.replace("SELECT k.start, n.text", "SELECT COUNT(*)") + ' AND k.start >= n."end"')[0][0]
    assert late > 0
