"""Several ranks: torchrun launch of the sharded layer (2 CPU processes, gloo, Triton interpreter), the
merge of per-rank outcomes, the torchrun command splice of external mode, the per-rank exec shim."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from moeprof import capture_folder as schema
from moeprof.cli import main
from moeprof.errors import MoeprofError
from moeprof.profiler import capture as cap
from moeprof.profiler import distributed as dd

SHAPE = dict(hidden_size=64, intermediate_size=128, num_experts=8, top_k=2)


def test_splice_torchrun_script_module_and_no_python():
    launcher, prog = dd.splice_torchrun(["torchrun", "--nproc_per_node", "2", "train.py", "--lr", "1"], 2)
    assert launcher == ["torchrun", "--nproc_per_node", "2", "--no-python"]
    assert prog == [sys.executable, "-u", "train.py", "--lr", "1"]
    launcher, prog = dd.splice_torchrun(["python3", "-m", "torch.distributed.run", "--standalone",
                                         "--nproc_per_node=2", "-m", "pkg.serve", "-x"], 2)
    assert launcher == ["python3", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--no-python"]
    assert prog == [sys.executable, "-u", "-m", "pkg.serve", "-x"]
    launcher, prog = dd.splice_torchrun(["torchrun", "--nproc-per-node", "2", "--no-python", "./bench", "-n", "3"], 2)
    assert launcher == ["torchrun", "--nproc-per-node", "2", "--no-python"] and prog == ["./bench", "-n", "3"]


def test_splice_torchrun_refusals():
    with pytest.raises(MoeprofError, match="must start with torchrun"):
        dd.splice_torchrun(["mpirun", "-n", "2", "prog"], 2)
    with pytest.raises(MoeprofError, match="--ranks 2 but the command starts 4 processes per node"):
        dd.splice_torchrun(["torchrun", "--nproc_per_node", "4", "train.py"], 2)


def test_merge_point_slowest_rank_and_missing_ranks(tmp_path):
    status = tmp_path / "s.jsonl"
    (tmp_path / "s.jsonl.rank0").write_text(
        json.dumps({"batch": 4, "status": "ok", "layer_time_ns": [100.0, 300.0, 50.0]}) + "\n"
        + json.dumps({"batch": 8, "status": "failed", "reason": "OutOfMemoryError: x"}) + "\n")
    (tmp_path / "s.jsonl.rank1").write_text(
        json.dumps({"batch": 4, "status": "ok", "layer_time_ns": [200.0, 100.0]}) + "\n" + '{"batch": 8, "sta')
    per_rank = dd.read_rank_statuses(status, 3)
    assert sorted(per_rank) == [0, 1] and sorted(per_rank[1]) == [4]  # the cut line is dropped
    # per repeat the slowest rank; repeats that not every rank timed are dropped
    assert dd.merge_point(per_rank, 4, 2) == ([200.0, 300.0], "")
    assert dd.merge_point(per_rank, 4, 3) == (None, "rank 2: no outcome (the rank died or was killed)")
    assert dd.merge_point(per_rank, 8, 1) == (None, "rank 0: OutOfMemoryError: x")


def test_on_rank_shim_execs_prefix_on_one_rank_only(tmp_path):
    prefix = [sys.executable, "-c", "import sys; print('PREFIX', sys.argv[1:])"]
    argv = dd.on_rank_argv(1, prefix, ["echo", "plain"])
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = [subprocess.run(argv, env={**env, "RANK": str(r)}, capture_output=True, text=True).stdout.strip()
           for r in (0, 1)]
    assert out == ["plain", "PREFIX ['echo', 'plain']"]


def test_child_env_turns_multicast_off(monkeypatch):
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")
    env = cap._child_env()
    assert (env["NCCL_NVLS_ENABLE"], env["TORCH_SYMM_MEM_DISABLE_MULTICAST"], env["NVSHMEM_DISABLE_NVLS"]) == ("0", "1", "1")


def test_cli_ranks_refusals(tmp_path, capsys):
    assert main(["capture", "--ranks", "2", "-o", str(tmp_path / "a")]) == 2
    assert "--ranks N is for external mode" in capsys.readouterr().err
    assert main(["capture", "--tp", "2", "-o", str(tmp_path / "b"), "--", "python", "x.py"]) == 2
    assert "for a program of your own use --ranks N" in capsys.readouterr().err


@pytest.mark.parametrize("tp,ep", [(2, 1), (1, 2)])
def test_sharded_sweep_through_torchrun_on_cpu(monkeypatch, tmp_path, tp, ep):
    """The whole --tp/--ep path but the profilers: torchrun starts 2 gloo ranks of the point runner."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "torch" else real(n, *a))
    monkeypatch.setattr(cap, "describe_machine", lambda timeout=300: {
        "gpu": {"name": "cpu"}, "software": {"torch": "cpu"}, "cuda_available": True})
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    out = tmp_path / "cap"
    m = cap.capture(cap.CaptureConfig(out=out, formats=["mxfp4"], batches=[1, 6], shape=SHAPE, tp=tp, ep=ep,
                                      collect=[], repeats=2, warmup=1, quiet=True, timeout_s=600))
    assert m["status"] == "complete", (m["points_failed"], (out / "raw/logs").iterdir())
    assert m["workload"]["world_size"] == 2 and m["ranks"]["world_size"] == 2
    assert sorted(m["ranks"]["per_rank"]) == ["0", "1"]
    assert {r["run_id"] for r in m["ranks"]["per_rank"].values()} == {m["ranks"]["run_id"]}
    pts = pd.read_csv(out / schema.POINTS_FILE)
    assert sorted(pts["batch"].unique()) == [1, 6] and len(pts) == 4
    # the point's time is the slower rank's, repeat by repeat
    st = dd.read_rank_statuses(out / "raw/logs/events_mxfp4_b1-6.status.jsonl", 2)
    want = [max(a, b) for a, b in zip(st[0][6]["layer_time_ns"], st[1][6]["layer_time_ns"])]
    assert pts[pts["batch"] == 6]["layer_time_ns"].tolist() == pytest.approx(want)
    if ep > 1:  # tokens split 3 + 3; rows dispatched to a rank add up to all 12 (token, expert) pairs
        assert [st[r][6]["token_range"] for r in (0, 1)] == [[0, 3], [3, 6]]
        assert st[0][6]["rows_received"] + st[1][6]["rows_received"] == 12
