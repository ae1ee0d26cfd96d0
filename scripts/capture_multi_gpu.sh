#!/usr/bin/env bash
# Capture the tp=2 and ep=2 sharded MoE layer (gpt-oss-120b shapes, fp8 and mxfp4, batches 1, 64,
# 1024) on a machine with 2 GPUs, one Nsight Systems report per rank, then analyze both captures.
# Usage: scripts/capture_multi_gpu.sh OUTDIR [SECONDS_PER_CAPTURE]
# Run from the repository root. nsys is found on PATH or via $MOEPROF_NSYS.
set -u
out=${1:?usage: scripts/capture_multi_gpu.sh OUTDIR [SECONDS_PER_CAPTURE]}
limit=${2:-600}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# NVLink multicast off in every process (the 2-GPU machines do not allow it)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=index,name,uuid,driver_version,clocks.max.sm --format=csv
nvidia-smi topo -m
for par in tp ep; do
  start=$(date +%s)
  timeout "$limit" python3 -m moeprof.cli capture --$par 2 -m gpt-oss-120b -f fp8,mxfp4 -b 1,64,1024 \
    --collect nsys -r 5 --warmup 2 -q -o "$out/${par}2"
  echo "capture --$par 2: exit $? after $(( $(date +%s) - start )) s"
done
for par in tp ep; do
  [ -f "$out/${par}2/manifest.json" ] && python3 -m moeprof.cli analyze "$out/${par}2" > "$out/${par}2.analyze.txt" 2>&1
  echo "analyze ${par}2: exit $?"
done
