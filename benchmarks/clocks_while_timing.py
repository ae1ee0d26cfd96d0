"""SM clock, power and clock-event reasons (NVML) sampled while the expert GEMMs are timed, so that a
time can be read against the clock it ran at (an issue-bound kernel slows with the SM clock; a
DRAM-bound one much less).

    python3 benchmarks/clocks_while_timing.py OUT_DIR [--formats mxfp4,fp8] [--batch 64] [--seconds 3]
                                              [--spin-s 2]

For each format: the layer's two expert GEMMs (benchmarks/moe_gemm_variants.gemm_callable, CUDA graph,
cold L2) are timed in rounds of 20 repeats for --seconds, after --spin-s seconds of the bf16 matmul loop
that moe_gemm_variants.py runs before its first point (0: none). moeprof.profiler.clocks samples NVML every 2 ms.
Prints, per round, the median GEMM time and the SM clocks sampled during it; writes OUT_DIR/clocks.json.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from moeprof.profiler.clocks import POWER_REASONS, ClockSampler  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--formats", default="mxfp4,fp8")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--spin-s", type=float, default=2.0)
    args = ap.parse_args()
    import torch

    from moe_gemm_variants import MODEL, gemm_callable, spin_gpu
    from moeprof.models.layer import build_layer_for_model
    from moeprof.profiler import timing

    out = dict(card=torch.cuda.get_device_name(), batch=args.batch, spin_s=args.spin_s, formats={})
    # (NVML every 2 ms on a thread: Sample(t_s, sm_clock_mhz, power_w, reasons) in sampler.samples)
    with ClockSampler(period_s=0.002) as sampler:
        for fmt in args.formats.split(","):
            layer = build_layer_for_model(MODEL, fmt, args.batch, seed=23)
            run = gemm_callable(layer)
            timing.time_fn(run, repeats=5)
            torch.cuda.synchronize()
            spin_gpu(args.spin_s)
            rounds = []
            t_end = time.perf_counter() + args.seconds
            while time.perf_counter() < t_end:
                t0 = time.perf_counter()
                r = timing.time_fn(run, repeats=20, warmup=1)
                t1 = time.perf_counter()
                inside = [s for s in list(sampler.samples) if t0 <= s.t_s <= t1]
                clk = [s.sm_clock_mhz for s in inside]
                pw = [s.power_w for s in inside]
                capped = sum(1 for s in inside if s.reasons & POWER_REASONS)
                rounds.append(dict(t0=t0, gemm_us=r.median_ns / 1e3, clk_mhz_med=statistics.median(clk) if clk else None,
                                   clk_mhz_min=min(clk) if clk else None, power_w_med=statistics.median(pw) if pw else None,
                                   n_samples=len(clk), n_sw_power_cap=capped))
            out["formats"][fmt] = rounds
            t_first = rounds[0]["t0"]
            print(f"{fmt} batch {args.batch} (spin {args.spin_s} s before): round, s after the first, GEMMs us, "
                  f"SM MHz median / min, W, samples under power capping / all")
            for i, rd in enumerate(rounds):
                if i < 5 or i % 10 == 0 or i == len(rounds) - 1:
                    print(f"  {i:3d} {rd['t0'] - t_first:6.2f} {rd['gemm_us']:8.1f} {rd['clk_mhz_med']} / {rd['clk_mhz_min']} "
                          f"{rd['power_w_med']} {rd['n_sw_power_cap']}/{rd['n_samples']}", flush=True)
    if not sampler.samples:
        print("NVML could not be read: no clocks", file=sys.stderr)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "clocks.json"), "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
