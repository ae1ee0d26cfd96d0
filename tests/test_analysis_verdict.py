"""Verdict wording from small tables: numbers in the reasons, n/a with reasons, crossover, summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

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
    layer["padding_pct"] = (layer["tensor_ops"] - layer["useful_flops"]) / layer["tensor_ops"] * 100
    layer["dram_bw_pct_of_peak"] = [70.0, 40.0]
    layer["tensor_pct_of_peak"] = [20.0, 55.0]
    layer["tensor_busy_pct"] = [25.0, 65.0]
    layer["tensor_busy_source"] = "tensor pipe active (ncu)"
    layer["bound_measured"] = ["memory", "compute"]
    [v] = verdicts(layer, ROLES, _samples(layer))
    text = " ".join(v.reasons)
    assert v.winner == "fp8"
    assert "moved 0.55x the DRAM bytes of fp8" in text
    assert "mxfp4: expert GEMMs ran on the BF16 MMA path (100% of tensor ops" in text
    assert "fp8: expert GEMMs are memory-bound as measured (70% of DRAM peak; tensor pipe 25% active)" in text
    assert "mxfp4: expert GEMMs are compute-bound as measured (tensor pipe 65% active, 55% of the BF16 MMA peak" in text
    # padding share of the executed work: (1.3e12 - 1e12) / 1.3e12
    assert "mxfp4: executed tensor ops are 1.30x the useful FLOPs (23% padding" in text
    assert "fp8: executed tensor ops are 1.10x the useful FLOPs (9.1% padding" in text


def test_latency_bound_and_headline_when_the_roofline_favourite_loses():
    layer = _layer([("fp8", 64, 80_000.0, 8000.0, 10.0), ("mxfp4", 64, 100_000.0, 9000.0, 9.0)])
    layer["gemm_time_median_ns"] = [72_000.0, 91_000.0]
    layer["dram_bytes"] = [2.0e9, 1.1e9]
    layer["t_roofline_ns"] = [60_000.0, 33_000.0]
    layer["dram_bw_pct_of_peak"] = [79.4, 26.2]
    layer["tensor_busy_pct"] = [13.0, 7.0]
    layer["tensor_busy_source"] = "tensor pipe active (ncu)"
    layer["sm_throughput_pct"] = [21.0, 43.0]
    layer["bound_measured"] = ["memory", "latency/issue"]
    layer["mma_path_model"] = ["fp8", "bf16"]
    layer["tensor_path"] = ["n/a", "bf16"]
    layer["weight_bits"] = [8.0, 4.0]
    [v] = verdicts(layer, ROLES, _samples(layer), pair=("fp8", "mxfp4"))
    assert v.headline.startswith("Why: mxfp4 moves 0.55x the DRAM bytes of fp8")
    assert "reach only 26% of DRAM peak vs fp8's 79%: they are latency/issue-bound, not memory-bound" in v.headline
    assert "in-kernel unpack of its 4-bit weights to BF16" in v.headline
    text = " ".join(v.reasons)
    assert ("mxfp4: expert GEMMs are latency/issue-bound as measured: neither DRAM (26% of peak) nor the tensor "
            "cores (tensor pipe 7% active) reach 60%") in text


def test_pair_reasons_and_overall_fastest():
    layer = _layer([("bf16", 1, 45_000.0, 0.0, 0.0), ("fp8", 1, 50_000.0, 0.0, 0.0), ("mxfp4", 1, 60_000.0, 0.0, 0.0)])
    [v] = verdicts(layer, ROLES, _samples(layer), pair=("fp8", "mxfp4"))
    assert (v.winner, v.runner_up, v.pair) == ("fp8", "mxfp4", ["fp8", "mxfp4"])
    assert (v.fastest, v.next_fastest) == ("bf16", "fp8") and v.fastest_margin == pytest.approx(50 / 45)
    assert v.reasons[0].startswith("At batch 1, fp8 is 1.20x faster than mxfp4")
    assert v.reasons[1] == "Fastest of the 3 formats measured here: bf16 (1.11x over fp8, the next fastest)."
    # without a pair: the two fastest
    [v] = verdicts(layer, ROLES, _samples(layer))
    assert (v.winner, v.runner_up) == ("bf16", "fp8")


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
                        "kv_free_bytes_per_gpu": [10e9, 64e9], "fits": [True, True], "reserve_fraction": [0.1, 0.1],
                        "tp": [1, 1], "min_tp_to_fit": [1, 1]})
    s = summary(layer, [], pick_pair(["bf16", "fp8", "mxfp4"]), (3400.0, "roofline model"), mem, None, "NVIDIA H200")
    assert s["pair"] == ["fp8", "mxfp4"]
    assert s["answer"].startswith("mxfp4 at batch 1–8; fp8 at batch 64–512 (fp8/mxfp4 crossover ~")
    assert "54.00 GB more HBM" in s["answer"]
    assert any("predicted: batch ~3400" in line for line in s["lines"])
    assert any("KV-cache room 10.00 GB vs 64.00 GB" in line for line in s["lines"])


def test_summary_lists_every_crossover_and_near_ties():
    # fp8 wins small and large batches, mxfp4 the middle (as on the H100 capture): two crossovers.
    rows = []
    for b, t8, t4 in [(1, 100.0, 104.0), (16, 600.0, 540.0), (256, 1300.0, 1190.0), (1024, 1510.0, 2460.0)]:
        rows += [("fp8", b, t8 * 1e3, 0.0, 0.0), ("mxfp4", b, t4 * 1e3, 0.0, 0.0)]
    s = summary(_layer(rows), [], ("fp8", "mxfp4"), (None, "n/a"), None, "no model", "NVIDIA H100 80GB HBM3")
    assert s["answer"].startswith("fp8 at batch 1 and batch 1024; mxfp4 at batch 16–256 (fp8/mxfp4 crossovers ~")
    assert "within 5% of each other at batch 1." in s["answer"]
    xs = s["measured_crossover_batches"]
    assert len(xs) == 2 and 1 < xs[0] < 16 and 256 < xs[1] < 1024
    # each with the measured batches that bracket it, named with its pair
    assert any(line.startswith("Measured fp8/mxfp4 crossovers: between 1 and 16 (estimate ~")
               and "; between 256 and 1024 (estimate ~" in line for line in s["lines"])


def test_summary_says_when_weights_do_not_fit():
    layer = _layer([("fp8", 1, 5.0, 0.0, 0.0), ("mxfp4", 1, 6.0, 0.0, 0.0)])
    mem = pd.DataFrame({"format": ["fp8", "mxfp4"], "weight_bytes_per_gpu": [119.16e9, 65.25e9],
                        "kv_free_bytes_per_gpu": [-42.6e9, 11.28e9], "fits": [False, True],
                        "reserve_fraction": [0.1, 0.1], "tp": [1, 1], "min_tp_to_fit": [2, 1]})
    s = summary(layer, [], ("fp8", "mxfp4"), (None, "n/a"), mem, None, "NVIDIA H100 80GB HBM3")
    assert s["answer"] == ("fp8 is faster at every measured batch (1). But fp8 weights (119.16 GB) do not fit one "
                           "NVIDIA H100 80GB HBM3 (needs tp≥2), while mxfp4 fits with 11.28 GB left for the KV cache.")
    assert "more HBM" not in s["answer"]


def test_summary_without_memory():
    layer = _layer([("fp8", 1, 5.0, 0.0, 0.0), ("mxfp4", 1, 4.0, 0.0, 0.0)])
    s = summary(layer, [], ("fp8", "mxfp4"), (None, "n/a (no spec)"), pd.DataFrame(), "unknown model", "GPU")
    assert any(line == "Memory effect n/a (unknown model)." for line in s["lines"])
    assert s["measured_crossover_batch"] is None and s["measured_crossover_batches"] == []  # one batch: no crossing
