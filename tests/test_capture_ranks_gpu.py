"""--tp 2 / --ep 2 on a machine with 2 GPUs (skipped elsewhere): torchrun, NCCL, one nsys report per rank
when nsys is available, then analyze's cross-rank view. Set MOEPROF_TEST_OUT to keep the folders."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from moeprof.cli import main

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
    pytest.skip("needs 2 CUDA GPUs", allow_module_level=True)


@pytest.mark.parametrize("par", ["--tp", "--ep"])
def test_two_rank_capture_and_analyze(tmp_path, capsys, par):
    from moeprof.profiler.collectors import tools

    out = Path(os.environ.get("MOEPROF_TEST_OUT", tmp_path)) / f"{par[2:]}2"
    collect = "nsys" if tools.find_nsys() else "torch"
    rc = main(["capture", par, "2", "--shape", "1024,512,16,2", "-f", "fp8,mxfp4", "-b", "4,64", "-r", "3",
               "--collect", collect, "-q", "-o", str(out)])
    assert rc == 0, capsys.readouterr()
    pts = pd.read_csv(out / "points.csv")
    assert set(pts["batch"]) == {4, 64} and pts["layer_time_ns"].gt(0).all()
    if collect == "nsys":
        from moeprof.profiler.capture import CaptureFolder

        k = CaptureFolder(out, {}).read_kernels()  # the kernel table in its stored form (Parquet or CSV)
        assert set(k["rank"].dropna().astype(int)) == {0, 1}
        assert k["kernel_name"].str.startswith("nccl").any()  # the collectives are on the timeline
        assert main(["analyze", str(out)]) == 0
        assert "Across ranks:" in capsys.readouterr().out
