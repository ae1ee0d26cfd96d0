#!/bin/bash
# ncu on the two expert GEMMs of one layer call (gemm1, gemm2): speed of light, occupancy, scheduler
# and warp-state (stall reason) sections, then a short table (benchmarks/ncu_table.py). On the GPU:
#   bash benchmarks/ncu_stalls.sh OUT_DIR TAG FMT BATCH ['{gemm1 cfg}' ['{gemm2 cfg}']]
# --clock-control none (clocks as found; recorded by ncu in the report).
set -u
OUT=${1:?usage: bash benchmarks/ncu_stalls.sh OUT_DIR TAG FMT BATCH [cfg1 [cfg2]]}; TAG=${2:?TAG}; shift 2
mkdir -p "$OUT"
STALLS=""
for r in barrier branch_resolving dispatch_stall drain imc_miss lg_throttle long_scoreboard math_pipe_throttle \
         membar mio_throttle misc no_instruction not_selected selected short_scoreboard sleeping tex_throttle wait; do
  STALLS="$STALLS${STALLS:+,}smsp__average_warps_issue_stalled_${r}_per_issue_active.ratio"
done
ncu --clock-control none --kernel-name regex:moe_gemm --launch-count 2 \
    --section SpeedOfLight --section Occupancy --section SchedulerStats --section WarpStateStats \
    --section LaunchStats --section MemoryWorkloadAnalysis --metrics "$STALLS" -f -o "$OUT/$TAG" \
    python3 benchmarks/moe_ncu_one.py "$@" > "$OUT/$TAG.log" 2>&1 || { tail -5 "$OUT/$TAG.log"; exit 1; }
ncu -i "$OUT/$TAG.ncu-rep" --page details --csv > "$OUT/$TAG.csv" 2>/dev/null
python3 benchmarks/ncu_table.py "$TAG" "$OUT/$TAG.csv"
rm -f "$OUT/$TAG.ncu-rep"  # the csv keeps every section
