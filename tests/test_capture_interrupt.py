"""Interrupt and resume of `moeprof capture` as processes: a real SIGINT/SIGTERM to a running capture.

The capture runs as its own process group (as a shell job would); only the GPU child is a stand-in
(tests/helpers/fake_point_child.py: sleeps per batch, writes the runner's status lines, leaves a grandchild).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

HELPER = Path(__file__).parent / "helpers" / "fake_gpu_capture.py"
ROOT = Path(__file__).resolve().parent.parent
FORMATS, BATCHES = ["bf16", "fp8", "mxfp4"], [1, 2, 4]
ARGS = ["capture", "-q", "--shape", "64,32,4,2", "-f", ",".join(FORMATS), "-b", ",".join(map(str, BATCHES)),
        "--collect", "", "-r", "3"]


def _env(tmp_path: Path, point_s: float) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(FAKE_POINT_S=str(point_s), FAKE_CALLS=str(tmp_path / "calls.txt"), FAKE_PIDS=str(tmp_path / "pids.txt"))
    return env


def _calls(tmp_path: Path) -> list[tuple[str, int]]:
    f = tmp_path / "calls.txt"
    return [(ln.split()[1], int(ln.split()[2])) for ln in f.read_text().splitlines()] if f.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def _start(tmp_path: Path, out: Path, point_s: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HELPER), *ARGS, "-o", str(out)], env=_env(tmp_path, point_s),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_points(out: Path, n: int, proc: subprocess.Popen, limit_s: float = 60) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        mf = out / "manifest.json"
        if mf.exists():
            try:
                if len(json.loads(mf.read_text())["points_done"]) >= n:
                    return
            except json.JSONDecodeError:
                pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("capture made no progress")


@pytest.mark.parametrize("sig, to_group, code", [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)])
def test_signal_stops_records_and_resume_runs_only_missing(tmp_path, sig, to_group, code):
    out = tmp_path / "cap"
    proc = _start(tmp_path, out, point_s=0.4)
    _wait_for_points(out, len(BATCHES), proc)  # bf16 finished; fp8 is running
    time.sleep(0.5)  # inside fp8: one of its batches done, the child still running
    (os.killpg if to_group else os.kill)(proc.pid, sig)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 15, "the stop waited on something"
    assert proc.returncode == code, err
    assert err.startswith("moeprof: error: interrupted by " + signal.Signals(sig).name) and err.count("\n") == 1
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "interrupted" and m["interrupted_by"] == signal.Signals(sig).name
    done = [tuple(p) for p in m["points_done"]]
    ran = _calls(tmp_path)
    # every batch the child finished is recorded, nothing else: events timing is the only collector here
    assert done == ran and done[:3] == [("bf16", 1), ("bf16", 2), ("bf16", 4)] and len(done) < 9
    p = pd.read_csv(out / "points.csv")
    assert sorted(set(zip(p["format"], p["batch"]))) == sorted(done) and len(p) == 3 * len(done)
    # no process of the capture is left: the child's grandchild was stopped with it
    pids = [int(x) for x in (tmp_path / "pids.txt").read_text().split()]
    time.sleep(0.2)
    assert not [pid for pid in pids if _alive(pid)]

    (tmp_path / "calls.txt").unlink()
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, str(HELPER), *ARGS, "-o", str(out), "--resume"],
                         env=_env(tmp_path, 0.05), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    resumed = _calls(tmp_path)
    assert sorted(resumed) == sorted(set((f, b) for f in FORMATS for b in BATCHES) - set(done))
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "complete" and len(m["points_done"]) == 9 and m["resumed_utc"]
    p = pd.read_csv(out / "points.csv")
    assert len(p) == 27 and not p.duplicated(["format", "batch", "repeat"]).any()
    # each point measured once: the values the child wrote for it (1000 * batch + repeat)
    assert (p["layer_time_ns"] == 1000.0 * p["batch"] + p["repeat"]).all()
