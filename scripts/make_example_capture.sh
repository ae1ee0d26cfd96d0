#!/usr/bin/env bash
# Makes the real example capture shipped in moeprof/data/example_capture (run on the GPU machine
# through the device tool from the repo root, carrying .nsys-libs). Writes $OUT/capture.tar.gz.
set -u
export LD_LIBRARY_PATH=$PWD/.nsys-libs:${LD_LIBRARY_PATH:-}
export MOEPROF_NSYS=/opt/nvidia/nsight-compute/2025.3.1/host/target-linux-x64/nsys
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
CAP=/tmp/example_capture
BATCHES=${BATCHES:-1,4,16,64,256,1024,4096,16384}
args=(capture -m gpt-oss-120b -f bf16,fp8,mxfp4 -b "$BATCHES" --collect nsys,ncu -r 20
      --nvtx-include 'moe/*/*/gemm1/' --nvtx-include 'moe/*/*/gemm2/' -o "$CAP" -q)
[ -d "$CAP" ] && args+=(--resume)
timeout "${CAPTURE_TIMEOUT:-500}" python3 -m moeprof "${args[@]}"
echo "capture rc=$?"
du -sh "$CAP"; find "$CAP" -type f -size +1M -exec ls -la {} \;
tar czf "$OUT/capture.tar.gz" -C /tmp example_capture
python3 -m moeprof analyze "$CAP" 2>&1 | tail -60
