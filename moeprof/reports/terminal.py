"""Terminal rendering (rich) of an analysis and of a diff, readable from 80 columns up.

`moeprof analyze` shows one screen: the answer (winner per batch range, crossover, memory effect)
and one row per batch (winner, speedup, each format's measured bound, % of roofline and MMA path,
the one deciding reason). `--explain` adds the per-format tables and every reason. Below WIDE
columns (piped output is 80 wide) tables get narrower: the deciding reasons move under the table,
the time-by-role cells drop their share. No cell is ever cut short with "…": columns fold instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from moeprof.analysis.classify import ROLES
from moeprof.analysis.diff import DiffResult
from moeprof.analysis.metrics import BORDERLINE, BOUND_MARGIN_PCT, BUSY_PCT, bound_class
from moeprof.analysis.pipeline import Analysis
from moeprof.analysis.sentences import fmt_num, fmt_time, heading

WIDE = 110  # columns from which the per-batch table carries its reasons and the role cells their shares

BOUND_SHORT = {"memory": "mem", "compute": "cmp", "latency/issue": "lat"}
BOUND_LEGEND = "mem / lat / cmp: memory-, latency/issue-, compute-bound (measured)"
EXPECTED_PATH_LEGEND = "FP8?: the format's MMA path, not measured"


def _table(title: str | None = None, caption: str | None = None) -> Table:
    """A light table (rule under the header only) that folds long cells instead of cutting them."""
    return Table(title=title, caption=caption, title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD,
                 pad_edge=False, padding=(0, 1, 0, 0), show_edge=False)


def _col(t: Table, name: str, right: bool = False, wrap: bool = True) -> None:
    t.add_column(name, justify="right" if right else "left", overflow="fold", no_wrap=not wrap)


def _spread(r: pd.Series, p10: str, p90: str) -> str:
    if p10 in r and p90 in r and np.isfinite(r[p10]) and np.isfinite(r[p90]):
        return f"{fmt_time(r[p10])}–{fmt_time(r[p90])}"
    return "n/a"


def mma_cell(r: pd.Series) -> str:
    """Measured MMA path; where unknown, say so next to the format's expected path."""
    path, model = r.get("tensor_path") or "", r.get("mma_path_model") or ""
    if path in ("", "n/a", "uncounted"):
        return f"{path or 'n/a'} (exp. {model})" if model else (path or "n/a")
    return str(path)


# ------------------------------------------------------------------------------------------------
# the one-screen verdict

def point_cell(r: pd.Series | None) -> str:
    """One format at one batch: measured bound, % of roofline reached by its expert GEMMs, MMA path."""
    if r is None:
        return "not measured"
    label = r.get("bound_measured")
    label = label if isinstance(label, str) else ""
    bound = BOUND_SHORT.get(bound_class(label), "n/a") + ("~" if label.endswith(BORDERLINE) else "")
    path, model = str(r.get("tensor_path") or ""), str(r.get("mma_path_model") or "")
    if path in ("", "n/a"):  # not measured: the format's expected path, marked as such
        path = f"{model.upper()}?" if model else "n/a"
    elif path != "uncounted":
        path = path.upper()
    return f"{bound} {fmt_num(r.get('pct_of_roofline'), suffix='%')} {path}"


def speedup_cell(v) -> str:
    """The pair's speedup; a difference the test cannot tell from noise is marked as such (a tie)."""
    if v.significant is False:
        return f"{v.speedup:.2f}x (n.s.)"
    if v.significant is None:
        return f"{v.speedup:.2f}x (untested)"
    return f"{v.speedup:.2f}x"


def winner_cell(v) -> str:
    if v.pair is None and v.runner_up:  # the pair asked about was not both measured at this batch
        return f"{v.winner} (over {v.runner_up})"
    if v.fastest and v.fastest != v.winner:
        return f"{v.winner} ({v.fastest} fastest)"
    return v.winner


def batch_table(a: Analysis, wide: bool) -> Table:
    """One row per batch: winner of the pair, speedup, each format's bound / % roofline / MMA path, the why."""
    formats = sorted(a.layer["format"].unique()) if not a.layer.empty else []
    pair = a.summary.get("pair") or []
    # The pair first: it is what the winner and speedup compare.
    formats = [f for f in pair if f in formats] + [f for f in formats if f not in pair]
    t = _table()
    _col(t, "batch", right=True, wrap=False)
    _col(t, "winner")
    _col(t, "speedup", right=True)
    for f in formats:
        _col(t, f)
    if wide:
        _col(t, "deciding reason")
    rows = a.layer.set_index(["format", "batch"]) if not a.layer.empty else None
    for v in a.verdicts:
        cells = [str(v.batch), winner_cell(v), speedup_cell(v)]
        for f in formats:
            cells.append(point_cell(rows.loc[(f, v.batch)] if rows is not None and (f, v.batch) in rows.index else None))
        if wide:
            cells.append(v.deciding_reason)
        t.add_row(*cells)
    return t


