#!/bin/bash
# ncu on the two expert GEMMs of one layer call (gemm1, gemm2): speed of light, occupancy, scheduler
# and warp-state (stall reason) sections, then a short table (benchmarks/ncu_table.py). On the GPU:
#   bash benchmarks/ncu_stalls.sh OUT_DIR TAG FMT BATCH ['{gemm1 cfg}' ['{gemm2 cfg}']]
# --clock-control none (clocks as found; recorded by ncu in the report).
set -u
OUT_DIR=${1:?usage: bash benchmarks/ncu_stalls.sh OUT_DIR TAG FMT BATCH [cfg1 [cfg2]]}; TAG=${2:?TAG}; shift 2
mkdir -p "$OUT_DIR"
STALLS=""
for r in barrier branch_resolving dispatch_stall drain imc_miss lg_throttle long_scoreboard math_pipe_throttle \
         membar mio_throttle misc no_instruction not_selected selected short_scoreboard sleeping tex_throttle wait; do
  STALLS="$STALLS${STALLS:+,}smsp__average_warps_issue_stalled_${r}_per_issue_active.ratio"
done
ncu --clock-control none --kernel-name regex:moe_gemm --launch-count 2 \
    --section SpeedOfLight --section Occupancy --section SchedulerStats --section WarpStateStats \
    --section LaunchStats --section MemoryWorkloadAnalysis --metrics "$STALLS" -f -o "$OUT_DIR/$TAG" \
    python3 benchmarks/moe_ncu_one.py "$@" > "$OUT_DIR/$TAG.log" 2>&1 || { tail -5 "$OUT_DIR/$TAG.log"; exit 1; }
ncu -i "$OUT_DIR/$TAG.ncu-rep" --page details --csv > "$OUT_DIR/$TAG.csv" 2>/dev/null
python3 benchmarks/ncu_table.py "$TAG" "$OUT_DIR/$TAG.csv"
rm -f "$OUT_DIR/$TAG.ncu-rep"  # the csv keeps every section
