"""A stand-in for a user's serving benchmark, to show `moeprof capture -- CMD` (external mode).

It runs a few gpt-oss MoE layer calls per format and batch, optionally inside moeprof's NVTX ranges
(moe/<format>/<batch>/<phase>); without them the analysis falls back to kernel-name patterns.

    moeprof capture --collect nsys -o captures/ext -- python examples/serve_bench.py --formats fp8,mxfp4 --batch 1,64
"""

from __future__ import annotations

import argparse

import torch

from moeprof.models.layer import build_layer_for_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="gpt-oss-120b")
    p.add_argument("--formats", default="fp8,mxfp4")
    p.add_argument("--batch", default="1,64")
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--no-nvtx", action="store_true")
    args = p.parse_args()
    for fmt in args.formats.split(","):
        for batch in (int(b) for b in args.batch.split(",")):
            layer = build_layer_for_model(args.model, fmt, batch)
            layer()  # warm-up (compiles the kernels) outside any range
            torch.cuda.synchronize()
            for _ in range(args.calls):
                layer(nvtx=not args.no_nvtx)
            torch.cuda.synchronize()
            print(f"{fmt} batch {batch}: {args.calls} calls", flush=True)


if __name__ == "__main__":
    main()
