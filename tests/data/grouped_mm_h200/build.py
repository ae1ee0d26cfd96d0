"""Rebuild these fixtures from the real captures made on the GPU machine (an H200, 2026-11-30) by

    scripts/capture_grouped_mm.sh OUTDIR      (from the repo root; commit of the branch `foreign`)

which tars A_fp8_nolabels, B_fp8 and B_bf16 into OUTDIR. Unpack them into one folder, then

    python tests/data/grouped_mm_h200/build.py FOLDER

Each fixture is its capture's manifest.json, kernels.csv (gzip-compressed, rows unchanged) and
points.csv; raw/ (profiler reports and logs) is left out: the analysis reads only the three tables.
The manifest's collector file lists are emptied (those files are not shipped) and a `shipped` note added.
"""

import gzip
import json
import shutil
import sys
from pathlib import Path

CAPTURES = ["A_fp8_nolabels", "B_fp8", "B_bf16"]


def main(src: Path) -> None:
    out = Path(__file__).resolve().parent
    for name in CAPTURES:
        cap, dst = src / name, out / name
        dst.mkdir(exist_ok=True)
        with open(cap / "kernels.csv", "rb") as fin, gzip.GzipFile(dst / "kernels.csv.gz", "wb", mtime=0) as fout:
            shutil.copyfileobj(fin, fout)
        shutil.copy(cap / "points.csv", dst / "points.csv")
        m = json.loads((cap / "manifest.json").read_text())
        for c in m.get("collectors", {}).values():
            if isinstance(c, dict) and "files" in c:
                c["files"] = []
        m["shipped"] = {"note": "test fixture: the capture's tables unchanged, raw/ not shipped"}
        (dst / "manifest.json").write_text(json.dumps(m, indent=1) + "\n")
        print("wrote", dst)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: build.py FOLDER (holding the unpacked A_fp8_nolabels, B_fp8, B_bf16)")
    main(Path(sys.argv[1]))