def _answer_lines(a: Analysis) -> list[Text]:
    s = a.summary
    out = [Text(f"Answer: {s.get('answer')}", style="bold")]
    # The per-batch wins are in the table below; keep the crossover and memory lines.
    for line in s.get("lines", []):
        if not line.startswith(tuple(f"{f} is faster at batch" for f in (s.get("pair") or []))):
            out.append(Text("  " + line))
    return out


def verdict_screen(a: Analysis, width: int) -> Group:
    wide = width >= WIDE
    pair = " vs ".join(a.summary.get("pair") or []) or "formats"
    parts: list = [*_answer_lines(a), Text("")]
    parts.append(Text(f"Per batch, {pair} (speedup: median layer call; per format: bound, % of roofline, MMA path)"))
    parts.append(batch_table(a, wide))
    if not wide:  # the reasons under the table, one per batch, folded under their own column
        why = Table.grid(padding=(0, 2))
        why.add_column(justify="right", no_wrap=True)
        why.add_column(overflow="fold")
        for v in a.verdicts:
            why.add_row(str(v.batch), v.deciding_reason)
        parts += [Text("Deciding reason per batch:"), why]
    cells = [point_cell(r) for _, r in a.layer.iterrows()]
    legend = (BOUND_LEGEND + (f"; ~: borderline, within {BOUND_MARGIN_PCT:g} points of the {BUSY_PCT:.0f}% mark" if any("~" in c for c in cells)
                              else "") + (f"; {EXPECTED_PATH_LEGEND}" if any(c.endswith("?") for c in cells) else ""))
    parts.append(Text(f"{legend}; n.s.: no significant difference (Mann-Whitney), a tie. --explain: "
                      f"every reason and table; --format markdown | json: all of them.", style="dim"))
    return Group(*parts)


# ------------------------------------------------------------------------------------------------
# --explain: the per-format tables and every reason

def layer_table(a: Analysis) -> Table:
    """Whole layer calls: time, spread, throughput, share outside the expert GEMMs; where the capture has
    NVML clocks, the SM clock and the share of samples under power capping while they were timed."""
    clocks = "sm_clock_median_mhz" in a.layer and a.layer["sm_clock_median_mhz"].notna().any()
    t = _table(f"Layer calls on {escape(a.gpu_label)} (per layer call; non-GEMM: share of kernel time outside the "
               f"expert GEMMs" + ("; SM MHz, capped: NVML's SM clock median and share of samples under power "
                                  "capping while timed" if clocks else "") + ")")
    cols = [("fmt", False), ("batch", True), ("median", True), ("p10–p90", True), ("n", True), ("tok/s", True),
            ("non-GEMM", True)] + ([("SM MHz", True), ("capped", True)] if clocks else [])
    for col, right in cols:
        _col(t, col, right)
    for _, r in a.layer.iterrows():
        cells = [str(r["format"]), str(r["batch"]), fmt_time(r["layer_time_median_ns"]),
                 _spread(r, "layer_time_p10_ns", "layer_time_p90_ns"), fmt_num(r.get("repeats")),
                 fmt_num(r.get("tokens_per_s"), "{:,.0f}"), fmt_num(r.get("outside_gemm_pct"), suffix="%")]
        if clocks:
            cap = r.get("power_capped_fraction")
            cells += [fmt_num(r.get("sm_clock_median_mhz")),
                      fmt_num(cap * 100 if cap is not None and pd.notna(cap) else None, suffix="%")]
        t.add_row(*cells)
    return t


