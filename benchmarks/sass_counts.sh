#!/bin/bash
# SASS opcode counts of the gemm1 cubins that benchmarks/moe_swapab_sweep.py dumps into $OUT
# (nvdisasm / cuobjdump from Triton's bundle or the CUDA install). Usage, on the GPU machine:
#   OUT=<dir with *.cubin> bash benchmarks/sass_counts.sh
B=$(python3 -c 'import triton,os;print(os.path.join(os.path.dirname(triton.__file__),"backends/nvidia/bin"))')
D=""
for c in "$B/nvdisasm" "$(command -v nvdisasm)" /usr/local/cuda/bin/nvdisasm "$B/cuobjdump" "$(command -v cuobjdump)" /usr/local/cuda/bin/cuobjdump; do
  [ -x "$c" ] && { D=$c; break; }
done
echo "DISASM $D"; ls $B 2>/dev/null | tr '\n' ' '; echo
for f in $OUT/*.cubin; do
  if [[ $D == *nvdisasm ]]; then $D -c $f > /tmp/s.txt 2>&1; else $D -sass $f > /tmp/s.txt 2>&1; fi
  printf "SASS %-28s" $(basename $f)
  for op in LOP3 SHF PRMT HMUL2 HFMA2 IMAD.SHL HMMA HGMMA LDSM LDS STS LDGSTS BAR WARPGROUP; do printf " %s=%s" $op $(grep -cE "\b$op\b" /tmp/s.txt); done
  echo " lines=$(wc -l < /tmp/s.txt)"
done
