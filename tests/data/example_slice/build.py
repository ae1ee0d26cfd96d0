"""Rebuild this fixture: a slice of a real capture keeping batches 1 and 64 only. The committed files
are the slice of the shipped H100 capture (moeprof/data/example_capture_h100: gpt-oss-120b, bf16/fp8/mxfp4,
nsys + ncu on the gemm1/gemm2 phases, 20 repeats, 2026-11-26), made with

    python tests/data/example_slice/build.py moeprof/data/example_capture_h100 tests/data/example_slice

kernels.csv.gz and points.csv are the source's rows for those batches, byte for byte as text; the
manifest is the source's, with workload.batches, points_done and collector file lists cut to the slice.
raw/ is left out (the analysis reads only the three tables). tests/test_analysis_real_capture.py
checks that the slice still matches the shipped capture.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

BATCHES = [1, 64]


def build(src: Path, out: Path, batches: list[int] = BATCHES) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keep = [str(b) for b in batches]
    kernels = src / "kernels.csv.gz" if (src / "kernels.csv.gz").exists() else src / "kernels.csv"
    k = pd.read_csv(kernels, dtype=str, keep_default_na=False)
    k[k["batch"].isin(keep)].to_csv(out / "kernels.csv.gz", index=False)  # gzip: the loader reads it
    p = pd.read_csv(src / "points.csv", dtype=str, keep_default_na=False)
    p[p["batch"].isin(keep)].to_csv(out / "points.csv", index=False)
    m = json.loads((src / "manifest.json").read_text())
    m["workload"]["batches"] = batches
    m["points_done"] = [pt for pt in m.get("points_done", []) if pt[1] in batches]
    for c in m.get("collectors", {}).values():
        if isinstance(c, dict) and "files" in c:
            c["files"] = []
    m["shipped"] = {"note": f"test slice of {src.name}: batches {batches}, no raw files"}
    (out / "manifest.json").write_text(json.dumps(m, indent=1) + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="capture folder to slice")
    ap.add_argument("output", type=Path, help="folder to write the slice to")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated batches to keep")
    args = ap.parse_args()
    build(args.source, args.output, [int(b) for b in args.batches.split(",")])
    print("wrote", args.output)
