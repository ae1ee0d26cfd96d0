"""GPT-OSS-120B experts through PyTorch's grouped GEMMs, over a batch sweep: a program moeprof did not write.

One MoE layer call: router GEMM + top-4, tokens sorted by expert, then
  FP8  (--format fp8):  rowwise FP8 activation quant, torch._scaled_grouped_mm (gate/up), SwiGLU,
                        quant, torch._scaled_grouped_mm (down), weighted sum over the top-k
  BF16 (--format bf16): the same with torch._grouped_mm.
Shapes default to GPT-OSS-120B (hidden 2880, expert intermediate 2880, 128 experts, top-4).

The only moeprof code it uses is `moeprof.mark` (--marks moeprof). --marks nvtx instead pushes its
own NVTX range per layer call ("moe_experts tokens=<batch>"), as an engine would; --marks none
pushes nothing. Profile it with e.g.

  moeprof capture --collect nsys --label format=fp8 -- python examples/grouped_mm_gptoss.py --format fp8
"""

from __future__ import annotations

import argparse
import contextlib

import torch

FP8_MAX = 448.0  # largest finite float8_e4m3fn


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rowwise FP8 (e4m3) with one float32 scale per row."""
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX
    return (x.float() / scale).to(torch.float8_e4m3fn), scale.squeeze(-1)


class Experts:
    """Router and expert weights of one MoE layer; weights stored (experts, out, in) like checkpoints."""

    def __init__(self, fmt: str, hidden: int, inter: int, experts: int, top_k: int, device: str) -> None:
        g = torch.Generator(device=device).manual_seed(0)
        self.fmt, self.top_k = fmt, top_k
        self.router = torch.randn(experts, hidden, generator=g, device=device, dtype=torch.bfloat16) * 0.02
        w13 = torch.randn(experts, 2 * inter, hidden, generator=g, device=device, dtype=torch.bfloat16) * 0.02
        w2 = torch.randn(experts, hidden, inter, generator=g, device=device, dtype=torch.bfloat16) * 0.02
        if fmt == "fp8":
            (self.w13, self.s13), (self.w2, self.s2) = quantize_rows(w13), quantize_rows(w2)
            del w13, w2
        else:
            self.w13, self.w2 = w13, w2

    def _gemm(self, x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor | None, offs: torch.Tensor) -> torch.Tensor:
        if self.fmt == "fp8":
            xq, x_scale = quantize_rows(x)
            return torch._scaled_grouped_mm(xq, w.transpose(-2, -1), x_scale, w_scale, offs=offs,
                                            out_dtype=torch.bfloat16)
        return torch._grouped_mm(x, w.transpose(-2, -1), offs=offs)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.shape[0]
        logits = x @ self.router.t()
        top_val, top_idx = torch.topk(logits, self.top_k, dim=-1)
        weights = torch.softmax(top_val.float(), dim=-1)
        flat = top_idx.flatten()
        order = torch.argsort(flat, stable=True)
        offs = torch.cumsum(torch.bincount(flat, minlength=self.w13.shape[0]), 0).to(torch.int32)
        xs = x[order // self.top_k]
        h = self._gemm(xs, self.w13, getattr(self, "s13", None), offs)
        gate, up = h.chunk(2, dim=-1)
        gate, up = gate.clamp(max=7.0), up.clamp(-7.0, 7.0)
        a = ((up + 1) * gate * torch.sigmoid(1.702 * gate)).to(torch.bfloat16)
        y = self._gemm(a, self.w2, getattr(self, "s2", None), offs)
        out = torch.zeros(tokens * self.top_k, x.shape[1], device=x.device, dtype=torch.float32)
        out[order] = y.float()
        return (out.view(tokens, self.top_k, -1) * weights.unsqueeze(-1)).sum(1).to(torch.bfloat16)


def region(marks: str, fmt: str, batch: int):
    if marks == "moeprof":
        import moeprof

        return moeprof.mark(format=fmt, batch=batch)
    if marks == "nvtx":
        return torch.cuda.nvtx.range(f"moe_experts tokens={batch}")
    return contextlib.nullcontext()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--format", choices=("fp8", "bf16"), default="fp8")
    ap.add_argument("--batches", default="1,16,256,4096", help="tokens per layer call, comma-separated")
    ap.add_argument("--repeats", type=int, default=5, help="timed layer calls per batch")
    ap.add_argument("--warmup", type=int, default=2, help="calls per batch before the timed ones (no marks)")
    ap.add_argument("--marks", choices=("moeprof", "nvtx", "none"), default="moeprof")
    ap.add_argument("--shape", default="2880,2880,128,4", help="hidden,intermediate,experts,top_k")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    hidden, inter, experts, top_k = (int(v) for v in args.shape.split(","))
    layer = Experts(args.format, hidden, inter, experts, top_k, args.device)
    g = torch.Generator(device=args.device).manual_seed(1)
    cuda = args.device.startswith("cuda")
    print(f"format={args.format} marks={args.marks} shape={args.shape} device={args.device}")
    for batch in (int(b) for b in args.batches.split(",")):
        x = torch.randn(batch, hidden, generator=g, device=args.device, dtype=torch.bfloat16)
        for _ in range(args.warmup):
            layer(x)
        times_ms = []
        for _ in range(args.repeats):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            with region(args.marks, args.format, batch):
                out = layer(x)
            if cuda:
                end.record()
                end.synchronize()
                times_ms.append(start.elapsed_time(end))
        assert torch.isfinite(out.float()).all(), "non-finite layer output"
        if times_ms:
            print(f"batch {batch:5d}: median {sorted(times_ms)[len(times_ms) // 2] * 1e3:9.1f} us (CUDA events, {args.repeats} calls)")
        else:
            print(f"batch {batch:5d}: ran {args.repeats} calls")


if __name__ == "__main__":
    main()