def gemm_table(a: Analysis) -> Table:
    """The expert GEMMs against their roofline: efficiency, what bounds them, MMA path, padding."""
    t = _table(f"Expert GEMMs vs roofline on {escape(a.gpu_label)} (%roof: roofline bound / measured; DRAM%, TC%: of "
               f"peak; pipe%: tensor pipe active; pad: share of executed tensor ops that is padding)")
    for col, right in (("fmt", False), ("batch", True), ("%roof", True), ("DRAM%", True), ("TC%", True),
                       ("pipe%", True), ("bound (measured)", False), ("MMA", False), ("pad", True)):
        _col(t, col, right)
    for _, r in a.layer.iterrows():
        t.add_row(str(r["format"]), str(r["batch"]), fmt_num(r.get("pct_of_roofline"), suffix="%"),
                  fmt_num(r.get("dram_bw_pct_of_peak"), suffix="%"), fmt_num(r.get("tensor_pct_of_peak"), suffix="%"),
                  fmt_num(r.get("tensor_pipe_active_pct"), suffix="%"), str(r.get("bound_measured") or "n/a"),
                  mma_cell(r), fmt_num(r.get("padding_pct"), suffix="%"))
    return t


def role_rows(a: Analysis, with_share: bool = True) -> tuple[list[str], list[list[str]]]:
    """The roles present, and per (format, batch) a row: format, batch, then 'time (share%)' per role."""
    if a.roles.empty:
        return [], []
    present = [r for r in ROLES if (a.roles["role"] == r).any()]
    rows = []
    for (fmt, batch), g in a.roles.groupby(["format", "batch"], sort=True):
        by = g.set_index(g["role"].astype(str))
        rows.append([str(fmt), str(batch)] + [
            (f"{fmt_time(by.loc[r, 'time_median_ns'])}" + (f" ({by.loc[r, 'share_pct']:.0f}%)" if with_share else ""))
            if r in by.index else "–"
            for r in present])
    return present, rows


def role_table(a: Analysis, wide: bool) -> Table:
    what = "time (share of the layer call)" if wide else "time (shares: --format markdown, or 110+ columns)"
    t = _table(f"Time by role ({a.timing_collector or 'n/a'} kernel durations, median per layer call): {what}")
    _col(t, "format")
    _col(t, "batch", right=True)
    present, rows = role_rows(a, with_share=wide)
    for r in present:
        _col(t, r, right=True)
    for row in rows:
        t.add_row(*row)
    return t


def reasons_panel(a: Analysis) -> Panel:
    parts: list = []
    s = a.summary
    parts.append(Text(f"Answer: {s.get('answer')}", style="bold"))
    for line in s.get("lines", []):
        parts.append(Text("  " + line))
    for v in a.verdicts:
        parts.append(Text(""))
        style = "bold green" if v.significant else ("bold yellow" if v.significant is None else "bold")
        parts.append(Text(heading(v), style=style))
        bullets = Table.grid(padding=(0, 1, 0, 0))  # a hanging indent: wrapped lines stay under their text
        bullets.add_column(no_wrap=True)
        bullets.add_column(overflow="fold")
        for reason in v.reasons:
            bullets.add_row("  •", reason)
        parts.append(bullets)
    pair = " vs ".join(s.get("pair") or []) or "formats"
    return Panel(Group(*parts), title=f"Verdict: {pair} on {escape(a.gpu_label)}", expand=True)


