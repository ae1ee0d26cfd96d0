#!/usr/bin/env bash
# GPU checks run through the device tool (repo root, carry .nsys-libs): the GPU-only tests, the
# torch-profiler fallback collector and external mode on the real workload. Results under $OUT.
set -u
export LD_LIBRARY_PATH=$PWD/.nsys-libs:${LD_LIBRARY_PATH:-}
export MOEPROF_NSYS=/opt/nvidia/nsight-compute/2025.3.1/host/target-linux-x64/nsys
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
timeout 240 python3 -m pytest -q -m gpu tests/ -p no:cacheprovider > $OUT/gpu_tests.txt 2>&1
echo "gpu tests rc=$?" >> $OUT/gpu_tests.txt
{
  timeout 150 python3 -m moeprof capture -m gpt-oss-120b -f fp8,mxfp4 -b 1,64 --collect torch -r 5 -o /tmp/cap_torch -q
  echo "torch capture rc=$?"
  python3 -m moeprof analyze /tmp/cap_torch 2>&1 | head -40
  timeout 150 python3 -m moeprof capture --collect nsys -o /tmp/cap_ext -q -- python3 examples/serve_bench.py --formats fp8,mxfp4 --batch 1,64 --calls 5
  echo "external capture rc=$?"
  python3 -m moeprof analyze /tmp/cap_ext 2>&1 | head -60
} > $OUT/collectors.txt 2>&1
tar czf $OUT/captures.tar.gz -C /tmp cap_torch cap_ext 2>/dev/null
tail -3 $OUT/gpu_tests.txt; grep "rc=" $OUT/collectors.txt
