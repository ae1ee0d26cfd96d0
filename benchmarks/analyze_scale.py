"""Analysis at scale: an nsys sqlite export with >= 1M kernel launches, made by replicating the real
rows of a capture's export (kernels, their runtime launch calls, NVTX ranges; each copy shifted in
time and correlation id), then timed:

  parse    moeprof.profiler.collectors.nsys.read_kernels (sqlite -> kernel table)
  load     moeprof.analysis.load.load_capture of a capture folder holding that table as the capture
           writes it (kernels.parquet where pyarrow is installed, else kernels.csv; --csv forces CSV)
  analyze  moeprof.analysis.pipeline.analyze (classify, metrics, verdicts)

Each stage runs in a fresh process so its peak RSS is its own; each reports wall seconds and the
CPU seconds of its process (on a shared machine wall time also counts other jobs). Usage:
  python benchmarks/analyze_scale.py [--launches 1000000] [--sqlite SRC.sqlite] [--work DIR] [--csv]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCES = [ROOT / "moeprof" / "data" / "example_capture" / "raw" / "nsys",
                   ROOT / "tests" / "data" / "analysis_probe2" / "raw" / "nsys"]
FIXTURE = ROOT / "tests" / "data" / "analysis_probe2"


def find_source() -> Path:
    for d in DEFAULT_SOURCES:
        found = sorted(d.glob("*.sqlite")) if d.is_dir() else []
        if found:
            return found[0]
    sys.exit("no nsys sqlite export found; pass --sqlite")


def _cols(con: sqlite3.Connection, tab: str) -> list[str]:
    return [r[1] for r in con.execute(f'PRAGMA table_info("{tab}")')]


def build(src: Path, dst: Path, launches: int) -> dict:
    """Copy src to dst and replicate its launches until there are >= `launches` kernel rows."""
    shutil.copy(src, dst)
    con = sqlite3.connect(dst)
    k0 = con.execute("SELECT COUNT(*), MIN(start), MAX(\"end\") FROM CUPTI_ACTIVITY_KIND_KERNEL").fetchone()
    n0, t_lo, t_hi = k0
    r_lo, r_hi = con.execute('SELECT MIN(start), MAX("end") FROM CUPTI_ACTIVITY_KIND_RUNTIME').fetchone()
    n_lo, n_hi = con.execute('SELECT MIN(start), MAX("end") FROM NVTX_EVENTS').fetchone()
    span = max(t_hi, r_hi, n_hi or 0) - min(t_lo, r_lo, n_lo or t_lo) + 1_000_000
    corr_span = con.execute("SELECT MAX(correlationId) FROM CUPTI_ACTIVITY_KIND_RUNTIME").fetchone()[0] + 1
    copies = -(-launches // n0)
    # Keep only the runtime calls that launched a kernel (the parser joins nothing else).
    con.execute("DELETE FROM CUPTI_ACTIVITY_KIND_RUNTIME WHERE correlationId NOT IN "
                "(SELECT correlationId FROM CUPTI_ACTIVITY_KIND_KERNEL)")
    con.execute("CREATE TEMP TABLE copies(i INTEGER PRIMARY KEY)")
    con.executemany("INSERT INTO copies VALUES (?)", [(i,) for i in range(1, copies)])
    for tab, corr in (("CUPTI_ACTIVITY_KIND_KERNEL", True), ("CUPTI_ACTIVITY_KIND_RUNTIME", True), ("NVTX_EVENTS", False)):
        cols = _cols(con, tab)
        exprs = []
        for c in cols:
            if c in ("start", "end"):
                exprs.append(f'CASE WHEN t."{c}" IS NULL THEN NULL ELSE t."{c}" + c.i * {span} END')
            elif corr and c == "correlationId":
                exprs.append(f"t.correlationId + c.i * {corr_span}")
            else:
                exprs.append(f't."{c}"')
        quoted = ", ".join(f'"{c}"' for c in cols)
        con.execute(f'CREATE TEMP TABLE base AS SELECT * FROM "{tab}"')
        con.execute(f'INSERT INTO "{tab}" ({quoted}) SELECT {", ".join(exprs)} FROM base t CROSS JOIN copies c')
        con.execute("DROP TABLE base")
    con.commit()
    n = con.execute("SELECT COUNT(*) FROM CUPTI_ACTIVITY_KIND_KERNEL").fetchone()[0]
    nv = con.execute("SELECT COUNT(*) FROM NVTX_EVENTS").fetchone()[0]
    con.close()
    return {"source": str(src), "source_launches": n0, "copies": copies, "launches": n, "nvtx_ranges": nv,
            "sqlite_bytes": dst.stat().st_size}


def measure(stage: str, path: str) -> dict:
    """Run one stage in this process; report its wall time and the process's peak RSS."""
    t0, c0 = time.perf_counter(), time.process_time()
    if stage in ("parse", "write", "write-csv"):
        from moeprof.profiler.collectors import nsys

        k = nsys.read_kernels(path)
        out = {"rows": len(k)}
        if stage == "write-csv":  # not timed: the capture folder for the next stage
            k.to_csv(Path(path).parent / "capture" / "kernels.csv", index=False)
        elif stage == "write":
            from moeprof.capture_folder import kernel_store

            folder = Path(path).parent / "capture"
            kernel_store.write(kernel_store.table_path(folder), k)
    else:
        from moeprof.analysis.load import load_capture

        cap = load_capture(path)
        t_load, c_load = time.perf_counter() - t0, time.process_time() - c0
        from moeprof.analysis.pipeline import analyze

        a = analyze(cap)
        out = {"rows": len(cap.kernels), "load_s": round(t_load, 2),
               "analyze_s": round(time.perf_counter() - t0 - t_load, 2),
               "load_cpu_s": round(c_load, 2), "analyze_cpu_s": round(time.process_time() - c0 - c_load, 2),
               "verdicts": len(a.verdicts), "calls": int(a.roles["n_calls"].max()) if len(a.roles) else 0}
    out["seconds"] = round(time.perf_counter() - t0, 2)
    out["cpu_seconds"] = round(time.process_time() - c0, 2)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def peak_rss_mb() -> float:
    """This process's RSS high-water mark (VmHWM: per address space, unlike ru_maxrss, which
    Linux carries over fork+exec from the parent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _child(stage: str, path: Path) -> dict:
    res = subprocess.run([sys.executable, __file__, "--measure", stage, str(path)], capture_output=True, text=True,
                         check=False)
    if res.returncode:
        sys.exit(f"{stage} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--launches", type=int, default=1_000_000)
    ap.add_argument("--sqlite", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--csv", action="store_true", help="store the kernel table as kernels.csv (the older form; "
                    "also what a moeprof without kernel_store can run, to time an older tree with PYTHONPATH)")
    ap.add_argument("--measure", nargs=2, metavar=("STAGE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="moeprof-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "scale.sqlite"
    t0 = time.perf_counter()
    info = build(args.sqlite or find_source(), db, args.launches)
    info["build_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(info), flush=True)
    parse = _child("parse", db)
    print(json.dumps({"stage": "parse", **parse}), flush=True)
    # A capture folder around the replicated table: the fixture's manifest, the parsed kernels.
    from moeprof.capture_folder import POINT_COLUMNS

    cap = work / "capture"
    cap.mkdir(exist_ok=True)
    shutil.copy(FIXTURE / "manifest.json", cap / "manifest.json")
    (cap / "points.csv").write_text(",".join(POINT_COLUMNS) + "\n")
    for old in cap.glob("kernels.*"):
        old.unlink()
    _child("write-csv" if args.csv else "write", db)
    stored = sorted(cap.glob("kernels.*"))[0]
    full = _child("analyze", cap)
    print(json.dumps({"stage": "load+analyze", **full, "kernel_table": stored.name,
                      "kernel_table_bytes": stored.stat().st_size}), flush=True)
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}", flush=True)


if __name__ == "__main__":
    main()
