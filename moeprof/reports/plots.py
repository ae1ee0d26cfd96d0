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


def _figure(width_in: float, height_in: float):
    """A figure and its axes without pyplot (no GUI backend, no global figure registry: faster to import)."""
    import matplotlib
    from matplotlib.figure import Figure

    # Text stays text in the SVG (searchable, and much faster to write than glyph paths).
    matplotlib.rcParams["svg.fonttype"] = "none"
    fig = Figure(figsize=(width_in, height_in))
    return fig, fig.subplots()


def _save(fig, out: Path, stem: str) -> list[Path]:
    """PNG and SVG. Margins are set per figure (subplots_adjust): bbox_inches="tight" would draw each twice."""
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    for p in paths:
        fig.savefig(p, dpi=120)
    return paths


def _plain_log_ticks(axis) -> None:
    """Decades as plain numbers (0.1, 1, 10, ...) and no minor ticks: mathtext labels and hundreds of minor
    tick lines are most of the drawing time of a log-log chart."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    axis.set_major_locator(LogLocator(base=10))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _label_points(ax, points: list[tuple[float, float, str, str]], fontsize: float = 7.0) -> None:
    """Label data points without overprinting: each label takes the first free spot around its point,
    clear of the markers, the lines drawn so far and the labels already placed.

    Text size is estimated (0.6 em per character), so no draw is needed; a label with no free spot
    is left out (its line's neighbours still show the order). Axis limits must be final.
    """
    to_px = ax.transData.transform
    scale = ax.figure.dpi / 72.0
    w_char, h = 0.6 * fontsize * scale, fontsize * scale
    centers = [to_px((x, y)) for x, y, _, _ in points]
    r = 4 * scale  # marker radius
    taken = [(cx - r, cy - r, cx + r, cy + r) for cx, cy in centers]
    for line in ax.get_lines():  # the lines as small boxes every few pixels along each segment
        xy = line.get_transform().transform(np.column_stack(line.get_data()))  # axvline: y in axes units
        for (x0, y0), (x1, y1) in zip(xy[:-1], xy[1:]):
            n = int(max(abs(x1 - x0), abs(y1 - y0)) // (3 * scale)) + 2
            for t in np.linspace(0.0, 1.0, n):
                px, py = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
                taken.append((px - scale, py - scale, px + scale, py + scale))
    offsets = [(4, 3), (4, -10), (-4, 3), (-4, -10), (4, 9), (-4, 9), (4, -16), (-4, -16)]

    inside = ax.bbox.extents  # (x0, y0, x1, y1) of the axes in pixels: labels stay within them

    def free(box) -> bool:
        if box[0] < inside[0] or box[1] < inside[1] or box[2] > inside[2] or box[3] > inside[3]:
            return False
        return all(box[2] <= t[0] or box[0] >= t[2] or box[3] <= t[1] or box[1] >= t[3] for t in taken)

    for (x, y, text, color), (cx, cy) in zip(points, centers):
        width = w_char * len(text)
        for dx, dy in offsets:
            left = cx + dx * scale if dx > 0 else cx + dx * scale - width
            bottom = cy + dy * scale
            box = (left, bottom, left + width, bottom + h)
            if free(box):
                taken.append(box)
                ax.annotate(text, (x, y), textcoords="offset points", fontsize=fontsize, color=color,
                            xytext=(dx if dx > 0 else dx - width / scale, dy))
                break


def _roof_of(lay) -> dict[str, str]:
    """Per format, the MMA path whose peak its roofline uses (the format's expected path)."""
    if "mma_path_model" not in lay:
        return {}
    paths = lay.dropna(subset=["mma_path_model"]).groupby("format")["mma_path_model"].first()
    return {str(f): str(p) for f, p in paths.items() if p}


def _narrow_weights(lay, roof: dict[str, str]) -> dict[str, int]:
    """Formats whose weights are narrower than the MMA path they are multiplied on: unpacked in the kernel."""
    bits = {"fp8": 8, "fp16": 16, "bf16": 16}
    out = {}
    if "weight_bits" in lay:
        for f, b in lay.dropna(subset=["weight_bits"]).groupby("format")["weight_bits"].first().items():
            if roof.get(str(f)) in bits and b < bits[roof[str(f)]]:
                out[str(f)] = int(b)
    return out


def roofline_chart(a: Analysis, out: Path) -> list[Path]:
    fig, ax = _figure(8, 5.4)
    fig.subplots_adjust(left=0.1, right=0.97, top=0.92, bottom=0.18)
    lay = a.layer
    have = {"useful_tflop_per_s", "gemm1_bytes", "gemm2_bytes"} <= set(lay.columns)
    pts = lay[lay["useful_tflop_per_s"].notna()] if have else lay.iloc[:0]
    roof = _roof_of(lay)
    bw = a.peaks.dram_bytes_per_s
    xs = np.logspace(-1, 4, 200)
    for path, peak in sorted(a.peaks.tensor_flops_per_s.items()):
        if np.isfinite(bw) and np.isfinite(peak):
            on = [f for f, p in sorted(roof.items()) if p == path]
            ax.plot(xs, np.minimum(xs * bw, peak) / 1e12, lw=1.2,
                    label=f"{path.upper()} roof ({peak / 1e12:.0f} TFLOP/s)" + (f": {', '.join(on)}" if on else ""))
    labels = []
    for fmt, g in pts.groupby("format"):
        # Intensity of the expert GEMMs (the measured work): analytic FLOPs / analytic bytes.
        x = g["useful_flops"] / _gemm_bytes(g)
        line, = ax.plot(x, g["useful_tflop_per_s"], "o-", ms=5,
                        label=f"{fmt}: measured expert GEMMs" + (f" (vs {roof[fmt].upper()} roof)" if fmt in roof else ""))
        labels += [(xi, yi, str(b), line.get_color()) for xi, yi, b in zip(x, g["useful_tflop_per_s"], g["batch"])]
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax.xaxis)
    _plain_log_ticks(ax.yaxis)
    ax.set_xlim(0.1, 1e4)
    ax.set_ylim(*ax.get_ylim())  # final limits before the labels are placed in screen space
    _label_points(ax, labels)
    ax.set_xlabel("arithmetic intensity of the expert GEMMs (FLOP/byte, analytic)")
    ax.set_ylabel("useful TFLOP/s (analytic FLOPs / measured time)")
    notes = ["labels: batch (tokens per layer call)"]
    have_fp4 = "fp4" in a.peaks.tensor_flops_per_s
    for fmt, b in sorted(_narrow_weights(lay, roof).items()):
        notes.append(f"{fmt}: {b}-bit weights are unpacked to {roof[fmt].upper()} in the kernel"
                     + ("" if have_fp4 or b != 4 else " (no FP4 MMA on this GPU)")
                     + f", so it is set against the {roof[fmt].upper()} roof")
    fig.text(0.1, 0.03, "\n".join(notes), fontsize=8, color="0.3", va="bottom")
    ax.set_title(f"Roofline, {a.gpu_label} (DRAM {bw / 1e12:.2f} TB/s)" if np.isfinite(bw) else f"Roofline, {a.gpu_label}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    if pts.empty:
        ax.text(0.5, 0.5, "no measured points with analytic FLOPs", transform=ax.transAxes, ha="center")
    paths = _save(fig, out, "roofline")
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
    r = a.roles
    n = 1 if r.empty else r[["format", "batch"]].drop_duplicates().shape[0]
    width_in = max(8.0, 0.55 * n + 2)  # 8 in: room for the title without a tight bounding box
    fig, ax = _figure(width_in, 4.8)
    fig.subplots_adjust(left=0.8 / width_in, right=1 - 0.2 / width_in, top=0.86, bottom=0.3)
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
    return paths


def _short_time(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e3:.0f} µs"


def speedup_chart(a: Analysis, out: Path) -> list[Path]:
    fig, ax = _figure(7, 4.5)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.9, bottom=0.12)
    pair = a.summary.get("pair")
    if pair and not a.layer.empty:
        fa, fb = pair
        t = a.layer.pivot_table(index="batch", columns="format", values="layer_time_median_ns")
        if fa in t and fb in t:
            s = (t[fb] / t[fa]).dropna()
            src = a.layer["layer_time_source"].dropna().iloc[0] if "layer_time_source" in a.layer else "layer calls"
            line, = ax.plot(s.index, s.to_numpy(), "o-", label=f"time {fb} / time {fa} (measured; {src})")
            speedups = [(xi, yi, f"{yi:.2f}x", "black") for xi, yi in zip(s.index, s.to_numpy())]
        ax.axhline(1.0, color="k", lw=0.8)
        xs = a.summary.get("measured_crossover_batches") or []
        xp = a.summary.get("predicted_crossover_batch")
        for i, xm in enumerate(xs):
            ax.axvline(xm, color="C1", ls="--", label=f"measured {fa}/{fb} crossover{'s' if len(xs) > 1 else ''} "
                       f"~{', ~'.join(f'{x:.0f}' for x in xs)}" if i == 0 else None)
        for i, c in enumerate(a.summary.get("measured_crossovers") or []):
            # where the data place it: between the measured batches that bracket it (the line is an estimate)
            ax.axvspan(c["lo"], c["hi"], color="C1", alpha=0.08, lw=0,
                       label=f"measured batches bracketing it: {c['lo']}–{c['hi']}" if i == 0 else None)
        if not xs:
            ax.plot([], [], " ", label="measured crossover: none in the measured batches")
        if xp:
            ax.axvline(xp, color="C2", ls=":", label=f"predicted {fa}/{fb} crossover ~{xp:.0f} ({a.summary.get('predicted_crossover_source')})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.margins(y=0.12)
        from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator
        # Batch ticks at powers of 4 only: every power of 2 would crowd 1-16 and 1024-16384.
        ax.xaxis.set_major_locator(LogLocator(base=4))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        lo, hi = ax.get_ylim()
        if hi / lo < 1.5:  # speedups close to each other (or one batch): widen to a factor 1.5 so ticks show
            mid = (lo * hi) ** 0.5
            lo, hi = mid / 1.5 ** 0.5, mid * 1.5 ** 0.5
            ax.set_ylim(lo, hi)
        # 1x, 2x, 5x, 10x... on a wide range; every 0.1x step where the speedups stay close to each other.
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if hi / lo > 4 else
                                              tuple(float(x) for x in range(1, 10))))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_ylabel(f"{fa} speedup over {fb} (>1: {fa} faster; log)")
        if fa in t and fb in t:
            ax.set_xlim(*ax.get_xlim())  # final limits before the labels are placed in screen space
            ax.set_ylim(*ax.get_ylim())
            _label_points(ax, speedups)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "fewer than two formats", transform=ax.transAxes, ha="center")
        ax.set_ylabel("speedup")
    ax.set_xlabel("batch (tokens per layer call, log)")
    ax.set_title(f"Speedup vs batch, {' vs '.join(pair or [])} on {a.gpu_label}".replace(",  on", " on"))
    ax.grid(True, alpha=0.3)
    paths = _save(fig, out, "speedup")
    return paths


def write_plots(a: Analysis, out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MoeprofError(f"cannot create plot folder {out}: {exc.strerror}") from None
    return roofline_chart(a, out) + breakdown_chart(a, out) + speedup_chart(a, out)
