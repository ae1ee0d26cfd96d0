#!/usr/bin/env bash
# Makes the example capture shipped in moeprof/data/example_capture: gpt-oss-120b, bf16/fp8/mxfp4,
# batches 1-16384, nsys timings and ncu counters on the expert GEMMs. Needs an NVIDIA GPU, nsys and ncu
# (nsys from $MOEPROF_NSYS, else PATH or /opt/nvidia/nsight-*). Usage, from the repository root:
#   bash scripts/make_example_capture.sh OUT_DIR
# writes the capture to OUT_DIR/example_capture (a second run with the same OUT_DIR resumes it) and
# prints its analysis. To ship it and rebuild the test slice cut from it:
#   python scripts/ship_capture.py OUT_DIR/example_capture
#   python tests/data/example_slice/build.py
set -u
OUT_DIR=${1:?usage: bash scripts/make_example_capture.sh OUT_DIR}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
CAP=$OUT_DIR/example_capture
BATCHES=${BATCHES:-1,4,16,64,256,1024,4096,16384}
# each point is timed after this many seconds of back-to-back layer calls: the clocks and power of
# sustained serving, not of a short burst (0: no sustained calls)
SUSTAIN_S=${SUSTAIN_S:-2}
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader
args=(capture -m gpt-oss-120b -f bf16,fp8,mxfp4 -b "$BATCHES" --collect nsys,ncu -r 20
      --nvtx-include 'moe/*/*/gemm1/' --nvtx-include 'moe/*/*/gemm2/' --sustain-s "$SUSTAIN_S" -o "$CAP" -q)
[ -f "$CAP/manifest.json" ] && args+=(--resume)
timeout "${CAPTURE_TIMEOUT:-900}" python3 -m moeprof "${args[@]}"
echo "capture rc=$?"
du -sh "$CAP"
python3 -m moeprof analyze "$CAP" 2>&1 | tail -60