def shown_path(path) -> str:
    """A capture folder as the user would type it: relative to the working folder when it lies below it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(p)


def render_analysis(a: Analysis, console: Console | None = None, explain: bool = False) -> None:
    c = console or Console()
    w = a.capture.workload
    what = w.get("model") or ("external: " + " ".join(w.get("command") or []) if w.get("mode") == "external" else "workload")
    c.print(f"[bold]moeprof analyze[/] {escape(shown_path(a.capture.path))}  —  {escape(what)} on "
            f"[bold]{escape(a.gpu_label)}[/]", highlight=False)
    if explain:
        c.print(f"peaks: tensor {escape(a.peaks.tensor_source)}; DRAM {escape(a.peaks.dram_source)}", highlight=False)
    else:
        c.print(f"kernel times: {a.timing_collector or 'n/a'}; peaks from the capture's own clocks (--explain shows "
                f"them)", highlight=False)
    for n in a.notes:  # notes quote manifests and profiler logs: print them as text, not markup
        c.print(f"[yellow]note:[/] {escape(n)}", highlight=False)
    if explain:
        wide = c.width >= WIDE
        c.print(layer_table(a))
        c.print(gemm_table(a))
        c.print(role_table(a, wide))
        c.print(reasons_panel(a))
        return
    c.print()
    c.print(verdict_screen(a, c.width), highlight=False)


def render_lines(title: str, lines: list[str], console: Console | None = None) -> None:
    """A titled list of plain-text lines, each wrapped under its own indent (no markup is read)."""
    c = console or Console()
    grid = Table.grid(padding=(0, 1, 0, 0))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for ln in lines:
        grid.add_row(" •", Text(ln))
    c.print()
    c.print(Text(title))
    c.print(grid)


# ------------------------------------------------------------------------------------------------
# diff

def _fold(rows: pd.DataFrame, status: str) -> str:
    """One line for the rows only one capture has: which formats and batches."""
    sub = rows[rows["status"] == status]
    if sub.empty:
        return ""
    side = "B" if status == "added" else "A"
    parts = [f"{fmt} (batch {', '.join(str(b) for b in sorted(g['batch'].unique()))})"
             for fmt, g in sub.groupby("format", sort=True)]
    return f"{status}: {len(sub)} rows only in {side}: " + "; ".join(parts) + " (--all lists them)"


def _repeats(r: pd.Series) -> str:
    return f"{r['n_a']}/{r['n_b']}"


def interval_cell(r) -> str:
    """The bootstrap interval on the change, e.g. '+4.1%..+6.0%' (n/a for added/removed rows)."""
    lo, hi = fmt_num(r.get("ci_low_pct"), "{:+.1f}"), fmt_num(r.get("ci_high_pct"), "{:+.1f}", "%")
    return "n/a" if "n/a" in (lo, hi) else f"{lo}..{hi}"


def render_diff(d: DiffResult, console: Console | None = None, show_all: bool = False) -> None:
    c = console or Console()
    for e in d.errors:
        c.print(f"[red]incomparable (forced):[/] {escape(e)}", highlight=False)
    for wmsg in d.warnings:
        c.print(f"[yellow]warning:[/] {escape(wmsg)}", highlight=False)
    counts = d.counts()
    c.print("  ".join(f"{k}: {v}" for k, v in counts.items()), highlight=False)
    style = {"faster": "green", "slower": "red", "added": "cyan", "removed": "magenta", "unchanged": "dim",
             "inconclusive": "yellow"}
    rank = {"slower": 0, "faster": 1, "inconclusive": 2, "unchanged": 3, "added": 4, "removed": 5}
    rows = d.rows.assign(_rank=d.rows["status"].map(rank)).sort_values("_rank", kind="stable")
    if not show_all:
        rows = rows[~rows["status"].isin(["added", "removed"])]
    # Repeats per side: one column only where they differ between rows, else said once under the table.
    repeats = {_repeats(r) for _, r in rows.iterrows()}
    one_n = len(repeats) == 1
    # Below WIDE columns (a pipe is 80) the counter changes go: --format csv / json or a wider terminal has them.
    narrow = c.width < WIDE
    t = _table(escape(f"{d.label_a} -> {d.label_b}"))
    cols = ["status", "format", "batch", "role", "A", "B", "change", "interval", "threshold"] + \
           ([] if one_n else ["n A/B"]) + ([] if narrow else ["bytes Δ", "ops Δ"])
    if narrow:  # one space between columns
        t.padding = (0, 0, 0, 0)
    for col in cols:
        # Words that must not fold (status, role, times, the interval) keep their width; the rest give way.
        _col(t, col, right=col not in ("status", "format", "role"),
             wrap=col not in ("status", "role", "A", "B", "interval"))
    for _, r in rows.iterrows():
        cells = [Text(str(r["status"]), style=style.get(r["status"], "")), str(r["format"]), str(r["batch"]),
                 str(r["role"]), fmt_time(r["time_a_ns"]), fmt_time(r["time_b_ns"]),
                 fmt_num(r["change_pct"], "{:+.1f}", "%"), interval_cell(r),
                 fmt_num(r.get("threshold_pct"), "{:.1f}", "%")]
        if not one_n:
            cells.append(_repeats(r))
        if not narrow:
            cells += [fmt_num(r.get("dram_bytes_change_pct"), "{:+.1f}", "%"),
                      fmt_num(r.get("tensor_ops_change_pct"), "{:+.1f}", "%")]
        t.add_row(*cells)
    c.print(t)
    what = ("A, B: median time per layer call" + (f" over {repeats.pop()} repeats (A/B)" if one_n and repeats else "")
            + f"; interval: {1 - d.options.alpha:.0%} bootstrap interval on the change")
    what += (f"; the change in DRAM bytes and tensor ops (ncu): --format csv or json, or {WIDE}+ columns" if narrow
             else "; bytes Δ, ops Δ: change in DRAM bytes and executed tensor ops (ncu)")
    c.print(what, highlight=False)
    if not show_all:
        for status in ("added", "removed"):
            line = _fold(d.rows, status)
            if line:
                c.print(escape(line), highlight=False)
    c.print(f"decision rule: {d.decision_rule}", highlight=False, markup=False)
