"""Rebuild this fixture from the H200 probe (2026-11-26) with the project's own collectors:

    bash scripts/make_probe_fixtures.sh PROBE_DIR        # on the GPU machine
    python tests/data/analysis_probe2/build.py PROBE_DIR

What ran (prog.py): one "layer" of 256 tokens, hidden 2880, in bf16 and fp8 (torch._scaled_mm,
per-row/per-channel scales), each twice, inside NVTX ranges moe/<fmt>/256/<phase>:
route (router matmul + softmax + top-k), gemm1 ([256, 2880] x [5760, 2880]^T), act (silu).
That is a single-expert gated layer without gemm2, described as such in the manifest.
points.csv is empty: the probe took no CUDA-event timings (analysis falls back to kernel sums).
"""

import json
import shutil
import sys
from pathlib import Path

import pandas as pd

from moeprof.profiler.collectors import ncu, nsys
from moeprof.capture_folder import POINT_COLUMNS

src, out = Path(sys.argv[1]), Path(__file__).resolve().parent
k_nsys = nsys.read_kernels(src / "p2.sqlite")
k_ncu, _ = ncu.read_csv(src / "p2_raw_base.csv")
pd.concat([k_nsys, k_ncu], ignore_index=True).to_csv(out / "kernels.csv", index=False)
pd.DataFrame(columns=list(POINT_COLUMNS)).to_csv(out / "points.csv", index=False)
shutil.copy(src / "p2.sqlite", out / "raw" / "nsys" / "p2.sqlite")
shutil.copy(src / "p2_raw_base.csv", out / "raw" / "ncu" / "p2.csv")
manifest = {
    "schema": "moeprof.capture", "manifest_version": 1, "moeprof_version": "0.1.0",
    "command_line": ["bash", "scripts/make_probe_fixtures.sh", "PROBE_DIR"],
    "started_utc": "2026-11-26T15:00:00Z", "finished_utc": "2026-11-26T15:11:00Z", "status": "complete",
    "gpu": {"name": "NVIDIA H200", "spec": "h200", "sm_count": 132, "memory_bytes": 150109880320,
            "l2_bytes": 62914560, "sm_clock_max_mhz": 1980, "memory_clock_max_mhz": 3201,
            "compute_capability": "9.0"},
    "software": {"python": "3.12"},
    "workload": {"mode": "external", "model": "probe2-dense", "hidden_size": 2880, "intermediate_size": 2880,
                 "num_experts": 1, "top_k": 1, "formats": ["bf16", "fp8"], "batches": [256], "tp": 1, "ep": 1,
                 "routing": "uniform", "seed": 0, "repeats": 2, "kernel": "torch (cuBLAS)",
                 "command": "python3 prog.py"},
    "collectors": {
        "events": {"status": "skipped", "reason": "the probe took no CUDA-event timings"},
        "nsys": {"status": "ok", "tool_version": "2025.3.1",
                 "options": ["--trace=cuda,nvtx", "--sample=none", "--cpuctxsw=none", "--backtrace=none"],
                 "files": ["raw/nsys/p2.sqlite"]},
        "ncu": {"status": "ok", "tool_version": "2025.3.1",
                "options": {"clock_control": "none", "cache_control": "all", "replay_mode": "kernel"},
                "files": ["raw/ncu/p2.csv"]},
        "torch": {"status": "skipped", "reason": "nsys and ncu available"},
    },
    "points_done": [["bf16", 256], ["fp8", 256]],
}
(out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
print("wrote", out)
