"""The capture folder contract shared by the profiler (writer) and the analysis (reader).

A capture folder holds:
  manifest.json   versioned description of the run (see MANIFEST_VERSION and docs/capture-format.md)
  kernels.csv     normalized kernel table: one row per kernel launch seen by a collector
  points.csv      one row per (format, batch, repeat) layer call timed with CUDA events
  raw/            the profilers' own files (.nsys-rep, .sqlite, .ncu-rep, ncu csv, torch trace)

Columns carry their units in their names. Counter columns are empty (NaN) where a collector
did not read them; the manifest says why.
"""

from __future__ import annotations

MANIFEST_VERSION = 1
MANIFEST_FILE = "manifest.json"
KERNELS_FILE = "kernels.csv"
POINTS_FILE = "points.csv"
RAW_DIR = "raw"

# kernels.csv: columns every writer must produce (values may be empty where unknown).
KERNEL_COLUMNS: dict[str, str] = {
    "collector": "str",         # nsys | ncu | torch
    "format": "str",            # weight format name (bf16, fp8, ...) or '' outside MoE ranges
    "batch": "Int64",           # tokens per layer call, <NA> outside MoE ranges
    "phase": "str",             # NVTX phase: route, sort, quant, gemm1, act, gemm2, combine, or ''
    "repeat": "Int64",          # index of the layer call within the point
    "nvtx_path": "str",         # full NVTX push/pop path open at launch, '/'-joined
    "kernel_name": "str",       # demangled kernel name (short form: no argument list)
    "start_ns": "Int64",        # GPU start timestamp (collector clock)
    "duration_ns": "float64",   # GPU duration
    "grid_x": "Int64", "grid_y": "Int64", "grid_z": "Int64",
    "block_x": "Int64", "block_y": "Int64", "block_z": "Int64",
    "registers_per_thread": "Int64",
    "stream_id": "Int64",
}

# Counter columns (ncu). Name -> ncu metric that fills it.
COUNTER_METRICS: dict[str, str] = {
    "gpu_time_ns": "gpu__time_duration.sum",
    "dram_read_bytes": "dram__bytes_read.sum",
    "dram_write_bytes": "dram__bytes_write.sum",
    "tensor_pipe_active_cycles": "sm__pipe_tensor_op_hmma_cycles_active.sum",
    "tensor_pipe_active_pct": "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed",
    "tensor_ops_fp8": "sm__ops_path_tensor_src_fp8_sparsity_off.sum",
    "tensor_ops_bf16_hgmma": "sm__ops_path_tensor_op_hgmma_src_bf16_dst_fp32_sparsity_off.sum",
    "tensor_ops_bf16_hmma": "sm__ops_path_tensor_op_hmma_src_bf16_dst_fp32_sparsity_off.sum",
    # FP16-source tensor ops: where a compiler upcasts FP8 operands (e.g. mma.sync paths) they land here
    "tensor_ops_fp16": "sm__ops_path_tensor_src_fp16.sum",
    "tensor_inst_executed": "sm__inst_executed_pipe_tensor.sum",
    "sm_throughput_pct": "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "dram_throughput_pct": "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "l2_hit_rate_pct": "lts__t_sector_hit_rate.pct",
    "achieved_occupancy_pct": "sm__warps_active.avg.pct_of_peak_sustained_active",
    "sm_clock_hz": "sm__cycles_elapsed.avg.per_second",
    "dram_clock_hz": "dram__cycles_elapsed.avg.per_second",
    "dram_bytes_per_cycle_peak": "dram__bytes.sum.peak_sustained",
    "sm_count": "device__attribute_multiprocessor_count",
    # per-cycle peaks and elapsed cycles, to derive tensor peaks (ops/cycle x cycles)
    "tensor_ops_fp8_peak_per_cycle": "sm__ops_path_tensor_src_fp8_sparsity_off.sum.peak_sustained",
    "tensor_ops_bf16_hgmma_peak_per_cycle": "sm__ops_path_tensor_op_hgmma_src_bf16_dst_fp32_sparsity_off.sum.peak_sustained",
    "sm_cycles_elapsed_max": "sm__cycles_elapsed.max",
}

# points.csv: CUDA-event timing of whole layer calls, always collected.
POINT_COLUMNS: dict[str, str] = {
    "format": "str",
    "batch": "Int64",
    "repeat": "Int64",
    "layer_time_ns": "float64",
    "experts_touched": "Int64",  # experts that received at least one token (measured from routing)
    "kernel": "str",             # implementation that ran the point (e.g. moeprof-triton)
}

# NVTX: layer calls are wrapped in nested push/pop ranges moe > <format> > <batch> > <phase>,
# so the path reads moe/<format>/<batch>/<phase>.
NVTX_ROOT = "moe"
PHASES = ["route", "sort", "quant", "gemm1", "act", "gemm2", "combine"]
