"""`moeprof capture`: run the MoE sweep (or `-- CMD ARGS...`) under nsys/ncu/torch into a capture folder."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Optional

import typer

from moeprof.capture_folder import LayerShape
from moeprof.cli import app, defaults, version_option
from moeprof.errors import MoeprofError


def _ints(text: str, what: str) -> list[int]:
    try:
        vals = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise MoeprofError(f"{what}: expected comma-separated integers, got {text!r}") from None
    if not vals:
        raise MoeprofError(f"{what}: empty list")
    return vals


def _words(text: str) -> list[str]:
    return [x for x in text.replace(" ", "").split(",") if x]


@app.command(short_help="Profile MoE layers (or any program) into a capture folder.",
             context_settings={"ignore_unknown_options": True})
def capture(
    command: Optional[list[str]] = typer.Argument(None, help="External mode: `moeprof capture [OPTIONS] -- CMD ARGS...`"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=f"MoE preset giving the layer shape [default: {defaults.MODEL}]; in external mode, the model the program runs (lets analyze set it against the roofline)"),
    formats: str = typer.Option(defaults.FORMATS, "--formats", "-f", help="Weight formats, comma-separated"),
    batch: str = typer.Option(defaults.CAPTURE_BATCHES, "--batch", "-b", help="Tokens per layer call, comma-separated"),
    tp: int = typer.Option(defaults.TP, "--tp", help="Tensor-parallel ranks: the layer sharded over N GPUs (intermediate split, all-reduce), launched by torchrun, one nsys report per rank"),
    ep: int = typer.Option(defaults.EP, "--ep", help="Expert-parallel ranks: experts split over N GPUs, tokens dispatched and combined by all-to-all"),
    ncu_rank: int = typer.Option(0, "--ncu-rank", help="With --tp/--ep: the rank ncu profiles (the others run beside it unprofiled)"),
    ranks: int = typer.Option(1, "--ranks", help="External mode: the command (torchrun ...) starts N ranks; each runs under nsys, one report per rank"),
    routing: str = typer.Option(defaults.ROUTING, "--routing", help="Router distribution: uniform | zipf:<s> (alias skew:<s>)"),
    collect: str = typer.Option(defaults.COLLECT, "--collect", help="Collectors: nsys, ncu, torch (torch: fallback only)"),
    repeats: int = typer.Option(defaults.REPEATS, "--repeats", "-r", help="Timed layer calls per point (events, nsys)"),
    warmup: int = typer.Option(defaults.WARMUP, "--warmup", help="Untimed calls before measuring, outside NVTX ranges"),
    sustain_s: float = typer.Option(0.0, "--sustain-s", help="Seconds of back-to-back layer calls before each point's CUDA-event timing, so that the card holds the clock and power of sustained load (serving) rather than a burst's; points.csv records the SM clock and power capping NVML saw while timing"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Capture folder (default captures/<time>)"),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted capture in --out (runs only the missing points; an external program comes from `-- CMD` or, confirmed, from the manifest)"),
    yes: bool = typer.Option(False, "--yes", "-y", help="With --resume: run the command stored in the manifest without asking"),
    refine_crossover: Optional[str] = typer.Option(None, "--refine-crossover", help="A,B: on an existing capture (-o), measure batches between the two measured batches that bracket the A/B crossover until it is located within 10%"),
    ncu_repeats: int = typer.Option(defaults.NCU_REPEATS, "--ncu-repeats", help="Layer calls per point replayed by ncu"),
    ncu_launch_count: int = typer.Option(defaults.NCU_LAUNCH_COUNT, "--ncu-launch-count", help="Most kernels ncu profiles per point (0: no bound); must cover a whole layer call"),
    nvtx_include: Optional[list[str]] = typer.Option(None, "--nvtx-include", help="ncu NVTX filter (default moe/; none in external mode)"),
    ncu_kernel: Optional[str] = typer.Option(None, "--ncu-kernel", help="ncu: profile only kernels whose demangled name matches this regex (external mode)"),
    ncu_launch_skip: int = typer.Option(0, "--ncu-launch-skip", help="ncu: matching launches to skip first (warm-up; external mode)"),
    label: Optional[list[str]] = typer.Option(None, "--label", help="Whole-run label key=value, e.g. --label format=fp8 --label batch=64 (external mode)"),
    nvtx_pattern: Optional[str] = typer.Option(None, "--nvtx-pattern", help="Regex over the program's NVTX ranges with named groups format, batch, phase, layer (external mode)"),
    clock_control: str = typer.Option(defaults.CLOCK_CONTROL, "--clock-control", help="ncu --clock-control (none keeps boost clocks)"),
    cache_control: str = typer.Option(defaults.CACHE_CONTROL, "--cache-control", help="ncu --cache-control (all: flush caches per replay)"),
    seed: int = typer.Option(0, "--seed"),
    workload: str = typer.Option("moeprof", "--workload", hidden=True, help="moeprof | toy (self-test layer)"),
    shape: Optional[str] = typer.Option(None, "--shape", help="Custom layer shape hidden,intermediate,experts,top_k (overrides --model)"),
    timeout: float = typer.Option(defaults.TIMEOUT_S, "--timeout", help="Seconds allowed to each profiler run"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar"),
    _version: bool = version_option(),
) -> None:
    """Profile MoE layers over a batch sweep (or any program) into one self-describing capture folder."""
    from moeprof.profiler.capture import CaptureConfig
    from moeprof.profiler.capture import capture as run_capture

    if out is None:
        if resume:
            raise MoeprofError("--resume needs --out DIR (the capture to continue)")
        out = Path("captures") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    shp = None
    if shape:
        dims = _ints(shape, "--shape")
        if len(dims) != 4 or min(dims) < 1:
            raise MoeprofError("--shape needs four positive integers: hidden,intermediate,experts,top_k")
        shp = dict(zip(LayerShape.KEYS, dims))
    if not 0 <= ncu_rank < max(1, tp * ep):
        raise MoeprofError(f"--ncu-rank {ncu_rank}: the capture has ranks 0..{max(1, tp * ep) - 1}")
    if ranks > 1 and not command:
        raise MoeprofError("--ranks N is for external mode: moeprof capture --ranks N -- torchrun ... CMD")
    if command and (tp > 1 or ep > 1):
        raise MoeprofError("--tp/--ep run moeprof's own sharded layer; for a program of your own use --ranks N -- CMD")
    for name, v, least in (("--tp", tp, 1), ("--ep", ep, 1), ("--ranks", ranks, 1), ("--repeats", repeats, 1), ("--warmup", warmup, 0),
                           ("--ncu-repeats", ncu_repeats, 1), ("--ncu-launch-count", ncu_launch_count, 0),
                           ("--ncu-launch-skip", ncu_launch_skip, 0)):
        if v < least:
            raise MoeprofError(f"{name} must be >= {least}, got {v}")
    from moeprof.profiler.capture import MAX_SUSTAIN_S

    if not 0 <= sustain_s <= MAX_SUSTAIN_S:   # (NaN fails both comparisons)
        raise MoeprofError(f"--sustain-s must be between 0 and {MAX_SUSTAIN_S:g} seconds, got {sustain_s}")
    from moeprof.models.routing import parse_skew

    parse_skew(routing)  # reject a bad --routing before any profiler starts
    from moeprof.capture_folder import labels as labels_mod

    run_labels = labels_mod.parse_labels(label)
    labels_mod.compile_pattern(nvtx_pattern)
    if ncu_kernel is not None:
        import re

        try:
            re.compile(ncu_kernel)
        except re.error as exc:
            raise MoeprofError(f"--ncu-kernel {ncu_kernel!r}: not a regular expression ({exc})") from None
    if not command and (run_labels or nvtx_pattern or ncu_kernel or ncu_launch_skip):
        raise MoeprofError("--label, --nvtx-pattern, --ncu-kernel and --ncu-launch-skip apply to `-- CMD` "
                           "(moeprof's own sweep labels its layers itself)")
    if workload not in ("moeprof", "toy"):
        raise MoeprofError(f"--workload: {workload!r}; valid: moeprof, toy")
    if not command and model is None:
        model = defaults.MODEL
    if refine_crossover is not None:
        if out is None or not Path(out).exists():
            raise MoeprofError("--refine-crossover needs --out DIR, an existing capture folder")
        from moeprof.profiler.refine import refine_crossover as run_refine

        pair = _words(refine_crossover)
        if len(pair) != 2 or pair[0] == pair[1]:
            raise MoeprofError(f"--refine-crossover: expected two formats A,B, got {refine_crossover!r}")
        run_refine(Path(out), pair[0], pair[1], timeout_s=timeout, quiet=quiet, echo=typer.echo)
        return

    def confirm(question: str) -> bool:
        return typer.confirm(question, default=False)

    cfg = CaptureConfig(
        out=out, formats=_words(formats), batches=_ints(batch, "--batch"), model=model, shape=shp, tp=tp, ep=ep,
        routing=routing, seed=seed, repeats=repeats, warmup=warmup, sustain_s=sustain_s, workload=workload,
        collect=_words(collect),
        ncu_repeats=ncu_repeats, ncu_launch_count=ncu_launch_count or None, ncu_nvtx_include=nvtx_include or None,
        ncu_kernel_regex=ncu_kernel, ncu_launch_skip=ncu_launch_skip, labels=run_labels, nvtx_pattern=nvtx_pattern,
        clock_control=clock_control, cache_control=cache_control, command=list(command) if command else None, ranks=ranks,
        ncu_rank=ncu_rank, resume=resume, assume_yes=yes, confirm=confirm if sys.stdin.isatty() else None,
        timeout_s=timeout, command_line=["moeprof", *sys.argv[1:]], quiet=quiet,
    )
    m = run_capture(cfg)
    typer.echo(f"capture {m['status']}: {out}")
    for name, ent in m["collectors"].items():
        extra = ent.get("reason") or ", ".join(ent.get("files", [])[:2])
        typer.echo(f"  {name:6s} {ent['status']:8s} {extra}")
    cut = m["collectors"].get("ncu", {}).get("options", {}).get("launch_count_reached")
    if cut:
        typer.echo(f"  warning: ncu stopped at --ncu-launch-count in {', '.join(cut)}; raise it to cover a whole layer call")
    for fmt, b, reason in m.get("points_failed", []):
        typer.echo(f"  point {fmt}/{b} failed: {reason}")
    if m["status"] == "failed":
        raise MoeprofError(f"capture failed; see {out}/manifest.json and {out}/raw/logs/")
    if m.get("label_errors"):
        raise MoeprofError(f"{m['label_errors'][0]}; kernels kept unlabelled in {out} "
                           f"(relabel: moeprof analyze {out} --nvtx-pattern REGEX)")
