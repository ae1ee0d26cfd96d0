#!/usr/bin/env bash
# Makes the raw profiler output the probe test fixtures are cut from (tests/fixtures/README.md says how
# each was cut; tests/data/analysis_probe2/build.py rebuilds that capture from it). Needs an NVIDIA GPU,
# PyTorch, nsys and ncu. Usage, from the repository root:
#   bash scripts/make_probe_fixtures.sh OUT_DIR
# OUT_DIR gets prog.py (one 256-token "layer" in bf16 and fp8, twice, inside NVTX ranges
# moe/<fmt>/256/<phase>), p2.nsys-rep + p2.sqlite (nsys), p2.ncu-rep + p2_raw_base.csv (ncu),
# torch_trace.json (PyTorch profiler) and query_metrics_gh100.txt (ncu's metric list for Hopper).
# nsys is taken from $MOEPROF_NSYS, else PATH; libraries nsys lacks on a host can be put on
# LD_LIBRARY_PATH by the caller.
set -u
OUT_DIR=${1:?usage: bash scripts/make_probe_fixtures.sh OUT_DIR}
mkdir -p "$OUT_DIR"; OUT_DIR=$(cd "$OUT_DIR" && pwd); cd "$OUT_DIR"
NSYS=${MOEPROF_NSYS:-nsys}
cat > prog.py <<'PY'
import sys, torch
dev = "cuda"
a = torch.randn(256, 2880, device=dev, dtype=torch.bfloat16)
w = torch.randn(5760, 2880, device=dev, dtype=torch.bfloat16)
a8 = a.to(torch.float8_e4m3fn); w8 = w.to(torch.float8_e4m3fn)
sa = torch.ones(256, 1, device=dev); sw = torch.ones(1, 5760, device=dev)
N = torch.cuda.nvtx
def layer(fmt):
    N.range_push("moe"); N.range_push(fmt); N.range_push("256")
    N.range_push("route"); r = torch.topk(torch.softmax(a.float() @ a.float()[:128].t(), -1), 4); N.range_pop()
    N.range_push("gemm1")
    y = a @ w.t() if fmt == "bf16" else torch._scaled_mm(a8, w8.t(), scale_a=sa, scale_b=sw, out_dtype=torch.bfloat16)
    N.range_pop()
    N.range_push("act"); z = torch.nn.functional.silu(y); N.range_pop()
    N.range_pop(); N.range_pop(); N.range_pop()
    return z
for i in range(2): layer("bf16"); layer("fp8")
torch.cuda.synchronize()
if len(sys.argv) > 1:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA], record_shapes=False) as prof:
        for i in range(2): layer("bf16"); layer("fp8")
        torch.cuda.synchronize()
    prof.export_chrome_trace(sys.argv[1])
print("ok")
PY
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 prog.py torch_trace.json > torch_log.txt 2>&1
timeout 200 "$NSYS" profile --trace=cuda,nvtx --sample=none --cpuctxsw=none --backtrace=none -o p2 -f true python3 prog.py > nsys_log.txt 2>&1
timeout 100 "$NSYS" export --type sqlite -o p2.sqlite -f true p2.nsys-rep >> nsys_log.txt 2>&1
M=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,sm__pipe_tensor_op_hmma_cycles_active.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed,sm__ops_path_tensor_src_fp8_sparsity_off.sum,sm__ops_path_tensor_src_fp8_sparsity_off.sum.peak_sustained,sm__ops_path_tensor_op_hgmma_src_bf16_dst_fp32_sparsity_off.sum,sm__ops_path_tensor_op_hgmma_src_bf16_dst_fp32_sparsity_off.sum.peak_sustained,sm__ops_path_tensor_op_hmma_src_bf16_dst_fp32_sparsity_off.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,dram__throughput.avg.pct_of_peak_sustained_elapsed,lts__t_sector_hit_rate.pct,sm__warps_active.avg.pct_of_peak_sustained_active,sm__cycles_elapsed.avg.per_second,dram__cycles_elapsed.avg.per_second,dram__bytes.sum.peak_sustained,sm__cycles_elapsed.max,device__attribute_multiprocessor_count,launch__grid_size
timeout 200 ncu --clock-control none --cache-control all --nvtx --metrics $M -o p2 -f python3 prog.py > ncu_log.txt 2>&1
ncu --import p2.ncu-rep --csv --page raw --print-units base > p2_raw_base.csv 2>>ncu_log.txt
ncu --query-metrics --chip gh100 > query_metrics_gh100.txt 2>&1
ls -la "$OUT_DIR"; tail -2 nsys_log.txt ncu_log.txt
