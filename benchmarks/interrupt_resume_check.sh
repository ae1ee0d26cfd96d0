#!/usr/bin/env bash
# On the GPU machine: interrupt a real nsys sweep with SIGINT to its process group, resume it, check
# that no point is lost or measured twice; capture the CUDA-graph example under nsys; refine a
# crossover of the resumed capture. Prints a short table last.
#   benchmarks/interrupt_resume_check.sh OUTDIR [MODEL] [BATCHES] [INTERRUPT_AFTER_S]
set -u
OUT_DIR=${1:?output folder}; MODEL=${2:-gpt-oss-20b}; BATCHES=${3:-1,64,1024,4096}; AFTER=${4:-15}
mkdir -p "$OUT_DIR"
CAP=$OUT_DIR/sweep; G=$OUT_DIR/graph
MP="python3 -m moeprof.cli"
SWEEP="capture -q -m $MODEL -f bf16,fp8,mxfp4 -b $BATCHES -r 10 --collect nsys -o $CAP"
t0=$(date +%s.%N)
setsid $MP $SWEEP > "$OUT_DIR/interrupted.out" 2>&1 &
PID=$!
sleep "$AFTER"
PGID=$(ps -o pgid= "$PID" | tr -d ' ')
kill -INT -- "-$PGID"
wait "$PID"; RC1=$?
t1=$(date +%s.%N)
cp "$CAP/manifest.json" "$OUT_DIR/interrupted.manifest.json"
LEFT=$(ps -eo pid,pgid,args | grep -c "[_]point_runner")
$MP capture -q -o "$CAP" --resume > "$OUT_DIR/resume.out" 2>&1; RC2=$?
t2=$(date +%s.%N)
$MP capture -q --collect nsys -o "$G" -- python3 examples/graph_replay.py --batches 1,64 --repeats 4 > "$OUT_DIR/graph.out" 2>&1; RC3=$?
t3=$(date +%s.%N)
# the graph capture's export, and a slice of it for the tests (the cut of tests/fixtures/README.md)
python3 - "$G" "$OUT_DIR" <<'PY'
import shutil, sqlite3, sys
from pathlib import Path
src = Path(sys.argv[1]) / "raw" / "nsys" / "external.sqlite"
dst = Path(sys.argv[2]) / "nsys_graph_replay.sqlite"
shutil.copy(src, dst)
con = sqlite3.connect(dst)
con.executescript("""DELETE FROM CUPTI_ACTIVITY_KIND_RUNTIME WHERE correlationId NOT IN
                       (SELECT correlationId FROM CUPTI_ACTIVITY_KIND_KERNEL);
                     DELETE FROM ThreadNames; DELETE FROM DIAGNOSTIC_EVENT; DELETE FROM PROFILER_OVERHEAD;
                     DELETE FROM TARGET_INFO_SYSTEM_ENV;""")
con.commit(); con.execute("VACUUM"); con.close()
from moeprof.profiler.collectors.nsys import read_kernels
k = read_kernels(dst)
print("graph slice:", dst.stat().st_size, "bytes;", len(k), "kernels")
g = k.groupby(["nvtx_path"], dropna=False).agg(n=("kernel_name", "size"), repeats=("repeat", "nunique"))
print(g.to_string())
PY
python3 - "$CAP" "$OUT_DIR" <<'PY' > "$OUT_DIR/pair.txt"
import sys, itertools
from pathlib import Path
from moeprof.profiler.refine import bracket, median_times
t = median_times(Path(sys.argv[1]), ["bf16", "fp8", "mxfp4"])
for a, b in itertools.combinations(["bf16", "fp8", "mxfp4"], 2):
    if a in t and b in t and bracket(t, a, b) is not None:
        print(f"{a},{b}"); break
PY
PAIR=$(head -1 "$OUT_DIR/pair.txt")
RC4=skipped
if [ -n "$PAIR" ]; then
  timeout 60 $MP capture -o "$CAP" --refine-crossover "$PAIR" -q > "$OUT_DIR/refine.out" 2>&1; RC4=$?
fi
t4=$(date +%s.%N)
tar czf "$OUT_DIR/records.tgz" -C "$OUT_DIR" --exclude='*.nsys-rep' --exclude='*.sqlite' sweep graph interrupted.manifest.json \
    interrupted.out resume.out graph.out refine.out 2>/dev/null
python3 - "$CAP" "$OUT_DIR" "$RC1" "$RC2" "$RC3" "$RC4" "$LEFT" "$t0" "$t1" "$t2" "$t3" "$t4" <<'PY'
import json, sys
from pathlib import Path
import pandas as pd
from moeprof.analysis.load import load_capture
cap, out = Path(sys.argv[1]), Path(sys.argv[2])
rc1, rc2, rc3, rc4, left = sys.argv[3:8]
t = [float(x) for x in sys.argv[8:13]]
first = json.loads((out / "interrupted.manifest.json").read_text()) if (out / "interrupted.manifest.json").exists() else None
m = json.loads((cap / "manifest.json").read_text())
c = load_capture(cap)
p, k = c.points, c.kernels
dup_p = int(p.duplicated(["format", "batch", "repeat"]).sum())
ns = k[k["collector"] == "nsys"]
per = ns.groupby(["format", "batch"])["repeat"].nunique()
calls = ns.groupby(["format", "batch", "repeat"]).size()
print("refine:", (out / "refine.out").read_text().strip().splitlines()[-3:] if (out / "refine.out").exists() else "not run")
print("graph:", (out / "graph.out").read_text().strip().splitlines()[-6:])
print("interrupted run:", (out / "interrupted.out").read_text().strip().splitlines()[-2:])
print(f"| step | exit | wall s | manifest |")
f = first or {}
print(f"| SIGINT to group after sweep start | {rc1} | {t[1]-t[0]:.1f} | status {f.get('status')}, points_done {len(f.get('points_done', []))} {f.get('points_done')}, point_runner processes left: {left} |")
print(f"| --resume | {rc2} | {t[2]-t[1]:.1f} | status {m['status']}, points_done {len(m['points_done'])}, resumed {len(m.get('resumed_utc', []))}x |")
print(f"| graph_replay capture | {rc3} | {t[3]-t[2]:.1f} | |")
print(f"| refine-crossover | {rc4} | {t[4]-t[3]:.1f} | refined_points {m['workload'].get('refined_points')} |")
print(f"points.csv rows {len(p)}, points {p.groupby(['format','batch']).ngroups}, duplicated (format,batch,repeat) {dup_p}")
print(f"nsys kernel rows {len(ns)}, points with nsys rows {len(per)}, repeats per point {sorted(set(per))}, kernels per call min/max {calls.min() if len(calls) else 0}/{calls.max() if len(calls) else 0}")
PY
