#!/usr/bin/env bash
# One-off probe of the GPU machine's profiling tools (run through the device tool
# from the repo root). Writes everything to $OUT/probe.tar.gz.
set -u
export LD_LIBRARY_PATH=$PWD/.nsys-libs:${LD_LIBRARY_PATH:-}
NSYS=/opt/nvidia/nsight-compute/2025.3.1/host/target-linux-x64/nsys
P=/tmp/probe; mkdir -p $P; OLDPWD_REPO=$PWD
{
  nvidia-smi; nvidia-smi -q -d CLOCK,MEMORY | head -80
  python3 -c "import torch,triton,sys;print(sys.version);print(torch.__version__,torch.version.cuda,triton.__version__);p=torch.cuda.get_device_properties(0);print(p)"
  ncu --version; $NSYS --version
  ls /opt/nvidia/nsight-compute/2025.3.1/extras/python 2>&1
  python3 -c "import sys;sys.path.append('/opt/nvidia/nsight-compute/2025.3.1/extras/python');import ncu_report;print('ncu_report ok',ncu_report.__file__)"
  which nsys ncu; ls /opt/nvidia/ /opt/nvidia/nsight-compute/ 2>&1
} > $P/env.txt 2>&1
ncu --query-metrics --chip gh100 > $P/query_metrics_gh100.txt 2>&1
ncu --query-metrics-mode suffix --metrics sm__ops_path_tensor_src_fp8,sm__inst_executed_pipe_tensor_op_gmma,dram__bytes_read --chip gh100 > $P/query_suffix.txt 2>&1
cat > $P/prog.py <<'PY'
import torch, time
dev = "cuda"
a = torch.randn(256, 2880, device=dev, dtype=torch.bfloat16)
w = torch.randn(5760, 2880, device=dev, dtype=torch.bfloat16)
a8 = a.to(torch.float8_e4m3fn); w8 = w.to(torch.float8_e4m3fn)
sa = torch.ones(256, 1, device=dev); sw = torch.ones(1, 5760, device=dev)
for i in range(3):
    torch.cuda.nvtx.range_push(f"moe/bf16/256/gemm1")
    y = a @ w.t()
    torch.cuda.nvtx.range_pop()
    torch.cuda.nvtx.range_push(f"moe/fp8/256/gemm1")
    y8 = torch._scaled_mm(a8, w8.t(), scale_a=sa, scale_b=sw, out_dtype=torch.bfloat16)
    torch.cuda.nvtx.range_pop()
    torch.cuda.nvtx.range_push("other/softmax")
    z = torch.softmax(y.float(), -1)
    torch.cuda.nvtx.range_pop()
torch.cuda.synchronize()
print("ok", y.shape, y8.shape, z.sum().item())
PY
cd $P
timeout 200 $NSYS profile --trace=cuda,nvtx --sample=none --cpuctxsw=none --backtrace=none -o $P/probe -f true python3 prog.py > nsys_log.txt 2>&1
timeout 100 $NSYS export --type sqlite -o $P/probe.sqlite -f true $P/probe.nsys-rep >> nsys_log.txt 2>&1
M=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,sm__throughput.avg.pct_of_peak_sustained_elapsed,dram__throughput.avg.pct_of_peak_sustained_elapsed,lts__t_sector_hit_rate.pct,sm__warps_active.avg.pct_of_peak_sustained_active,sm__cycles_elapsed.avg.per_second,dram__cycles_elapsed.avg.per_second,dram__bytes.sum.peak_sustained,gpc__cycles_elapsed.max,launch__grid_size,launch__block_size
timeout 200 ncu --clock-control none --nvtx --nvtx-include "moe/" --metrics $M -o $P/probe -f python3 prog.py > ncu_log.txt 2>&1
ncu --import $P/probe.ncu-rep --csv --page raw > $P/probe_raw.csv 2>>ncu_log.txt
ncu --import $P/probe.ncu-rep --csv --page raw --print-units base > $P/probe_raw_base.csv 2>>ncu_log.txt
ncu --import $P/probe.ncu-rep --print-nvtx-rename kernel --csv --page details > $P/probe_details.csv 2>>ncu_log.txt
# full tensor metric list on a real launch
timeout 200 ncu --clock-control none --nvtx --nvtx-include "moe/fp8/" --launch-count 1 --section ComputeWorkloadAnalysis --metrics regex:sm__ops_path_tensor.*,regex:sm__inst_executed_pipe_tensor.* --csv --page raw python3 prog.py > $P/tensor_metrics_fp8.csv 2>&1
timeout 200 ncu --clock-control none --nvtx --nvtx-include "moe/bf16/" --launch-count 1 --metrics regex:sm__ops_path_tensor.*,regex:sm__inst_executed_pipe_tensor.* --csv --page raw python3 prog.py > $P/tensor_metrics_bf16.csv 2>&1
python3 $OLDPWD_REPO/scripts/probe_dot_scaled.py > $P/dot_scaled.txt 2>&1
ls -la $P >> $P/env.txt
cd /tmp && tar czf $OUT/probe.tar.gz probe
ls -la $OUT
tail -5 $P/nsys_log.txt $P/ncu_log.txt
