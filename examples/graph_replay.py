"""A program that replays its layer from a CUDA graph, as serving engines do for decode.

Per format (bf16; fp8 through torch._scaled_mm with row-wise scales where the GPU has FP8) and batch:
a small expert MLP (gemm1, SiLU-and-multiply, gemm2) runs once eagerly inside user ranges
`eager/<fmt>/<batch>/<phase>`, is captured into a torch.cuda.CUDAGraph, and the graph is replayed
REPEATS times, each replay inside an NVTX range `moe/<fmt>/<batch>` open around `graph.replay()`.
Nothing here uses moeprof: under `moeprof capture -- python3 examples/graph_replay.py` (nsys with
`--cuda-graph-trace=node`) the replayed kernels appear one by one and analysis attributes each to the
range open at the graph launch.

  python3 examples/graph_replay.py [--batches 1,64] [--repeats 4] [--hidden 2880] [--inter 2880]
"""

from __future__ import annotations

import argparse

import torch

NV = torch.cuda.nvtx


def mlp(fmt: str, x: torch.Tensor, w1, w2, s1, s2) -> torch.Tensor:
    """gemm1 -> SiLU(a) * b -> gemm2; weights [K, N] (fp8: column-major K x N with per-column scales)."""
    def mm(a, w, s):
        if fmt == "bf16":
            return a @ w
        amax = a.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12)
        sa = amax / 448.0
        q = (a.float() / sa).to(torch.float8_e4m3fn)
        return torch._scaled_mm(q, w, scale_a=sa, scale_b=s, out_dtype=torch.bfloat16)

    NV.range_push("gemm1"); h = mm(x, w1, s1); NV.range_pop()
    NV.range_push("act"); a, b = h.chunk(2, dim=-1); h = torch.nn.functional.silu(a) * b; NV.range_pop()
    NV.range_push("gemm2"); y = mm(h, w2, s2); NV.range_pop()
    return y


def weights(fmt: str, hidden: int, inter: int):
    g = torch.Generator(device="cuda").manual_seed(0)
    w1 = torch.randn(hidden, 2 * inter, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02
    w2 = torch.randn(inter, hidden, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02
    if fmt == "bf16":
        return w1, w2, None, None
    out = []
    for w in (w1, w2):
        s = (w.abs().amax(dim=0, keepdim=True).float() / 448.0).clamp(min=1e-12)  # [1, N]
        q = (w.float() / s).to(torch.float8_e4m3fn).t().contiguous().t()      # column-major for _scaled_mm
        out += [q, s]
    return out[0], out[2], out[1], out[3]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=2880)
    ap.add_argument("--inter", type=int, default=2880)
    args = ap.parse_args()
    fp8 = torch.cuda.get_device_capability() >= (8, 9)
    for fmt in ["bf16"] + (["fp8"] if fp8 else []):
        try:
            run_format(fmt, args)
        except RuntimeError as exc:  # e.g. a torch build without row-wise FP8 _scaled_mm
            print(f"{fmt}: skipped ({str(exc).splitlines()[0][:160]})")


def run_format(fmt: str, args: argparse.Namespace) -> None:
    w1, w2, s1, s2 = weights(fmt, args.hidden, args.inter)
    for batch in [int(b) for b in args.batches.split(",")]:
        x = torch.randn(batch, args.hidden, device="cuda", dtype=torch.bfloat16)
        NV.range_push(f"eager/{fmt}/{batch}")
        ref = mlp(fmt, x, w1, w2, s1, s2)
        NV.range_pop()
        torch.cuda.synchronize()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up on a side stream, as torch.cuda.graphs recommends
            mlp(fmt, x, w1, w2, s1, s2)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = mlp(fmt, x, w1, w2, s1, s2)
        for _ in range(args.repeats):
            NV.range_push(f"moe/{fmt}/{batch}")
            graph.replay()
            NV.range_pop()
        torch.cuda.synchronize()
        err = (out.float() - ref.float()).abs().max().item()
        print(f"{fmt} batch {batch}: {args.repeats} graph replays, max |graph - eager| = {err:.3g}")


if __name__ == "__main__":
    main()
