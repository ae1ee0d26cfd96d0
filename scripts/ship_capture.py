"""Copy a real capture into moeprof/data/example_capture, small enough to ship.

Kept: manifest.json, points.csv, the kernel table (kernels.parquet as it is; kernels.csv gzip-compressed),
raw/ncu/*.csv, raw/events, raw/logs.
Dropped (size): raw/nsys/*.nsys-rep and *.sqlite, raw/ncu/*.ncu-rep. The manifest records what was
dropped under "shipped", so nothing claims a file that is not there.

    python scripts/ship_capture.py CAPTURE_DIR
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

DEST = Path(__file__).resolve().parent.parent / "moeprof" / "data" / "example_capture"
DROP_SUFFIXES = (".nsys-rep", ".sqlite", ".ncu-rep")


def main(src: Path) -> None:
    if DEST.exists():
        shutil.rmtree(DEST)
    dropped: list[str] = []
    for f in sorted(src.rglob("*")):
        if not f.is_file():
            continue
        rel = f.relative_to(src)
        if f.name.endswith(DROP_SUFFIXES):
            dropped.append(str(rel))
            continue
        out = DEST / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if rel.as_posix() in ("kernels.csv",):
            with open(f, "rb") as fi, gzip.GzipFile(out.with_name(out.name + ".gz"), "wb", mtime=0) as fo:
                shutil.copyfileobj(fi, fo)
        elif rel.name != "manifest.json":
            shutil.copy2(f, out)
    manifest = json.loads((src / "manifest.json").read_text())
    csv = (src / "kernels.csv").exists()
    manifest["shipped"] = {
        "note": "example copy: profiler databases dropped for size" + ("; kernels.csv gzip-compressed" if csv else ""),
        "dropped": dropped,
        "compressed": ["kernels.csv -> kernels.csv.gz"] if csv else [],
    }
    (DEST / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    size = sum(p.stat().st_size for p in DEST.rglob("*") if p.is_file())
    print(f"shipped {src} -> {DEST} ({size / 1e6:.1f} MB, dropped {len(dropped)} files)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
