#!/usr/bin/env bash
# Captures examples/grouped_mm_gptoss.py (GPT-OSS-120B experts through torch._scaled_grouped_mm /
# torch._grouped_mm) as a program moeprof did not write, on the GPU machine, from the repo root:
#   scripts/capture_grouped_mm.sh OUTDIR
# A_fp8_nolabels: no labels, no marks, nsys + ncu (GEMM kernels only, bounded launch count);
# B_fp8:  --label format=fp8 + --nvtx-pattern over the program's own NVTX ranges (nsys);
# B_bf16: --label format=bf16, batches from moeprof.mark (nsys).
# Each capture folder is tarred into OUTDIR without the large nsys report/sqlite.
set -u
OUTDIR=${1:?usage: $0 OUTDIR}
mkdir -p "$OUTDIR"
export MOEPROF_NSYS=${MOEPROF_NSYS:-/opt/nvidia/nsight-compute/2025.3.1/host/target-linux-x64/nsys}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
CAP=${CAP:-/tmp/grouped_mm_captures}
rm -rf "$CAP"; mkdir -p "$CAP"
EX=(python3 examples/grouped_mm_gptoss.py --batches 1,16,256,4096)
keep() {  # tar one capture folder, leaving out the nsys report and its sqlite export
  tar czf "$OUTDIR/$1.tar.gz" -C "$CAP" --exclude='*.nsys-rep' --exclude='*.sqlite' "$1"
  du -sh "$CAP/$1" "$OUTDIR/$1.tar.gz"
}
t0=$SECONDS
python3 -m moeprof capture -q --collect nsys,ncu -m gpt-oss-120b \
  --ncu-kernel 'gemm|Gemm|GEMM|cutlass|nvjet|xmma' --ncu-launch-count 48 \
  -o "$CAP/A_fp8_nolabels" -- "${EX[@]}" --repeats 3 --warmup 1 --format fp8 --marks none
echo "A rc=$? $((SECONDS - t0)) s"; keep A_fp8_nolabels
python3 -m moeprof capture -q --collect nsys -m gpt-oss-120b --label format=fp8 \
  --nvtx-pattern 'tokens=(?P<batch>\d+)' -o "$CAP/B_fp8" -- "${EX[@]}" --format fp8 --marks nvtx
echo "B_fp8 rc=$? $((SECONDS - t0)) s"; keep B_fp8
python3 -m moeprof capture -q --collect nsys -m gpt-oss-120b --label format=bf16 \
  -o "$CAP/B_bf16" -- "${EX[@]}" --format bf16 --marks moeprof
echo "B_bf16 rc=$? $((SECONDS - t0)) s"; keep B_bf16
python3 -m moeprof analyze "$CAP/A_fp8_nolabels" 2>&1 | tail -40
python3 -m moeprof analyze "$CAP/B_fp8" "$CAP/B_bf16" 2>&1 | tail -40
