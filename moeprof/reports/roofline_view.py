"""Rich rendering of `moeprof roofline`: table over batch sizes, verdict panel, memory panel.

Readable from 80 columns: cells fold instead of being cut, and formats that tie are shown as a tie.
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from moeprof.roofline.report import RooflineReport
from moeprof.roofline.sentences import label

_BOUND_SHORT = {"memory": "mem", "compute": "cmp"}


def _fmt_us(t_us: float) -> str:
    return f"{t_us:,.1f}" if t_us < 1000 else f"{t_us:,.0f}"


def roofline_rich_table(r: RooflineReport) -> Table:
    table = r.table
    formats = list(dict.fromkeys(table["format"]))
    out = Table(title=escape(r.title), box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False,
                padding=(0, 1, 0, 0), show_edge=False)
    out.add_column("batch", justify="right", no_wrap=True)
    out.add_column("experts", justify="right", no_wrap=True)
    for f in formats:
        path = table.loc[table["format"] == f, "mma_path"].iloc[0]
        out.add_column(f"{label(f)}\n({path} MMA)", justify="right", overflow="fold")
    comm = "t_comm_us" in table  # tp/ep > 1: the link term beside memory and compute
    if comm:
        out.add_column("link\n(tp/ep)", justify="right", overflow="fold")
    out.add_column("fastest", justify="left", overflow="fold")
    out.add_column("speedup", justify="right", overflow="fold")

    times = table.pivot(index="batch", columns="format", values="t_roofline_us")
    bounds = table.pivot(index="batch", columns="format", values="bound")
    touched = table.groupby("batch")["experts_touched"].first()
    for lead in r.leaders:
        batch = lead.batch
        cells: list[Text | str] = [str(batch), f"{touched[batch]:.1f}"]
        for f in formats:
            cell = Text(f"{_fmt_us(times.loc[batch, f])} {_BOUND_SHORT[bounds.loc[batch, f]]}")
            if f in lead.formats:
                cell.stylize("bold green")
            cells.append(cell)
        if comm:
            cells.append(_fmt_us(float(table.loc[table["batch"] == batch, "t_comm_us"].iloc[0])))
        cells.append(" ≈ ".join(label(f) for f in lead.formats))
        cells.append(f"{lead.speedup:.2f}x vs {label(lead.next_format)}" if lead.next_format else "-")
        out.add_row(*cells)
    return out


def render_roofline(console: Console, r: RooflineReport) -> None:
    """Table, then the verdict and memory panels. Lines are plain text (no markup is parsed)."""
    console.print(roofline_rich_table(r))
    link = "; link: tp all-reduce and ep all-to-all time per rank" if "t_comm_us" in r.table else ""
    console.print(Text(f"times: lower bound per layer call in µs; mem / cmp: memory- or compute-bound; ≈: within "
                       f"{r.tie_tolerance:.0%} (a tie); experts: routed experts touched (per rank when ep > 1){link}",
                       style="dim"))
    if r.summary:
        console.print(Panel(Text("\n".join(r.summary)), title="Verdict", title_align="left", border_style="cyan"))
    if r.memory_summary:
        console.print(Panel(Text("\n".join(r.memory_summary)), title="Memory", title_align="left",
                            border_style="magenta"))
