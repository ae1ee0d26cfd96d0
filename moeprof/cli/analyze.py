"""`moeprof analyze` (which format wins, where and why) and `moeprof diff` (what changed beyond noise)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from moeprof.cli import app, defaults, version_option
from moeprof.errors import MoeprofError

_FORMAT_HELP = " | ".join(defaults.OUTPUT_FORMATS)


def _check_format(fmt: str) -> str:
    if fmt not in defaults.OUTPUT_FORMATS:
        raise MoeprofError(f"unknown --format {fmt!r}; valid: {', '.join(defaults.OUTPUT_FORMATS)}")
    return fmt


def _parse_pair(pair: str | None) -> tuple[str, str] | None:
    if not pair:
        return None
    parts = [p.strip().lower() for p in pair.split(",") if p.strip()]
    if len(parts) != 2:
        raise MoeprofError(f"--pair takes two formats separated by a comma, got {pair!r}")
    if parts[0] == parts[1]:
        raise MoeprofError(f"--pair needs two different formats, got {pair!r}")
    return parts[0], parts[1]


@app.command("analyze", short_help="Which format is faster for a capture, at which batch, and why.")
def analyze_cmd(
    captures: Optional[list[Path]] = typer.Argument(None, help="Capture folder(s) (default: the example capture shipped with moeprof). Several: runs of one program on one card (e.g. FP8 and BF16 weights), merged into one verdict."),
    format: str = typer.Option(defaults.OUTPUT_FORMAT, "--format", "-f", help=_FORMAT_HELP),
    explain: bool = typer.Option(False, "--explain", "--verbose", "-v",
                                 help="Table format: every reason and the per-format tables, not one screen."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write roofline, breakdown and speedup charts (PNG, SVG) here."),
    pair: Optional[str] = typer.Option(None, "--pair", help="The two formats to answer about, e.g. fp8,mxfp4 (default: FP8 vs MXFP4 when both ran)."),
    timing: Optional[str] = typer.Option(None, "--timing", help="Collector whose kernel durations to use: nsys | torch | ncu (default: best available)."),
    nvtx_pattern: Optional[str] = typer.Option(None, "--nvtx-pattern", help="Relabel the kernels: regex over their NVTX ranges with named groups format, batch, phase, layer (replaces the capture's)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model the program ran (preset or config.json): sets its kernels against the roofline."),
    force: bool = typer.Option(False, "--force", help="Merge captures from different GPUs, models or programs anyway."),
    _version: bool = version_option(),
) -> None:
    """Which weight format is faster for this capture's model on its GPU, at which batch sizes, and why.

    For a program without format/batch labels: its kernels, with roles and counters."""
    from moeprof.analysis import merge
    from moeprof.analysis.load import load_capture
    from moeprof.analysis.pipeline import analyze

    _check_format(format)
    pair_t = _parse_pair(pair)
    loaded = [load_capture(p) for p in (captures or [None])]
    loaded = [merge.labelled(c, nvtx_pattern) for c in loaded]
    if model:
        loaded = [merge.with_model(c, model) for c in loaded]
    cap = merge.merge(loaded, force)[0] if len(loaded) > 1 else loaded[0]
    if not cap.kernels["batch"].notna().any() and not cap.points["layer_time_ns"].notna().any():
        if plot is not None:
            raise MoeprofError("--plot needs format/batch labels (the kernel report has no charts)")
        from moeprof.analysis.foreign import kernel_report

        _emit("kernels", format, kernel_report(cap, timing))
        return
    if plot is not None:  # fail before the report, not after it
        from moeprof.untrusted import ensure_writable_dir
        ensure_writable_dir(plot)
    result = analyze(cap, pair=pair_t, timing=timing)
    _emit("analysis", format, result, explain=explain)
    if result.ranks is not None and format in ("table", "markdown"):  # several GPUs: the cross-rank view
        lines = result.ranks.lines
        if format == "table":
            from moeprof.reports.terminal import render_lines

            render_lines("Across ranks:", lines)
        else:
            typer.echo("\nAcross ranks:\n" + "\n".join(f"- {ln}" for ln in lines))
    if plot is not None:
        from moeprof.reports.plots import write_plots
        paths = write_plots(result, plot)
        typer.echo(f"wrote {len(paths)} charts to {plot}", err=True)


@app.command("diff", short_help="What changed between two captures beyond noise.")
def diff_cmd(
    a: Path = typer.Argument(..., help="Baseline capture folder."),
    b: Path = typer.Argument(..., help="Capture folder to compare with the baseline."),
    format: str = typer.Option(defaults.OUTPUT_FORMAT, "--format", "-f", help=_FORMAT_HELP),
    force: bool = typer.Option(False, "--force", help="Compare captures from different GPUs or workloads anyway."),
    alpha: float = typer.Option(defaults.ALPHA, "--alpha", help="The interval on each change is a (1 - alpha) block-bootstrap interval."),
    min_effect: float = typer.Option(defaults.MIN_EFFECT, "--min-effect", help="Smallest relative change that counts (0.03 = 3%)."),
    noise_floor: float = typer.Option(defaults.NOISE_FLOOR, "--noise-floor", help="Relative change that counts when both sides have a single repeat (no spread known)."),
    min_abs_us: float = typer.Option(defaults.MIN_ABS_US, "--min-abs-us", help="Smallest absolute change that counts, in µs (timer and collector jitter)."),
    show_all: bool = typer.Option(False, "--all", help="List added/removed rows one by one in the table (else summarized)."),
    _version: bool = version_option(),
) -> None:
    """What changed between two captures beyond noise, per format, batch and kernel role."""
    from moeprof.analysis.diff import DiffOptions, diff
    from moeprof.analysis.load import load_capture

    _check_format(format)
    for name, v in (("--alpha", alpha), ("--min-effect", min_effect), ("--noise-floor", noise_floor)):
        if not 0 <= v < 1:
            raise MoeprofError(f"{name} must be in [0, 1), got {v}")
    if min_abs_us < 0:
        raise MoeprofError(f"--min-abs-us must be >= 0, got {min_abs_us}")
    result = diff(load_capture(a), load_capture(b),
                  DiffOptions(alpha=alpha, min_effect=min_effect, noise_floor=noise_floor,
                              min_abs_ns=min_abs_us * 1e3, force=force))
    _emit("diff", format, result, show_all=show_all)


def _emit(kind: str, format: str, result, **options) -> None:
    """Print an analysis or a diff with the renderer its format names (reports.outputs.RENDERERS)."""
    from moeprof.reports.outputs import RENDERERS

    RENDERERS[kind][format](result, **options)
