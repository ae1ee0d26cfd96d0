#!/bin/bash
# Where an expert GEMM's issue slots and pipes go: ncu on the two expert-GEMM launches of one layer call
# (gemm1, gemm2) with the compute-workload (pipe utilization), instruction-statistics, scheduler,
# warp-state and source-counter (stall samples per SASS instruction) sections, then a summary
# (benchmarks/ncu_pipes.py). On the GPU:
#   bash benchmarks/ncu_pipes.sh OUT_DIR TAG FMT BATCH ['{gemm1 cfg}' ['{gemm2 cfg}']]
# --clock-control none (clocks as found; ncu records them). Writes OUT_DIR/TAG.{raw,details,sass}.csv and
# TAG.txt (the summary); the .ncu-rep is removed (the csv files keep what the summary reads).
set -u
OUT_DIR=${1:?usage: bash benchmarks/ncu_pipes.sh OUT_DIR TAG FMT BATCH [cfg1 [cfg2]]}; TAG=${2:?TAG}; shift 2
mkdir -p "$OUT_DIR"
ncu --clock-control none --kernel-name regex:'moe_gemm|mx_w4a16|mx_w4a8|mx_wg' --launch-count 2 \
    --section SpeedOfLight --section ComputeWorkloadAnalysis --section InstructionStats \
    --section SchedulerStats --section WarpStateStats --section Occupancy --section SourceCounters \
    --import-source no -f -o "$OUT_DIR/$TAG" \
    python3 benchmarks/moe_ncu_one.py "$@" > "$OUT_DIR/$TAG.log" 2>&1 || { tail -5 "$OUT_DIR/$TAG.log"; exit 1; }
ncu -i "$OUT_DIR/$TAG.ncu-rep" --page raw --csv > "$OUT_DIR/$TAG.raw.csv" 2>/dev/null
ncu -i "$OUT_DIR/$TAG.ncu-rep" --page details --csv > "$OUT_DIR/$TAG.details.csv" 2>/dev/null
# per-SASS-instruction counters (executed instructions, stall samples by reason), one table per launch
ncu -i "$OUT_DIR/$TAG.ncu-rep" --page source --print-source sass --csv > "$OUT_DIR/$TAG.sass.csv" 2>"$OUT_DIR/$TAG.sass.err"
python3 benchmarks/ncu_pipes.py "$OUT_DIR/$TAG" | tee "$OUT_DIR/$TAG.txt"
rm -f "$OUT_DIR/$TAG.ncu-rep"
