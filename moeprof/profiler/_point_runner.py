"""Child program that the profilers run: `python -m moeprof.profiler._point_runner --spec SPEC.json`.

One child runs the batches of one format (or one batch, under ncu). Each batch: build the layer,
warm up outside NVTX ranges, then run the measured calls. Per-batch outcomes go to spec['status']
(one JSON line per batch), so a batch that fails (OOM, unsupported format) does not sink the rest.

modes: describe (GPU/software JSON), events (CUDA-event timing, no NVTX), nsys and ncu (calls
inside NVTX ranges moe/<fmt>/<batch>/<phase>), torch (PyTorch profiler, NVTX mirrored as
record_function so the trace carries the same paths).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path


def _emit(path: str | None, rec: dict) -> None:
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()


class ToyLayer:
    """A tiny self-contained MoE layer (router, per-expert GEMMs) for self-tests without the real workload.

    Non-bf16 formats store weights as float8 and dequantize them in a 'quant' phase."""

    def __init__(self, *, hidden_size: int, intermediate_size: int, num_experts: int, top_k: int, fmt: str,
                 batch: int, seed: int = 0, device: str = "cuda", **_: object) -> None:
        import torch

        g = torch.Generator(device=device).manual_seed(seed)
        bf = torch.bfloat16
        self.fmt, self.batch, self.top_k = fmt, batch, top_k
        self.x = torch.randn(batch, hidden_size, device=device, dtype=bf, generator=g)
        self.router = torch.randn(hidden_size, num_experts, device=device, dtype=bf, generator=g)
        w1 = torch.randn(num_experts, hidden_size, 2 * intermediate_size, device=device, dtype=bf, generator=g) * 0.02
        w2 = torch.randn(num_experts, intermediate_size, hidden_size, device=device, dtype=bf, generator=g) * 0.02
        if fmt != "bf16":
            w1, w2 = w1.to(torch.float8_e4m3fn), w2.to(torch.float8_e4m3fn)
        self.w1, self.w2 = w1, w2
        self.kernel_name = "toy-torch"
        self.experts_touched = 0

    def __call__(self, nvtx: bool = True):
        import torch

        N = torch.cuda.nvtx
        push = N.range_push if nvtx else (lambda _m: None)
        pop = N.range_pop if nvtx else (lambda: None)
        push("moe"); push(self.fmt); push(str(self.batch))
        push("route")
        logits = (self.x @ self.router).float()
        w, idx = torch.topk(torch.softmax(logits, -1), self.top_k)
        pop()
        push("sort")
        order = torch.argsort(idx.flatten())
        experts = idx.flatten()[order]
        counts = torch.bincount(experts, minlength=self.w1.shape[0]).tolist()
        self.experts_touched = sum(1 for c in counts if c)
        pop()
        out = torch.zeros_like(self.x)
        tok = order // self.top_k
        start = 0
        for e, c in enumerate(counts):
            if not c:
                continue
            rows = tok[start:start + c]
            w1, w2 = self.w1[e], self.w2[e]
            if self.fmt != "bf16":
                push("quant"); w1, w2 = w1.to(torch.bfloat16), w2.to(torch.bfloat16); pop()
            push("gemm1"); h = self.x[rows] @ w1; pop()
            push("act"); a, b = h.chunk(2, -1); h = torch.nn.functional.silu(a) * b; pop()
            push("gemm2"); y = h @ w2; pop()
            push("combine"); out.index_add_(0, rows, y * w.flatten()[order[start:start + c]].to(y.dtype)[:, None]); pop()
            start += c
        pop(); pop(); pop()
        return out


def build(spec: dict, batch: int):
    shape = spec["shape"]
    common = dict(hidden_size=shape["hidden_size"], intermediate_size=shape["intermediate_size"],
                  num_experts=shape["num_experts"], top_k=shape["top_k"], fmt=spec["format"], batch=batch,
                  seed=spec.get("seed", 0), device="cuda")
    if spec.get("workload") == "toy":
        return ToyLayer(**common)
    from moeprof.models.layer import build_layer

    return build_layer(**common, tp=spec.get("tp", 1), ep=spec.get("ep", 1), routing=spec.get("routing", "uniform"),
                       kernel=spec.get("kernel", "triton"))


def _mirror_nvtx_to_record_function() -> None:
    """Make torch.cuda.nvtx push/pop also open record_function ranges (seen by the PyTorch profiler)."""
    import torch

    nv = torch.cuda.nvtx
    push0, pop0, stack = nv.range_push, nv.range_pop, []

    def push(msg, *a, **k):
        rf = torch.autograd.profiler.record_function(str(msg))
        rf.__enter__()
        stack.append(rf)
        return push0(msg, *a, **k)

    def pop(*a, **k):
        if stack:
            stack.pop().__exit__(None, None, None)
        return pop0(*a, **k)

    nv.range_push, nv.range_pop = push, pop


def time_calls(layer, repeats: int, sustain_s: float = 0.0) -> tuple[list[float], str]:
    """Per-call CUDA-event times (ns) from timing.time_fn (CUDA graph replays, L2 flushed between calls),
    after sustain_s seconds of back-to-back calls (the clock and power of sustained load, not a burst's)."""
    from moeprof.profiler.timing import time_fn

    r = time_fn(lambda: layer(nvtx=False), warmup=1, repeats=repeats, warmup_s=sustain_s)
    return [float(x) for x in r.samples_ns], "timing.time_fn " + ("cuda-graph" if r.used_graph else "eager") + ", l2-flush"


# The first point a process times runs its timed calls once more before them, untimed (events: one whole
# timing, discarded; nsys / torch: the same number of calls outside the NVTX ranges the analysis reads).
# Timed first, a point started slow on the H200: its median up to 3 us higher at batch 1 and 80 us at
# batch 64, with the same calls at full speed later in the process (docs/performance.md, runs 75-79).
_FIRST_POINT = True


def run_batch(spec: dict, batch: int) -> dict:
    import torch

    global _FIRST_POINT
    mode = spec["mode"]
    layer = build(spec, batch)
    for _ in range(spec.get("warmup", 3)):
        layer(nvtx=False)
    torch.cuda.synchronize()
    rec: dict = {"format": spec["format"], "batch": batch, "status": "ok"}
    pilot = _FIRST_POINT and mode != "ncu"   # (ncu replays each kernel under its own clock control)
    _FIRST_POINT = False
    if mode == "events":
        from moeprof.profiler.clocks import ClockSampler

        if pilot:
            time_calls(layer, spec.get("repeats", 20))
        # what NVML saw while the timed calls ran (SM clock, power, power capping): profiler/clocks.py
        sustain_s = float(spec.get("sustain_s", 0.0) or 0.0)
        if sustain_s > 0:   # the sustained calls run before the sampler starts: it sees the timed calls only
            time_calls(layer, 1, sustain_s)
        with ClockSampler() as clocks:
            rec["layer_time_ns"], rec["timing"] = time_calls(layer, spec.get("repeats", 20))
        if clocks.summary is not None:
            rec.update(clocks.summary.as_record())
        if sustain_s > 0:
            rec["timing"] += f", after {sustain_s:g} s of back-to-back calls"
        if pilot:
            rec["timing"] += ", after a discarded first timing"
    else:
        if pilot:
            for _ in range(spec.get("repeats", 1)):
                layer(nvtx=False)
            torch.cuda.synchronize()
        for _ in range(spec.get("repeats", 1)):
            layer(nvtx=True)
        torch.cuda.synchronize()
    rec["experts_touched"] = int(getattr(layer, "experts_touched", 0) or 0)
    rec["kernel"] = str(getattr(layer, "kernel_name", spec.get("kernel", "")))
    del layer
    torch.cuda.empty_cache()
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="moeprof.profiler._point_runner")
    ap.add_argument("--spec", required=True, help="JSON file (or inline JSON) describing the run")
    spec_arg = ap.parse_args(argv).spec
    spec = json.loads(Path(spec_arg).read_text() if not spec_arg.lstrip().startswith("{") else spec_arg)
    if spec["mode"] == "describe":
        from moeprof.profiler.env import describe

        print(json.dumps(describe()))
        return 0
    if int(spec.get("tp", 1)) * int(spec.get("ep", 1)) > 1 and spec["mode"] != "torch":
        from moeprof.profiler.distributed import run_ranks  # one rank of a sharded layer, under torchrun

        return run_ranks(spec)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU visible to torch", file=sys.stderr)
        return 2
    status = spec.get("status")
    prof = None
    if spec["mode"] == "torch":
        _mirror_nvtx_to_record_function()
        acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        prof = torch.profiler.profile(activities=acts, record_shapes=False)
    failures = 0
    for batch in spec["batches"]:
        try:
            if prof is not None:
                # warm-up outside the profiled window; the profiler is on for the measured calls only
                rec = _run_torch_batch(spec, batch, prof)
            else:
                rec = run_batch(spec, batch)
        except Exception as exc:  # noqa: BLE001 - isolate failing batches
            failures += 1
            traceback.print_exc()
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:240]
            rec = {"format": spec["format"], "batch": batch, "status": "failed", "reason": reason}
            torch.cuda.empty_cache()
        _emit(status, rec)
    if prof is not None and getattr(prof, "_moeprof_started", False):
        prof.__exit__(None, None, None)
        if spec.get("trace"):
            prof.export_chrome_trace(spec["trace"])
    return 0 if failures < len(spec["batches"]) else 1


def _run_torch_batch(spec: dict, batch: int, prof) -> dict:
    import torch

    layer = build(spec, batch)
    for _ in range(spec.get("warmup", 3)):
        layer(nvtx=False)
    torch.cuda.synchronize()
    if not getattr(prof, "_moeprof_started", False):
        prof.__enter__()
        prof._moeprof_started = True
    for _ in range(spec.get("repeats", 1)):
        layer(nvtx=True)
    torch.cuda.synchronize()
    rec = {"format": spec["format"], "batch": batch, "status": "ok",
           "experts_touched": int(getattr(layer, "experts_touched", 0) or 0),
           "kernel": str(getattr(layer, "kernel_name", ""))}
    del layer
    torch.cuda.empty_cache()
    return rec


if __name__ == "__main__":
    sys.exit(main())
