"""Verdict wording from small tables: numbers in the reasons, n/a with reasons, crossover, summary."""

from __future__ import annotations

import numpy as np
import pandas as pd

from moeprof.analysis.verdict import measured_crossover, pick_pair, summary, verdicts


def _layer(rows):
    return pd.DataFrame(rows, columns=["format", "batch", "layer_time_median_ns", "outside_gemm_ns", "outside_gemm_pct"])


def _samples(layer, n=5, spread=0.01):
    out = []
    for _, r in layer.iterrows():
        for i in range(n):
            out.append((r["format"], r["batch"], r["layer_time_median_ns"] * (1 + spread * (i - n // 2))))
    return pd.DataFrame(out, columns=["format", "batch", "time_ns"])


ROLES = pd.DataFrame({"format": ["fp8", "mxfp4"], "batch": [1, 1], "role": ["sort", "quant"],
                      "time_median_ns": [2000.0, 3000.0]})


def test_winner_speedup_and_na_reasons():
    layer = _layer([("fp8", 1, 50_000.0, 5000.0, 10.0), ("mxfp4", 1, 40_000.0, 6000.0, 15.0)])
    [v] = verdicts(layer, ROLES, _samples(layer))
    assert (v.batch, v.winner, v.runner_up) == (1, "mxfp4", "fp8")
    assert v.speedup == 1.25 and v.significant is True
    assert "1.25x faster" in v.reasons[0] and "40.0 µs vs 50.0 µs" in v.reasons[0]
    text = " ".join(v.reasons)
    # no counters, no cost model: every such reason says n/a and why
    assert "tensor-core path n/a (no ncu tensor-op counters)" in text
    assert "measured bound n/a (no ncu counters in this capture)" in text
    assert "padding waste n/a" in text
    assert "mxfp4 6.0 µs (15% of kernel time, mostly quant 3.0 µs)" in text


def test_reasons_use_counters():
    layer = _layer([("fp8", 64, 80_000.0, 8000.0, 10.0), ("mxfp4", 64, 100_000.0, 9000.0, 9.0)])
    layer["dram_bytes"] = [2.0e9, 1.1e9]
    layer["tensor_path"] = ["fp8", "bf16"]
    layer["mma_path_model"] = ["fp8", "bf16"]
    layer["tensor_ops_fp8"] = [1.1e12, 0.0]
    layer["tensor_ops_bf16"] = [0.0, 1.3e12]
    layer["tensor_ops"] = [1.1e12, 1.3e12]
    layer["useful_flops"] = [1.0e12, 1.0e12]
    layer["padding_pct"] = [10.0, 30.0]
    layer["dram_bw_pct_of_peak"] = [70.0, 40.0]
    layer["tensor_pct_of_peak"] = [20.0, 55.0]
    [v] = verdicts(layer, ROLES, _samples(layer))
    text = " ".join(v.reasons)
    assert v.winner == "fp8"
    assert "moved 0.55x the DRAM bytes of fp8" in text
    assert "mxfp4: expert GEMMs ran on the BF16 MMA path (100% of tensor ops" in text
    assert "fp8: expert GEMMs are memory-bound as measured (70% of DRAM peak, 20% of the FP8 MMA peak)" in text
    assert "mxfp4: expert GEMMs are compute-bound as measured" in text
    assert "mxfp4: 30.0% of executed tensor ops are padding" in text


def test_too_few_repeats_and_noise():
    layer = _layer([("fp8", 1, 50_000.0, 0.0, 0.0), ("mxfp4", 1, 49_900.0, 0.0, 0.0)])
    [v] = verdicts(layer, ROLES, _samples(layer, n=1))
    assert v.significant is None and "too few repeats" in v.reasons[0]
    [v] = verdicts(layer, ROLES, _samples(layer, n=6, spread=0.05))
    assert v.significant is False and "NOT significant" in v.reasons[0]


def test_crossover_and_summary():
    rows = []
    for b, t8, t4 in [(1, 50.0, 30.0), (8, 60.0, 40.0), (64, 80.0, 90.0), (512, 200.0, 300.0)]:
        rows += [("fp8", b, t8 * 1e3, 0.0, 0.0), ("mxfp4", b, t4 * 1e3, 0.0, 0.0)]
    layer = _layer(rows)
    x = measured_crossover(layer, "fp8", "mxfp4")
    assert 8 < x < 64
    mem = pd.DataFrame({"format": ["fp8", "mxfp4"], "weight_bytes_per_gpu": [119e9, 65e9],
                        "kv_free_bytes_per_gpu": [10e9, 64e9], "fits": [True, True], "reserve_fraction": [0.1, 0.1]})
    s = summary(layer, [], pick_pair(["bf16", "fp8", "mxfp4"]), (3400.0, "roofline model"), mem, None, "NVIDIA H200")
    assert s["pair"] == ["fp8", "mxfp4"]
    assert s["answer"].startswith("mxfp4 up to batch 8, fp8 from batch 64")
    assert "54.00 GB more HBM" in s["answer"]
    assert any("predicted: batch ~3400" in line for line in s["lines"])
    assert any("KV-cache room 10.00 GB vs 64.00 GB" in line for line in s["lines"])


def test_summary_without_memory():
    layer = _layer([("fp8", 1, 5.0, 0.0, 0.0), ("mxfp4", 1, 4.0, 0.0, 0.0)])
    s = summary(layer, [], ("fp8", "mxfp4"), (None, "n/a (no spec)"), pd.DataFrame(), "unknown model", "GPU")
    assert any(line == "Memory effect n/a (unknown model)." for line in s["lines"])
    assert np.isnan(s["measured_crossover_batch"] or np.nan)
