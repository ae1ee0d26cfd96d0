"""Charts of an analysis (matplotlib, Agg): roofline with measured points, time by role, speedup.

Every chart names the GPU in its title: numbers from different cards are not comparable.
Each chart is written as PNG and SVG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moeprof.analysis.classify import ROLES
from moeprof.analysis.pipeline import Analysis
from moeprof.errors import MoeprofError

ROLE_COLORS = {"route": "#8c564b", "sort": "#e377c2", "quant": "#bcbd22", "gemm1": "#1f77b4", "act": "#ff7f0e",
               "gemm2": "#2ca02c", "combine": "#9467bd", "communication": "#17becf",
               "other": "#7f7f7f"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    for p in paths:
        fig.savefig(p, dpi=120, bbox_inches="tight")
    return paths


def roofline_chart(a: Analysis, out: Path) -> list[Path]:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    lay = a.layer
    have = {"useful_tflop_per_s", "gemm1_bytes", "gemm2_bytes"} <= set(lay.columns)
    pts = lay[lay["useful_tflop_per_s"].notna()] if have else lay.iloc[:0]
    bw = a.peaks.dram_bytes_per_s
    xs = np.logspace(-1, 4, 200)
    for path, peak in sorted(a.peaks.tensor_flops_per_s.items()):
        if np.isfinite(bw) and np.isfinite(peak):
            ax.plot(xs, np.minimum(xs * bw, peak) / 1e12, lw=1.2, label=f"{path.upper()} roof ({peak / 1e12:.0f} TFLOP/s)")
    for i, (fmt, g) in enumerate(pts.groupby("format")):
        # Intensity of the expert GEMMs (the measured work): analytic FLOPs / analytic bytes.
        x = g["useful_flops"] / _gemm_bytes(g)
        line, = ax.plot(x, g["useful_tflop_per_s"], "o-", label=f"{fmt} (measured expert GEMMs)")
        # Batch labels: alternate above/below per format so neighbouring series do not overprint.
        dy = 4 if i % 2 == 0 else -10
        for xi, yi, b in zip(x, g["useful_tflop_per_s"], g["batch"]):
            ax.annotate(str(b), (xi, yi), textcoords="offset points", xytext=(4, dy), fontsize=7, color=line.get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity of the expert GEMMs (FLOP/byte, analytic)")
    ax.set_ylabel("useful TFLOP/s (analytic FLOPs / measured time)")
    ax.text(0.99, 0.02, "labels: batch (tokens per layer call)", transform=ax.transAxes, ha="right", fontsize=7,
            color="0.4")
    ax.set_title(f"Roofline, {a.gpu_label} (DRAM {bw / 1e12:.2f} TB/s)" if np.isfinite(bw) else f"Roofline, {a.gpu_label}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if pts.empty:
        ax.text(0.5, 0.5, "no measured points with analytic FLOPs", transform=ax.transAxes, ha="center")
    paths = _save(fig, out, "roofline")
    plt.close(fig)
    return paths


def _gemm_bytes(g):
    seen = g["gemms_measured"].fillna("") if "gemms_measured" in g else None
    b1 = g["gemm1_bytes"].where(seen.str.contains("gemm1"), 0.0) if seen is not None else g["gemm1_bytes"]
    b2 = g["gemm2_bytes"].where(seen.str.contains("gemm2"), 0.0) if seen is not None else g["gemm2_bytes"]
    return b1 + b2


def breakdown_chart(a: Analysis, out: Path) -> list[Path]:
    """Share of each role in the layer's kernel time (stacked to 100%), total time on top of each bar.

    Shares, not absolute times: layer times span orders of magnitude across batches (µs to tens of
    ms), which would flatten every small batch on a linear axis and distort stacks on a log axis.
    """
    plt = _plt()
    r = a.roles
    n = 1 if r.empty else r[["format", "batch"]].drop_duplicates().shape[0]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * n + 2), 4.8))
    if r.empty:
        ax.text(0.5, 0.5, "no kernel timings", transform=ax.transAxes, ha="center")
    else:
        piv = r.assign(role=r["role"].astype(str)).pivot_table(index=["batch", "format"], columns="role",
                                                               values="time_median_ns", aggfunc="sum").fillna(0)
        total = piv.sum(axis=1).to_numpy()
        # Bars grouped by batch, a gap between batches.
        xs, x, prev = [], 0.0, None
        for b, _ in piv.index:
            if prev is not None and b != prev:
                x += 0.6
            xs.append(x)
            x += 1.0
            prev = b
        xs = np.array(xs)
        bottom = np.zeros(len(piv))
        for role in [x for x in ROLES if x in piv.columns]:
            share = piv[role].to_numpy() / np.where(total > 0, total, 1) * 100
            ax.bar(xs, share, bottom=bottom, label=role, color=ROLE_COLORS[role], width=0.85)
            bottom += share
        for xi, t in zip(xs, total):
            ax.text(xi, 101, _short_time(t), ha="center", va="bottom", fontsize=6, rotation=90)
        ax.set_xticks(xs, [f for _, f in piv.index], fontsize=7, rotation=90)
        import matplotlib.transforms as mtransforms
        below = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
        batches = np.array([b for b, _ in piv.index])
        for b in dict.fromkeys(batches):
            ax.text(xs[batches == b].mean(), -0.17, f"batch {b}", transform=below, ha="center", va="top", fontsize=8)
        ax.set_ylim(0, 118)
        ax.set_ylabel("share of kernel time per layer call (%)")
        ax.legend(fontsize=7, ncols=len(piv.columns), loc="upper center", bbox_to_anchor=(0.5, -0.3))
    ax.set_title(f"Time by role, {a.gpu_label} ({a.timing_collector or 'n/a'} kernel durations)\n"
                 f"share of each layer call's kernel time; on top of each bar: median kernel time per call", fontsize=10)
    paths = _save(fig, out, "breakdown")
    plt.close(fig)
    return paths


def _short_time(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e3:.0f} µs"


def speedup_chart(a: Analysis, out: Path) -> list[Path]:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    pair = a.summary.get("pair")
    if pair and not a.layer.empty:
        fa, fb = pair
        t = a.layer.pivot_table(index="batch", columns="format", values="layer_time_median_ns")
        if fa in t and fb in t:
            s = (t[fb] / t[fa]).dropna()
            ax.plot(s.index, s.to_numpy(), "o-", label=f"time {fb} / time {fa} (measured, CUDA events)")
            for xi, yi in zip(s.index, s.to_numpy()):
                ax.annotate(f"{yi:.2f}x", (xi, yi), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
        ax.axhline(1.0, color="k", lw=0.8)
        xs = a.summary.get("measured_crossover_batches") or []
        xp = a.summary.get("predicted_crossover_batch")
        for i, xm in enumerate(xs):
            ax.axvline(xm, color="C1", ls="--", label=f"measured crossover{'s' if len(xs) > 1 else ''} "
                       f"~{', ~'.join(f'{x:.0f}' for x in xs)}" if i == 0 else None)
        if not xs:
            ax.plot([], [], " ", label="measured crossover: none in the measured batches")
        if xp:
            ax.axvline(xp, color="C2", ls=":", label=f"predicted crossover ~{xp:.0f} ({a.summary.get('predicted_crossover_source')})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.margins(y=0.12)
        from matplotlib.ticker import FuncFormatter, LogLocator
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_ylabel(f"{fa} speedup over {fb} (>1: {fa} faster; log)")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "fewer than two formats", transform=ax.transAxes, ha="center")
        ax.set_ylabel("speedup")
    ax.set_xlabel("batch (tokens per layer call, log)")
    ax.set_title(f"Speedup vs batch, {' vs '.join(pair or [])} on {a.gpu_label}".replace(",  on", " on"))
    ax.grid(True, alpha=0.3)
    paths = _save(fig, out, "speedup")
    plt.close(fig)
    return paths


def write_plots(a: Analysis, out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MoeprofError(f"cannot create plot folder {out}: {exc.strerror}") from None
    return roofline_chart(a, out) + breakdown_chart(a, out) + speedup_chart(a, out)
