#!/usr/bin/env bash
# Checks that need the GPU machine: the GPU-only tests, the torch-profiler fallback collector and
# external mode on the real workload. Usage, from the repository root:
#   bash scripts/device_checks.sh OUT_DIR
# writes gpu_tests.txt, collectors.txt and the two captures (cap_torch, cap_ext) under OUT_DIR.
set -u
OUT_DIR=${1:?usage: bash scripts/device_checks.sh OUT_DIR}
mkdir -p "$OUT_DIR"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT_DIR/gpu.txt"
timeout 240 python3 -m pytest -q -m gpu tests/ -p no:cacheprovider > "$OUT_DIR/gpu_tests.txt" 2>&1
echo "gpu tests rc=$?" >> "$OUT_DIR/gpu_tests.txt"
{
  timeout 150 python3 -m moeprof capture -m gpt-oss-120b -f fp8,mxfp4 -b 1,64 --collect torch -r 5 -o "$OUT_DIR/cap_torch" -q
  echo "torch capture rc=$?"
  python3 -m moeprof analyze "$OUT_DIR/cap_torch" 2>&1 | head -40
  timeout 150 python3 -m moeprof capture --collect nsys -o "$OUT_DIR/cap_ext" -q -- python3 examples/serve_bench.py --formats fp8,mxfp4 --batch 1,64 --calls 5
  echo "external capture rc=$?"
  python3 -m moeprof analyze "$OUT_DIR/cap_ext" 2>&1 | head -60
} > "$OUT_DIR/collectors.txt" 2>&1
tail -3 "$OUT_DIR/gpu_tests.txt"; grep "rc=" "$OUT_DIR/collectors.txt"
