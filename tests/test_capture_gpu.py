"""End-to-end capture on a CUDA machine (skipped elsewhere). Set MOEPROF_TEST_OUT to keep the folders."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from moeprof.cli import main


def _kernels(folder: Path) -> pd.DataFrame:
    """The capture's kernel table in whichever form it was written (Parquet or CSV)."""
    from moeprof.profiler.capture import CaptureFolder

    return CaptureFolder(folder, {}).read_kernels()

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

TOY = ["--workload", "toy", "--shape", "1024,512,4,1", "-f", "bf16,fp8", "-b", "16,64", "-r", "3", "-q"]


@pytest.fixture
def outdir(tmp_path):
    keep = os.environ.get("MOEPROF_TEST_OUT")
    return Path(keep) if keep else tmp_path


def _load(d: Path):
    m = json.loads((d / "manifest.json").read_text())
    k = _kernels(d)
    p = pd.read_csv(d / "points.csv")
    return m, k, p


def _nsys_and_ncu_run() -> bool:
    """Both profilers found the way a capture finds them, and nsys starts (an nsys shipped inside
    nsight-compute needs its .nsys-libs: without them it is found but cannot run)."""
    from moeprof.profiler.collectors import tools

    nsys = tools.find_nsys()
    return bool(tools.find_ncu() and nsys and tools.tool_version(nsys, tools.nsys_env()))


@pytest.mark.skipif(not _nsys_and_ncu_run(), reason="needs a runnable nsys and ncu")
def test_toy_sweep_nsys_ncu(outdir):
    d = outdir / "toy"
    assert main(["capture", *TOY, "--collect", "nsys,ncu", "--ncu-launch-count", "40", "-o", str(d)]) == 0
    m, k, p = _load(d)
    assert m["status"] == "complete", m
    assert m["collectors"]["nsys"]["status"] == "ok" and m["collectors"]["ncu"]["status"] == "ok"
    assert m["collectors"]["ncu"]["options"]["metrics_missing"] == []
    assert sorted(map(tuple, m["points_done"])) == [("bf16", 16), ("bf16", 64), ("fp8", 16), ("fp8", 64)]
    assert len(p) == 4 * 3 and (p["layer_time_ns"] > 0).all()
    ns = k[k["collector"] == "nsys"]
    assert set(ns["phase"]) >= {"route", "gemm1", "act", "gemm2"}
    assert set(ns["repeat"].dropna().astype(int)) == {0, 1, 2}
    nc = k[k["collector"] == "ncu"]
    assert set(nc["format"]) == {"bf16", "fp8"} and nc["dram_read_bytes"].notna().all()
    assert (nc["nvtx_path"].str.startswith("moe/")).all()


def test_toy_sweep_torch_fallback(outdir):
    d = outdir / "toy_torch"
    assert main(["capture", *TOY, "--collect", "torch", "-o", str(d)]) == 0
    m, k, _ = _load(d)
    assert m["collectors"]["torch"]["status"] == "ok"
    assert set(k["phase"]) >= {"route", "gemm1", "gemm2"} and set(k["collector"]) == {"torch"}


@pytest.mark.skipif(not (shutil.which("ncu") or os.environ.get("MOEPROF_NSYS")), reason="needs nsys/ncu")
def test_external_command(outdir, tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text(
        "import torch\nN=torch.cuda.nvtx\nx=torch.randn(256,1024,device='cuda',dtype=torch.bfloat16)\n"
        "for i in range(2):\n  N.range_push('moe');N.range_push('bf16');N.range_push('256');N.range_push('gemm1')\n"
        "  y=x@x.t()\n  N.range_pop();N.range_pop();N.range_pop();N.range_pop()\ntorch.cuda.synchronize()\n")
    d = outdir / "external"
    assert main(["capture", "--collect", "nsys,ncu", "--ncu-launch-count", "20", "-q", "-o", str(d), "--",
                 sys.executable, str(prog)]) == 0
    m, k, _ = _load(d)
    assert m["workload"]["mode"] == "external" and m["workload"]["command"][-1] == str(prog)
    g = k[k["phase"] == "gemm1"]
    assert set(g["collector"]) == {c for c in ("nsys", "ncu") if m["collectors"][c]["status"] == "ok"}
    assert (g["batch"] == 256).all()
