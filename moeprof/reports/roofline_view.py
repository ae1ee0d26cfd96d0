"""Rich rendering of `moeprof roofline`: table over batch sizes, verdict panel, memory panel."""

from __future__ import annotations

from typing import Sequence

import pandas as pd
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

_BOUND_SHORT = {"memory": "mem", "compute": "cmp"}


def _fmt_us(t_us: float) -> str:
    return f"{t_us:,.1f}" if t_us < 1000 else f"{t_us:,.0f}"


def roofline_rich_table(table: pd.DataFrame, verdict: pd.DataFrame, title: str) -> Table:
    formats = list(dict.fromkeys(table["format"]))
    out = Table(title=escape(title), box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    out.add_column("batch", justify="right")
    out.add_column("experts", justify="right")
    for f in formats:
        path = table.loc[table["format"] == f, "mma_path"].iloc[0]
        out.add_column(f"{f.upper()} µs\n({path} MMA)", justify="right")
    comm = "t_comm_us" in table
    if comm:
        out.add_column("link µs\n(tp/ep)", justify="right")
    out.add_column("winner", justify="left")
    out.add_column("speedup", justify="right")

    times = table.pivot(index="batch", columns="format", values="t_roofline_us")
    bounds = table.pivot(index="batch", columns="format", values="bound")
    touched = table.groupby("batch")["experts_touched"].first()
    by_batch = verdict.set_index("batch")
    for batch in times.index:
        v = by_batch.loc[batch]
        cells: list[Text | str] = [str(batch), f"{touched[batch]:.1f}"]
        for f in formats:
            cell = Text(f"{_fmt_us(times.loc[batch, f])} {_BOUND_SHORT[bounds.loc[batch, f]]}")
            if f == v["winner"]:
                cell.stylize("bold green")
            cells.append(cell)
        if comm:
            cells.append(_fmt_us(float(table.loc[table["batch"] == batch, "t_comm_us"].iloc[0])))
        winner = v["winner"].upper() + (f" = {v['tied_with'].upper()}" if v["tied_with"] else "")
        speedup = f"{v['speedup']:.2f}x vs {str(v['runner_up']).upper()}" if pd.notna(v["speedup"]) else "-"
        cells += [winner, speedup]
        out.add_row(*cells)
    return out


def render_roofline(
    console: Console,
    table: pd.DataFrame,
    verdict: pd.DataFrame,
    summary: Sequence[str],
    memory: Sequence[str],
    title: str,
) -> None:
    """Table, then the verdict and memory panels. Lines are plain text (no markup is parsed)."""
    console.print(roofline_rich_table(table, verdict, title))
    console.print(Text("mem / cmp: memory- or compute-bound lower bound; experts: routed experts touched (per rank when ep > 1)", style="dim"))
    if summary:
        console.print(Panel(Text("\n".join(summary)), title="Verdict", title_align="left", border_style="cyan"))
    if memory:
        console.print(Panel(Text("\n".join(memory)), title="Memory", title_align="left", border_style="magenta"))
