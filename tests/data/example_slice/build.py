"""Rebuild this fixture: a slice of the shipped real H100 capture (moeprof/data/example_capture,
gpt-oss-120b, bf16/fp8/mxfp4, nsys + ncu on the gemm1/gemm2 phases, 2026-11-26) keeping batches
1 and 64 only:

    /work/venv/bin/python tests/data/example_slice/build.py

kernels.csv.gz and points.csv are the capture's rows for those batches, unchanged; the manifest is
the capture's, with workload.batches, points_done and collector file lists cut to the slice.
raw/ is left out (the analysis reads only the three tables).
"""

import json
from pathlib import Path

import pandas as pd

BATCHES = [1, 64]
root = Path(__file__).resolve().parents[3]
src, out = root / "moeprof" / "data" / "example_capture", Path(__file__).resolve().parent

k = pd.read_csv(src / "kernels.csv.gz", dtype=str, keep_default_na=False)
k[k["batch"].isin([str(b) for b in BATCHES])].to_csv(out / "kernels.csv.gz", index=False)  # gzip: the loader reads it
p = pd.read_csv(src / "points.csv", dtype=str, keep_default_na=False)
p[p["batch"].isin([str(b) for b in BATCHES])].to_csv(out / "points.csv", index=False)

m = json.loads((src / "manifest.json").read_text())
m["workload"]["batches"] = BATCHES
m["points_done"] = [pt for pt in m.get("points_done", []) if pt[1] in BATCHES]
for c in m.get("collectors", {}).values():
    if isinstance(c, dict) and "files" in c:
        c["files"] = []
m["shipped"] = {"note": f"test slice of the example capture: batches {BATCHES}, no raw files"}
(out / "manifest.json").write_text(json.dumps(m, indent=1) + "\n")
print("wrote", out)
