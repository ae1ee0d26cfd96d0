"""Copy a real capture into moeprof/data/example_capture, small enough to ship.

Kept: manifest.json, points.csv, the kernel table (kernels.parquet as it is; kernels.csv gzip-compressed),
raw/ncu/*.csv, raw/events, raw/logs.
Dropped (size): raw/nsys/*.nsys-rep and *.sqlite, raw/ncu/*.ncu-rep. The manifest records what was
dropped under "shipped", so nothing claims a file that is not there.

    python scripts/ship_capture.py CAPTURE_DIR [DEST_DIR]

DEST_DIR defaults to moeprof/data/example_capture. A capture fetched from the GPU machine without its
profiler databases is shipped the same way: files the manifest lists but the folder lacks are recorded
as dropped too.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

DEST = Path(__file__).resolve().parent.parent / "moeprof" / "data" / "example_capture"
DROP_SUFFIXES = (".nsys-rep", ".sqlite", ".ncu-rep")


def main(src: Path, dest: Path = DEST) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dropped: list[str] = []
    for f in sorted(src.rglob("*")):
        if not f.is_file():
            continue
        rel = f.relative_to(src)
        if f.name.endswith(DROP_SUFFIXES):
            dropped.append(str(rel))
            continue
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if rel.as_posix() in ("kernels.csv",):
            with open(f, "rb") as fi, gzip.GzipFile(out.with_name(out.name + ".gz"), "wb", mtime=0) as fo:
                shutil.copyfileobj(fi, fo)
        elif rel.name != "manifest.json":
            shutil.copy2(f, out)
    manifest = json.loads((src / "manifest.json").read_text())
    listed = [f for ent in (manifest.get("collectors") or {}).values() for f in ((ent or {}).get("files") or [])]
    dropped += sorted(f for f in listed if f not in dropped and not (src / f).is_file())
    csv = (src / "kernels.csv").exists()
    manifest["shipped"] = {
        "note": "example copy: profiler databases dropped for size" + ("; kernels.csv gzip-compressed" if csv else ""),
        "dropped": dropped,
        "compressed": ["kernels.csv -> kernels.csv.gz"] if csv else [],
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"shipped {src} -> {dest} ({size / 1e6:.1f} MB, dropped {len(dropped)} files)")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(Path(a) for a in sys.argv[2:3]))
