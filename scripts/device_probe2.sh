#!/usr/bin/env bash
# Probe 2: nested NVTX ranges under nsys and ncu (filter syntax, raw CSV, ncu_report, torch profiler trace).
set -u
export LD_LIBRARY_PATH=$PWD/.nsys-libs:${LD_LIBRARY_PATH:-}
NSYS=/opt/nvidia/nsight-compute/2025.3.1/host/target-linux-x64/nsys
P=/tmp/probe2; mkdir -p $P; cd $P
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
python3 prog.py $P/torch_trace.json > torch_log.txt 2>&1
timeout 200 $NSYS profile --trace=cuda,nvtx --sample=none --cpuctxsw=none --backtrace=none -o $P/p2 -f true python3 prog.py > nsys_log.txt 2>&1
timeout 100 $NSYS export --type sqlite -o $P/p2.sqlite -f true $P/p2.nsys-rep >> nsys_log.txt 2>&1
for f in "moe/" "moe/*/*/gemm1/" "[moe" "regex:moe" "moe/bf16/" ; do
  echo "=== filter $f" >> filters.txt
  timeout 120 ncu --clock-control none --nvtx --nvtx-include "$f" --metrics gpu__time_duration.sum --csv --page raw python3 prog.py 2>&1 | grep -vE "^==PROF==" | cut -c1-300 | head -8 >> filters.txt
done
M=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,sm__pipe_tensor_op_hmma_cycles_active.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed,sm__ops_path_tensor_src_fp8_sparsity_off.sum,sm__ops_path_tensor_src_fp8_sparsity_off.sum.peak_sustained,sm__ops_path_tensor_op_hgmma_src_bf16_dst_fp32_sparsity_off.sum,sm__ops_path_tensor_op_hgmma_src_bf16_dst_fp32_sparsity_off.sum.peak_sustained,sm__ops_path_tensor_op_hmma_src_bf16_dst_fp32_sparsity_off.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,dram__throughput.avg.pct_of_peak_sustained_elapsed,lts__t_sector_hit_rate.pct,sm__warps_active.avg.pct_of_peak_sustained_active,sm__cycles_elapsed.avg.per_second,dram__cycles_elapsed.avg.per_second,dram__bytes.sum.peak_sustained,sm__cycles_elapsed.max,device__attribute_multiprocessor_count,launch__grid_size,bogus__metric_name.sum
timeout 200 ncu --clock-control none --cache-control all --nvtx --metrics $M -o $P/p2 -f python3 prog.py > ncu_log.txt 2>&1
M2=${M%,bogus__metric_name.sum}
timeout 200 ncu --clock-control none --cache-control all --nvtx --metrics $M2 -o $P/p2 -f python3 prog.py >> ncu_log.txt 2>&1
ncu --import $P/p2.ncu-rep --csv --page raw > $P/p2_raw.csv 2>>ncu_log.txt
ncu --import $P/p2.ncu-rep --csv --page raw --print-units base > $P/p2_raw_base.csv 2>>ncu_log.txt
ncu --import $P/p2.ncu-rep --csv --print-nvtx-rename kernel --page raw --print-units base > $P/p2_raw_nvtxrename.csv 2>>ncu_log.txt
python3 - > ncu_report_api.txt 2>&1 <<'PY'
import sys; sys.path.append('/opt/nvidia/nsight-compute/2025.3.1/extras/python'); import ncu_report
ctx = ncu_report.load_report('/tmp/probe2/p2.ncu-rep')
r = ctx.range_by_idx(0); print('ranges', ctx.num_ranges(), 'actions', r.num_actions())
a = r.action_by_idx(0); print(a.name(), a.name(ncu_report.IAction.NameBase_DEMANGLED))
print(sorted(a.metric_names())[:400])
st = a.nvtx_state(); print('nvtx domains', list(st.domains()))
for d in st.domains():
    dom = st.domain_by_id(d); print(d, dom.name(), dom.push_pop_ranges())
for n in ['gpu__time_duration.sum','dram__bytes_read.sum','launch__grid_size','device__attribute_display_name']:
    m = a.metric_by_name(n); print(n, m.metric_type(), m.unit() if m else None, m.as_double() if m and m.metric_type()!=ncu_report.IMetric.MetricType_STRING else m.as_string())
PY
cd /tmp && tar czf $OUT/probe2.tar.gz probe2 && ls -la $OUT
cat $P/filters.txt | cut -c1-200; tail -3 $P/ncu_log.txt
