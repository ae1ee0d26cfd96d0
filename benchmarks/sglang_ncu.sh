#!/usr/bin/env bash
# ncu counters of SGLang's fused_moe_kernel (fp8 W8A8) at one batch, for some tile configurations.
#
#   benchmarks/sglang_ncu.sh OUT_DIR [SGLANG_TRIM_DIR] [BATCH] [CONFIG_INDEXES]
#
# CONFIG_INDEXES are TILE_CANDIDATES["fp8"] indexes of examples/sglang_fused_moe.py (default "0 3":
# SGLang's default for <= 128 tokens and the BLOCK_M=16 swap-AB tile). Compiles first (parallel,
# untimed), then one ncu run per configuration on the second layer call's two fused_moe_kernel
# launches (gate_up, down): time, DRAM bytes, tensor ops by source type (FP8 vs FP16 path),
# tensor-pipe activity. Writes OUT_DIR/ncu_fp8_b<batch>_cfg<i>.csv.
set -u
out=${1:?usage: sglang_ncu.sh OUT_DIR [SGLANG_TRIM_DIR] [BATCH] [CONFIG_INDEXES]}
trim=${2:-.sglang-trim}
batch=${3:-64}
cfgs=${4:-0 3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
metrics=gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
metrics=$metrics,sm__ops_path_tensor_src_fp8_sparsity_off.sum,sm__ops_path_tensor_src_fp16.sum
metrics=$metrics,sm__inst_executed_pipe_tensor.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed
metrics=$metrics,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active
for i in $cfgs; do
  python3 examples/sglang_fused_moe.py --format fp8 --compile-only --only-config "$i" --batches "$batch" \
    --sglang-trim "$trim" >/dev/null 2>&1 &
done
wait
for i in $cfgs; do
  # warm-up call (2 launches), then the measured call (2 launches)
  ncu --clock-control none --kernel-name fused_moe_kernel --launch-skip 2 --launch-count 2 --metrics "$metrics" \
    --csv python3 examples/sglang_fused_moe.py --format fp8 --batches "$batch" --config "$i" --warmup 1 \
    --repeats 1 --sglang-trim "$trim" >"$out/ncu_fp8_b${batch}_cfg$i.csv" 2>"$out/ncu_fp8_b${batch}_cfg$i.log"
  echo "cfg $i rc=$?"
  grep -E '"fused_moe_kernel"' "$out/ncu_fp8_b${batch}_cfg$i.csv" | cut -d, -f5,12- | cut -c1-200
done
