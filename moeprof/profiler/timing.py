"""Device-event timing of a GPU callable with cold L2 (weights not served from cache).

Each repeat: flush L2 (write a 256 MB buffer, untimed), then record start event, run fn (or replay
its CUDA graph), record end event. Warm-up first (compiles, autotunes, caches). Returns the median
and p10/p90 over the repeats, in nanoseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TimingResult:
    median_ns: float
    p10_ns: float
    p90_ns: float
    samples_ns: list = field(default_factory=list)
    used_graph: bool = False

    @property
    def median_us(self) -> float:
        return self.median_ns / 1e3


_FLUSH = {}


def _flush_buffer(device, nbytes=256 << 20):
    import torch

    key = str(device)
    if key not in _FLUSH:
        _FLUSH[key] = torch.empty(nbytes, dtype=torch.uint8, device=device)
    return _FLUSH[key]


def _quantile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def time_fn(fn, *, warmup: int = 3, repeats: int = 20, flush_l2: bool = True, use_graph: bool = True,
            device="cuda", warmup_s: float = 0.0) -> TimingResult:
    """Time fn() on the GPU. use_graph: capture fn once into a CUDA graph and time its replays
    (falls back to eager launches if capture fails). warmup_s: also run it (its graph) for this many
    seconds before timing, so that a GPU left idle (clocks down) is busy again when the first repeat
    starts."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    run = fn
    graphed = False
    if use_graph:
        try:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                fn()
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                fn()
            g.replay()
            torch.cuda.synchronize()
            run = g.replay
            graphed = True
        except Exception:  # noqa: BLE001 - not capturable (host syncs): time eager launches
            torch.cuda.synchronize()
            run, graphed = fn, False
    if warmup_s > 0:
        import time

        t_end = time.perf_counter() + warmup_s
        while time.perf_counter() < t_end:
            for _ in range(10):
                run()
            torch.cuda.synchronize()
    buf = _flush_buffer(device) if flush_l2 else None
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    for r in range(repeats):
        if buf is not None:
            buf.fill_(r & 0xFF)
        starts[r].record()
        run()
        ends[r].record()
    torch.cuda.synchronize()
    samples = [s.elapsed_time(e) * 1e6 for s, e in zip(starts, ends)]
    return TimingResult(_quantile(samples, 0.5), _quantile(samples, 0.1), _quantile(samples, 0.9),
                        samples, graphed)


def copy_bandwidth(nbytes: int = 2 << 30, repeats: int = 10) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second)."""
    import torch

    a = torch.empty(nbytes // 2, dtype=torch.int16, device="cuda").random_()
    b = torch.empty_like(a)
    r = time_fn(lambda: b.copy_(a), warmup=2, repeats=repeats, flush_l2=False, use_graph=False)
    return 2 * nbytes / (r.median_ns * 1e-9)


def matmul_rate(dtype: str = "bf16", n: int = 8192, repeats: int = 10) -> float:
    """Dense matmul FLOP/s through torch (bf16 mm or fp8 _scaled_mm rowwise), random data."""
    import torch

    a = torch.randn(n, n, device="cuda").to(torch.bfloat16)
    b = torch.randn(n, n, device="cuda").to(torch.bfloat16)
    if dtype == "bf16":
        fn = lambda: a @ b.t()  # noqa: E731
    else:
        a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn)
        sa = torch.ones(n, 1, device="cuda")
        sb = torch.ones(1, n, device="cuda")
        fn = lambda: torch._scaled_mm(a8, b8.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)  # noqa: E731
    r = time_fn(fn, warmup=3, repeats=repeats, flush_l2=False, use_graph=False)
    return 2 * n ** 3 / (r.median_ns * 1e-9)
