"""Rebuild this fixture: slices of two nsys captures of SGLang 0.5.23's Triton fused MoE
(examples/sglang_fused_moe.py, gpt-oss-120b expert shapes), FP8 W8A8 and BF16, on an H200,
2026-11-30 19:26 UTC, made on the GPU machine by

    benchmarks/sglang_vs_moeprof.sh OUT .sglang-trim
    # whose steps for these captures are, for FORMAT in fp8 and bf16:
    # moeprof capture -q --collect nsys -m gpt-oss-120b --timeout 240 -o sglang-FORMAT -- \
    #   python3 examples/sglang_fused_moe.py --format FORMAT --tune --batches 1,4,16,64,256,1024,4096 \
    #   --sglang-trim .sglang-trim --json sglang-FORMAT.json

and cut here with

    python3 tests/data/sglang_slice/build.py PATH/TO/sglang-fp8 PATH/TO/sglang-bf16

<format>/kernels.csv keeps the launches inside the layer ranges (moe/<format>/<batch>) of batches 1,
16 (SGLang's single-launch align for <= 64 expert ids), 64 and 4096 (the Triton align reference
standing in for sgl_kernel's), unchanged; the program's set-up, reference check and tile-sweep
launches are left out. points.csv is the capture's (empty: external mode takes no CUDA-event
timings). The manifest is the capture's, with collector file lists emptied (raw/ is not shipped).
"""

import json
import sys
from pathlib import Path

import pandas as pd

BATCHES = [1, 16, 64, 4096]
here = Path(__file__).resolve().parent

for fmt, src in zip(["fp8", "bf16"], map(Path, sys.argv[1:3])):
    out = here / fmt
    out.mkdir(exist_ok=True)
    k = pd.read_csv(src / "kernels.csv", dtype=str, keep_default_na=False)
    keep = k["batch"].isin([str(b) for b in BATCHES]) & k["nvtx_path"].str.startswith(f"moe/{fmt}/")
    k[keep].to_csv(out / "kernels.csv", index=False)
    (out / "points.csv").write_text((src / "points.csv").read_text())
    m = json.loads((src / "manifest.json").read_text())
    for c in m.get("collectors", {}).values():
        if isinstance(c, dict) and "files" in c:
            c["files"] = []
    m["shipped"] = {"note": f"test slice: launches inside moe/{fmt}/<batch> for batches {BATCHES}; no raw files"}
    (out / "manifest.json").write_text(json.dumps(m, indent=1) + "\n")
    print("wrote", out, int(keep.sum()), "launches")
