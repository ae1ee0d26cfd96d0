"""Rebuild this fixture: a slice of an nsys capture of SGLang 0.5.23's Triton fused MoE in FP8 W8A8
(examples/sglang_fused_moe.py, gpt-oss-120b expert shapes) on an H200, 2026-11-30, made on the GPU
machine by

    benchmarks/sglang_vs_moeprof.sh OUT .sglang-trim
    # whose step for this capture is:
    # moeprof capture -q --collect nsys -m gpt-oss-120b --timeout 240 -o sglang-fp8 -- \
    #   python3 examples/sglang_fused_moe.py --format fp8 --tune --batches 1,4,16,64,256,1024,4096 \
    #   --sglang-trim .sglang-trim --json sglang-fp8.json

and cut here with

    python3 tests/data/sglang_slice/build.py PATH/TO/sglang-fp8

kernels.csv keeps the launches inside the layer ranges (moe/fp8/<batch>) of batches 1, 16 (SGLang's
single-launch align for <= 64 expert ids), 64 and 4096 (the Triton align reference standing in for
sgl_kernel's), unchanged; the program's set-up, reference check and tile-sweep launches are left
out. points.csv is the capture's (empty: external mode takes no CUDA-event timings). The manifest
is the capture's, with collector file lists emptied (raw/ is not shipped) and a note.
"""

import json
import sys
from pathlib import Path

import pandas as pd

BATCHES = [1, 16, 64, 4096]
src, out = Path(sys.argv[1]), Path(__file__).resolve().parent

k = pd.read_csv(src / "kernels.csv", dtype=str, keep_default_na=False)
keep = k["batch"].isin([str(b) for b in BATCHES]) & k["nvtx_path"].str.startswith("moe/fp8/")
k[keep].to_csv(out / "kernels.csv", index=False)
(out / "points.csv").write_text((src / "points.csv").read_text())

m = json.loads((src / "manifest.json").read_text())
for c in m.get("collectors", {}).values():
    if isinstance(c, dict) and "files" in c:
        c["files"] = []
m["shipped"] = {"note": f"test slice: launches inside moe/fp8/<batch> for batches {BATCHES}; no raw files"}
(out / "manifest.json").write_text(json.dumps(m, indent=1) + "\n")
print("wrote", out, int(keep.sum()), "launches")
