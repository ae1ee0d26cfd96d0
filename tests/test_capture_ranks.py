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


def test_sharded_sweep_through_torchrun_on_cpu(monkeypatch, tmp_path):
    """The whole --ep path but the profilers: torchrun starts 2 gloo ranks of the point runner (ep: it
    also runs the dispatch/collect all-to-alls; tp's all-reduce is in test_models_sharded.py)."""
    tp, ep = 1, 2
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


def _reader(rep):
    """Per-rank reader over the real nsys export fixture (an H200 nsys 2025.3.1 sqlite)."""
    from moeprof.profiler.collectors import nsys as nsys_mod

    sql = rep.with_suffix(".sqlite")
    return nsys_mod.read_kernels(sql), [sql], dd.session_start_ns(sql)


def test_rank_reports_merged_on_one_clock_and_truncated_rank_reported(tmp_path):
    import sqlite3
    from pathlib import Path

    fix = Path(__file__).parent / "fixtures" / "nsys_nested.sqlite"
    base = tmp_path / "fp8_b64"
    for r in range(3):
        shutil_copy = dd.rank_file(base, r, ".sqlite")
        shutil_copy.write_bytes(fix.read_bytes())
        dd.rank_file(base, r, ".nsys-rep").write_bytes(b"")
    # rank 1's session started 5 us after rank 0's; rank 2's export is cut short
    con = sqlite3.connect(dd.rank_file(base, 1, ".sqlite"))
    con.execute("UPDATE TARGET_INFO_SESSION_START_TIME SET utcEpochNs = utcEpochNs + 5000")
    con.commit()
    con.close()
    data = dd.rank_file(base, 2, ".sqlite").read_bytes()
    dd.rank_file(base, 2, ".sqlite").write_bytes(data[:len(data) // 3])
    k, files, failed = dd.rank_kernels(_reader, base, 4, None)
    assert sorted(failed) == [2, 3]
    assert failed[3] == "no report fp8_b64.rank3.nsys-rep"
    assert failed[2] == "fp8_b64.rank2.nsys-rep: unreadable (DatabaseError: database disk image is malformed)"
    assert sorted(k["rank"].unique()) == [0, 1]
    k0, k1 = k[k["rank"] == 0].reset_index(drop=True), k[k["rank"] == 1].reset_index(drop=True)
    assert len(k0) == len(k1) == 42
    assert ((k1["start_ns"] - k0["start_ns"]) == 5000).all()  # same run, clock moved by the session offset


def test_sharded_sweep_reads_one_report_per_rank(monkeypatch, tmp_path):
    """The --tp 2 sweep's nsys path: the torchrun command, per-rank statuses and per-rank reports (the real
    H200 export fixture standing in for each rank's nsys output), merged into kernels.csv with `rank`."""
    import importlib.util
    import shutil
    from pathlib import Path

    fix = Path(__file__).parent / "fixtures" / "nsys_nested.sqlite"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "torch" else real(n, *a))
    monkeypatch.setattr(cap, "describe_machine", lambda timeout=300: {
        "gpu": {"name": "NVIDIA H200", "spec": "h200-sxm", "compute_capability": "9.0"},
        "software": {"torch": "2.11.0"}, "cuda_available": True})
    monkeypatch.setattr(cap.tools, "find_nsys", lambda: "/fake/nsys")
    monkeypatch.setattr(cap.tools, "tool_version", lambda path, env=None: "2025.3.1.0")
    seen = []

    def run(cmd, log, env, timeout):
        seen.append((cmd, env))
        spec = json.loads(Path(cmd[-1]).read_text())
        pattern = cmd[cmd.index("-o") + 1]
        for r in range(2):
            rep = Path(pattern.replace("%q{RANK}", str(r)) + ".nsys-rep")
            rep.write_bytes(b"rep")
            shutil.copy(fix, rep.with_suffix(".sqlite"))
            with open(spec["status"] + f".rank{r}", "a") as f:
                for b in spec["batches"]:
                    f.write(json.dumps({"batch": b, "status": "ok", "rank": r, "layer_time_ns": [100.0 + r, 90.0],
                                        "gpu_name": "NVIDIA H200", "run_id": spec["run_id"], "kernel": "k",
                                        "experts_touched": 3}) + "\n")
        log.write_text("done\n")
        return 0, "done\n"

    monkeypatch.setattr(cap, "_run_logged", run)
    monkeypatch.setattr(cap.nsys_mod, "export_sqlite", lambda nsys, rep, env=None, timeout=0: rep.with_suffix(".sqlite"))
    out = tmp_path / "c"
    m = cap.capture(cap.CaptureConfig(out=out, formats=["fp8"], batches=[256], shape=SHAPE, tp=2, collect=["nsys"],
                                      repeats=2, quiet=True))
    (cmd, env), = seen
    assert cmd[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--no-python"]
    assert cmd[6:8] == ["/fake/nsys", "profile"] and cmd[cmd.index("-o") + 1].endswith("raw/nsys/fp8_b256.rank%q{RANK}")
    assert env["NCCL_NVLS_ENABLE"] == "0" and env["NVSHMEM_DISABLE_NVLS"] == "1"
    assert m["status"] == "complete" and m["collectors"]["nsys"]["status"] == "ok"
    assert m["collectors"]["nsys"]["files"] == [f"raw/nsys/fp8_b256.rank{r}.{x}" for r in (0, 1) for x in ("nsys-rep", "sqlite")]
    k = cap.CaptureFolder(out, {}).read_kernels()  # the kernel table in its stored form (Parquet or CSV)
    # 18 = kernels launched inside the fixture's `fp8` NVTX ranges (sqlite join of kernels, their runtime
    # launch and the NVTX ranges open on the launching thread), once per rank
    assert k.groupby("rank").size().to_dict() == {0: 18, 1: 18} and set(k["format"]) == {"fp8"}
    pts = pd.read_csv(out / "points.csv")
    assert pts["layer_time_ns"].tolist() == [101.0, 90.0]  # the slower rank of each repeat
    assert m["ranks"]["per_rank"]["1"]["gpu_name"] == "NVIDIA H200"
