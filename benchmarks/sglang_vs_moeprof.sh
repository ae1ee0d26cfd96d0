#!/usr/bin/env bash
# SGLang 0.5.23's Triton fused MoE against moeprof's own layers, GPT-OSS-120B shapes, one GPU, one run.
#
#   benchmarks/sglang_vs_moeprof.sh OUT_DIR [SGLANG_TRIM_DIR]
#
# Needs the trimmed SGLang package (examples/sglang/prepare.py; default .sglang-trim) and nsys
# ($MOEPROF_NSYS or PATH). Steps:
#   1. compile every Triton kernel both programs will use, in parallel processes (fills Triton's
#      on-disk cache, so the measured runs that follow do not compile; nothing is timed here);
#   2. one after the other, each alone on the GPU:
#        moeprof capture --collect nsys -m gpt-oss-120b -- examples/sglang_fused_moe.py --format fp8 --tune
#        the same with --format bf16
#        moeprof capture --collect nsys of moeprof's own fp8 and bf16 layers at the same batches;
#   3. OUT_DIR/<capture>.tar.gz for each capture folder (nsys .sqlite left out: kernels.csv holds
#      what the analysis reads) and OUT_DIR/logs.tar.gz.
# Compare with benchmarks/sglang_gemm_table.py on the unpacked folders.
set -u
out=${1:?usage: sglang_vs_moeprof.sh OUT_DIR [SGLANG_TRIM_DIR]}
trim=${2:-.sglang-trim}
batches=${BATCHES:-1,4,16,64,256,1024,4096}
work=$(mktemp -d)
mkdir -p "$out" "$work/logs" "$work/caps"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
# pack a capture as soon as it is written, so a run stopped later still returns it
pack() {
  tar -C "$work/caps" --exclude='*.sqlite' -czf "$out/$1.tar.gz" "$1"
  tar -C "$work" -czf "$out/logs.tar.gz" logs
}

stamp "compile (parallel, untimed)"
pids=()
for fmt in fp8 bf16; do
  for i in 0 1 2 3 4 5; do
    python3 examples/sglang_fused_moe.py --format $fmt --compile-only --only-config $i --batches "$batches" \
      --sglang-trim "$trim" >"$work/logs/compile_sglang_${fmt}_$i.log" 2>&1 &
    pids+=($!)
  done
  python3 - "$fmt" "$batches" >"$work/logs/compile_moeprof_$fmt.log" 2>&1 <<'EOF' &
import sys
import torch
from moeprof.models.layer import build_layer_for_model
fmt, batches = sys.argv[1], [int(b) for b in sys.argv[2].split(",")]
for b in batches:
    build_layer_for_model("gpt-oss-120b", fmt, b)()
torch.cuda.synchronize()
print("compiled", fmt)
EOF
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || stamp "a compile process failed (see logs)"; done
stamp "compiled"

for fmt in fp8 bf16; do
  python3 -m moeprof.cli capture -q --collect nsys -m gpt-oss-120b --timeout 240 -o "$work/caps/sglang-$fmt" -- \
    python3 examples/sglang_fused_moe.py --format $fmt --tune --batches "$batches" --sglang-trim "$trim" \
    --json "$work/logs/sglang-$fmt.json" >"$work/logs/capture_sglang_$fmt.log" 2>&1
  stamp "sglang $fmt capture rc=$?"
  pack "sglang-$fmt"
  grep "sglang_fused_moe" "$work/caps/sglang-$fmt"/raw/logs/*.log 2>/dev/null | cut -c1-220
done

python3 -m moeprof.cli capture -q --collect nsys -m gpt-oss-120b -f fp8,bf16 -b "$batches" -r 10 --timeout 240 \
  -o "$work/caps/moeprof" >"$work/logs/capture_moeprof.log" 2>&1
stamp "moeprof capture rc=$?"
pack moeprof
ls -la "$out"
stamp "done"
