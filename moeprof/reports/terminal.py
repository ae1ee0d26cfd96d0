"""Rich terminal rendering of an analysis (tables + verdict panel) and of a diff."""

from __future__ import annotations

import numpy as np
import pandas as pd
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from moeprof.analysis.classify import ROLES
from moeprof.analysis.diff import DiffResult
from moeprof.analysis.pipeline import Analysis
from moeprof.analysis.verdict import fmt_num, fmt_time


def _spread(r: pd.Series, p10: str, p90: str) -> str:
    if p10 in r and p90 in r and np.isfinite(r[p10]) and np.isfinite(r[p90]):
        return f"{fmt_time(r[p10])}–{fmt_time(r[p90])}"
    return "n/a"


def _table(title: str, columns: list[tuple[str, str]]) -> Table:
    t = Table(title=title, title_justify="left")
    for col, just in columns:
        t.add_column(col, justify=just, no_wrap=True)
    return t


def layer_table(a: Analysis) -> Table:
    """Whole layer calls: time, spread, throughput, share outside the expert GEMMs."""
    t = _table(f"Layer calls on {escape(a.gpu_label)} (per layer call; non-GEMM: share of kernel time outside the expert GEMMs)",
               [("fmt", "left"), ("batch", "right"), ("median", "right"), ("p10–p90", "right"), ("n", "right"),
                ("tok/s", "right"), ("non-GEMM", "right")])
    for _, r in a.layer.iterrows():
        t.add_row(str(r["format"]), str(r["batch"]), fmt_time(r["layer_time_median_ns"]),
                  _spread(r, "layer_time_p10_ns", "layer_time_p90_ns"), fmt_num(r.get("repeats")),
                  fmt_num(r.get("tokens_per_s"), "{:,.0f}"), fmt_num(r.get("outside_gemm_pct"), suffix="%"))
    return t


def gemm_table(a: Analysis) -> Table:
    """The expert GEMMs against their roofline: efficiency, what bounds them, MMA path, padding."""
    t = _table(f"Expert GEMMs vs roofline on {escape(a.gpu_label)} (%roof: roofline bound / measured; DRAM%, TC%: of peak; "
               f"pipe%: tensor pipe active; pad: share of executed tensor ops that is padding)",
               [("fmt", "left"), ("batch", "right"), ("%roof", "right"), ("DRAM%", "right"), ("TC%", "right"),
                ("pipe%", "right"), ("bound (measured)", "left"), ("MMA", "left"), ("pad", "right")])
    for _, r in a.layer.iterrows():
        t.add_row(str(r["format"]), str(r["batch"]), fmt_num(r.get("pct_of_roofline"), suffix="%"),
                  fmt_num(r.get("dram_bw_pct_of_peak"), suffix="%"), fmt_num(r.get("tensor_pct_of_peak"), suffix="%"),
                  fmt_num(r.get("tensor_pipe_active_pct"), suffix="%"), str(r.get("bound_measured") or "n/a"),
                  mma_cell(r), fmt_num(r.get("padding_pct"), suffix="%"))
    return t


def mma_cell(r: pd.Series) -> str:
    """Measured MMA path; where unknown, say so next to the format's expected path."""
    path, model = r.get("tensor_path") or "", r.get("mma_path_model") or ""
    if path in ("", "n/a", "uncounted"):
        return f"{path or 'n/a'} (exp. {model})" if model else (path or "n/a")
    return str(path)


def verdict_heading(v) -> str:
    head = f"batch {v.batch}: {v.winner} {v.speedup:.2f}x faster than {v.runner_up}"
    if v.fastest and v.fastest != v.winner:
        head += f"; fastest overall: {v.fastest} ({v.fastest_margin:.2f}x over {v.next_fastest})"
    elif v.fastest and len(v.times_ns) > 2:
        head += f"; also fastest overall ({v.fastest_margin:.2f}x over {v.next_fastest})"
    return head


def role_rows(a: Analysis) -> tuple[list[str], list[list[str]]]:
    """The roles present, and per (format, batch) a row: format, batch, then 'time (share%)' per role."""
    if a.roles.empty:
        return [], []
    present = [r for r in ROLES if (a.roles["role"] == r).any()]
    rows = []
    for (fmt, batch), g in a.roles.groupby(["format", "batch"], sort=True):
        by = g.set_index(g["role"].astype(str))
        rows.append([str(fmt), str(batch)] + [
            f"{fmt_time(by.loc[r, 'time_median_ns'])} ({by.loc[r, 'share_pct']:.0f}%)" if r in by.index else "–"
            for r in present])
    return present, rows


def role_table(a: Analysis) -> Table:
    t = Table(title=f"Time by role ({a.timing_collector or 'n/a'} kernel durations, median per layer call)",
              title_justify="left")
    t.add_column("format")
    t.add_column("batch", justify="right")
    present, rows = role_rows(a)
    for r in present:
        t.add_column(r, justify="right")
    for row in rows:
        t.add_row(*row)
    return t


