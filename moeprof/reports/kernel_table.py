"""The per-kernel report of a program without moeprof's labels (analysis.foreign.KernelReport):
terminal, markdown, JSON and CSV."""

from __future__ import annotations

import io
import json
import math

import pandas as pd

from moeprof.analysis.foreign import KernelReport

TOP_ROWS = 25  # the terminal and markdown list the kernels that took the most time; JSON/CSV hold all

COLUMNS: list[tuple[str, str]] = [
    ("role", "role"), ("kernel", "display_name"), ("calls", "calls"), ("total", "total_ns"),
    ("median", "median_ns"), ("share", "share_pct"), ("DRAM", "dram_bw_bytes_per_s"),
    ("% DRAM peak", "dram_bw_pct_of_peak"), ("tensor pipe", "tensor_pipe_active_pct"), ("MMA", "tensor_path"),
    ("% MMA peak", "tensor_pct_of_peak"), ("bound", "bound_measured"),
]


def _time(ns: float) -> str:
    if not isinstance(ns, (int, float)) or not math.isfinite(ns):
        return "–"
    return f"{ns / 1e6:.2f} ms" if ns >= 1e6 else f"{ns / 1e3:.1f} µs"


def _cell(col: str, v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if col in ("total_ns", "median_ns"):
        return _time(float(v))
    if col.endswith("_pct") or col.endswith("_pct_of_peak"):
        return f"{float(v):.1f}%"
    if col == "dram_bw_bytes_per_s":
        return f"{float(v) / 1e12:.2f} TB/s"
    if col == "executed_tflop_per_s":
        return f"{float(v):.0f}"
    if col == "calls":
        return f"{int(v)}"
    return str(v) if str(v) else "–"


def rows(r: KernelReport, limit: int | None = TOP_ROWS) -> tuple[list[str], list[list[str]]]:
    t = r.table if limit is None else r.table.head(limit)
    return [h for h, _ in COLUMNS], [[_cell(c, row[c]) for _, c in COLUMNS] for _, row in t.iterrows()]


def title(r: KernelReport) -> str:
    cmd = " ".join(r.capture.workload.get("command") or []) or "moeprof workload"
    return (f"{r.capture.path.name}: {len(r.table)} kernel identities, {_time(r.total_time_ns)} GPU time "
            f"({r.timing_collector}) on {r.gpu_label} — {cmd}")


# Below this many columns (piped output is 80) the table keeps the columns that decide and folds the names.
WIDE = 150
NARROW_DROPPED = ("median", "DRAM", "% MMA peak")
NARROW_HEADERS = {"% DRAM peak": "DRAM%", "tensor pipe": "pipe%"}
BOUND_SHORT = {"memory": "mem", "compute": "cmp", "latency/issue": "lat"}


def render(r: KernelReport, console=None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    c = console or Console()
    wide = c.width >= WIDE
    tab = Table(title=title(r), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
                padding=(0, 1, 0, 0))
    header, body = rows(r)
    keep = [i for i, h in enumerate(header) if wide or h not in NARROW_DROPPED]
    for i in keep:
        h = header[i]
        # Long kernel names fold inside their column (no "…" cut); the short cells keep their width.
        tab.add_column(h if wide else NARROW_HEADERS.get(h, h),
                       justify="left" if h in ("role", "kernel", "MMA", "bound") else "right",
                       no_wrap=h != "kernel", overflow="fold")
    bound = header.index("bound")
    for line in body:
        if not wide:
            cls = line[bound].removesuffix(" (borderline)")
            short = BOUND_SHORT.get(cls, cls) + ("~" if cls != line[bound] else "")
            line = [*line[:bound], short, *line[bound + 1:]]
        tab.add_row(*(line[i] for i in keep))
    c.print(tab)
    if not wide:
        c.print(f"DRAM%, pipe%: DRAM bandwidth and tensor pipe activity, % of peak; bound mem / lat / cmp: memory-, "
                f"latency/issue-, compute-bound; {', '.join(NARROW_DROPPED)}: --format csv or json, or {WIDE}+ "
                f"columns", highlight=False)
    if len(r.table) > TOP_ROWS:
        c.print(f"({len(r.table) - TOP_ROWS} more kernel identities: --format csv or json lists all)")
    c.print(f"peaks: DRAM {r.peaks.dram_source}; tensor {r.peaks.tensor_source}", highlight=False)
    for n in r.notes:
        c.print(f"note: {n}", highlight=False, markup=False)
    for h in r.hints:
        c.print(h, highlight=False, markup=False)


def markdown(r: KernelReport) -> str:
    header, body = rows(r)
    out = [f"### {title(r)}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(x.replace("|", "\\|") for x in line) + " |" for line in body]
    out += [""] + [f"- {n}" for n in r.notes]
    if r.hints:
        out += ["", "```", *r.hints, "```"]
    return "\n".join(out) + "\n"


def as_dict(r: KernelReport) -> dict:
    from moeprof.reports.export import json_safe, records

    m = r.capture.manifest
    return json_safe({"capture": str(r.capture.path), "gpu": m.gpu.to_json(), "workload": m.workload.to_json(),
                      "timing_collector": r.timing_collector, "total_time_ns": r.total_time_ns,
                      "peaks": {"dram_bytes_per_s": r.peaks.dram_bytes_per_s, "dram_source": r.peaks.dram_source,
                                "tensor_flop_per_s": r.peaks.tensor_flops_per_s, "tensor_source": r.peaks.tensor_source},
                      "kernels": records(r.table), "notes": r.notes, "hints": r.hints})


def as_json(r: KernelReport) -> str:
    return json.dumps(as_dict(r), indent=2, allow_nan=False)


def as_csv(r: KernelReport) -> str:
    buf = io.StringIO()
    t = r.table.copy()
    t["role"] = t["role"].astype(str)
    t.to_csv(buf, index=False)
    return buf.getvalue()