def verdict_panel(a: Analysis) -> Panel:
    parts: list = []
    s = a.summary
    parts.append(Text(f"Answer: {s.get('answer')}", style="bold"))
    for line in s.get("lines", []):
        parts.append(Text("  " + line))
    for v in a.verdicts:
        parts.append(Text(""))
        style = "bold green" if v.significant else ("bold yellow" if v.significant is None else "bold")
        parts.append(Text(verdict_heading(v), style=style))
        for reason in v.reasons:
            parts.append(Text("  • " + reason))
    pair = " vs ".join(s.get("pair") or []) or "formats"
    return Panel(Group(*parts), title=f"Verdict: {pair} on {escape(a.gpu_label)}", expand=True)


def render_analysis(a: Analysis, console: Console | None = None) -> None:
    c = console or Console()
    w = a.capture.workload
    what = w.get("model") or ("external: " + " ".join(w.get("command") or []) if w.get("mode") == "external" else "workload")
    c.print(f"[bold]moeprof analyze[/] {escape(str(a.capture.path))}  —  {escape(what)} on [bold]{escape(a.gpu_label)}[/]",
            highlight=False)
    c.print(f"peaks: tensor {escape(a.peaks.tensor_source)}; DRAM {escape(a.peaks.dram_source)}")
    for n in a.notes:  # notes quote manifests and profiler logs: print them as text, not markup
        c.print(f"[yellow]note:[/] {escape(n)}")
    c.print(layer_table(a))
    c.print(gemm_table(a))
    c.print(role_table(a))
    c.print(verdict_panel(a))


def _fold(rows: pd.DataFrame, status: str) -> str:
    """One line for the rows only one capture has: which formats and batches."""
    sub = rows[rows["status"] == status]
    if sub.empty:
        return ""
    side = "B" if status == "added" else "A"
    parts = [f"{fmt} (batch {', '.join(str(b) for b in sorted(g['batch'].unique()))})"
             for fmt, g in sub.groupby("format", sort=True)]
    return f"{status}: {len(sub)} rows only in {side}: " + "; ".join(parts) + " (--all lists them)"


def interval_cell(r) -> str:
    """The bootstrap interval on the change, e.g. '+4.1%..+6.0%' (n/a for added/removed rows)."""
    lo, hi = fmt_num(r.get("ci_low_pct"), "{:+.1f}"), fmt_num(r.get("ci_high_pct"), "{:+.1f}", "%")
    return "n/a" if "n/a" in (lo, hi) else f"{lo}..{hi}"


def render_diff(d: DiffResult, console: Console | None = None, show_all: bool = False) -> None:
    c = console or Console()
    for e in d.errors:
        c.print(f"[red]incomparable (forced):[/] {escape(e)}")
    for wmsg in d.warnings:
        c.print(f"[yellow]warning:[/] {escape(wmsg)}")
    counts = d.counts()
    c.print("  ".join(f"{k}: {v}" for k, v in counts.items()))
    t = Table(title=escape(f"{d.label_a} -> {d.label_b}"), title_justify="left")
    for col in ("status", "format", "batch", "role", "A (median)", "B (median)", "change [95% interval]", "threshold",
                "n A/B",
                "DRAM bytes Δ", "tensor ops Δ"):
        t.add_column(col, justify="left" if col in ("status", "format", "role") else "right")
    style = {"faster": "green", "slower": "red", "added": "cyan", "removed": "magenta", "unchanged": "dim",
             "inconclusive": "yellow"}
    rank = {"slower": 0, "faster": 1, "inconclusive": 2, "unchanged": 3, "added": 4, "removed": 5}
    rows = d.rows.assign(_rank=d.rows["status"].map(rank)).sort_values("_rank", kind="stable")
    if not show_all:
        rows = rows[~rows["status"].isin(["added", "removed"])]
    for _, r in rows.iterrows():
        t.add_row(f"[{style.get(r['status'], '')}]{r['status']}[/]", str(r["format"]), str(r["batch"]), str(r["role"]),
                  fmt_time(r["time_a_ns"]), fmt_time(r["time_b_ns"]),
                  f"{fmt_num(r['change_pct'], '{:+.1f}', '%')} [{interval_cell(r)}]",
                  fmt_num(r.get("threshold_pct"), "{:.1f}", "%"), f"{r['n_a']}/{r['n_b']}",
                  fmt_num(r.get("dram_bytes_change_pct"), "{:+.1f}", "%"),
                  fmt_num(r.get("tensor_ops_change_pct"), "{:+.1f}", "%"))
    c.print(t)
    if not show_all:
        for status in ("added", "removed"):
            line = _fold(d.rows, status)
            if line:
                c.print(escape(line))
    c.print(escape(f"decision rule: {d.decision_rule}"))
