"""`report(...)`: everything `moeprof roofline` shows, from one call.

The roofline table over formats and batches, the per-batch verdicts, the crossovers of every pair,
the leading formats per batch (ties within TIE_TOLERANCE), the whole-model memory, and the summary
in words (roofline/sentences.py). `RooflineReport.to_json()` is the `--json` document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import pandas as pd

from moeprof.roofline import bound, sentences
from moeprof.roofline.cost import Routing, check_parallelism, parse_routing
from moeprof.roofline.formats import DEFAULT_FORMATS, WeightFormat
from moeprof.roofline.gpus import GpuSpec, get_gpu
from moeprof.roofline.shapes import MoeModel, get_model

# Two formats whose lower bounds differ by less than this share of the faster one tie: a lower bound is
# not precise to the percent, and "1.00x faster" is not an answer.
TIE_TOLERANCE = 0.01


@dataclass(frozen=True)
class Leaders:
    """At one batch: the formats within TIE_TOLERANCE of the fastest (fastest first), and the next one."""
    batch: int
    formats: tuple[str, ...]
    t_us: tuple[float, ...]
    next_format: str | None
    next_t_us: float
    speedup: float                  # next format's time / the fastest time

    def as_record(self) -> dict[str, Any]:
        return {"batch": self.batch, "formats": list(self.formats), "t_us": list(self.t_us),
                "next_format": self.next_format, "next_t_us": self.next_t_us, "speedup_over_next": self.speedup}


def leaders(table: pd.DataFrame, tolerance: float = TIE_TOLERANCE) -> list[Leaders]:
    """Per batch, the formats that tie for fastest (within `tolerance`) and how far ahead of the rest they are."""
    order = list(dict.fromkeys(table["format"]))
    times = table.pivot(index="batch", columns="format", values="t_roofline_us")[order].sort_index()
    out = []
    for batch, t in times.iterrows():
        ranked = t.sort_values(kind="stable")
        fastest = float(ranked.iloc[0])
        tied = [f for f in ranked.index if float(ranked[f]) <= fastest * (1 + tolerance)]
        rest = [f for f in ranked.index if f not in tied]
        nxt = rest[0] if rest else None
        t_next = float(ranked[nxt]) if nxt else float("nan")
        out.append(Leaders(int(batch), tuple(tied), tuple(float(ranked[f]) for f in tied), nxt, t_next,
                           t_next / fastest if nxt else float("nan")))
    return out


@dataclass(frozen=True)
class RooflineReport:
    model: MoeModel
    gpu: GpuSpec
    formats: tuple[WeightFormat, ...]
    batches: tuple[int, ...]
    tp: int
    ep: int
    routing: Routing
    table: pd.DataFrame             # one row per (format, batch): bound.TABLE_COLUMNS
    verdicts: pd.DataFrame          # per batch: winner, runner-up, speedup (bound.verdicts)
    crossovers: tuple[bound.Crossover, ...]
    leaders: tuple[Leaders, ...]
    memory: pd.DataFrame            # per format: weights per GPU, KV-cache room
    summary: tuple[str, ...]        # the verdict in words
    memory_summary: tuple[str, ...]  # the memory in words
    tie_tolerance: float = TIE_TOLERANCE

    @property
    def title(self) -> str:
        return (f"{self.model.name} on {self.gpu.display_name}: one MoE layer, roofline lower bound "
                f"(tp={self.tp}, ep={self.ep}, routing {self.routing.label})")

    def to_json(self) -> dict[str, Any]:
        """The --json document (NaN left as is: the caller makes it JSON-safe)."""
        return {
            "model": self.model.name,
            "gpu": self.gpu.name,
            "tp": self.tp,
            "ep": self.ep,
            "routing": self.routing.label,
            "formats": [f.name for f in self.formats],
            "batches": list(self.batches),
            "records": self.table.to_dict(orient="records"),
            "verdicts": self.verdicts.to_dict(orient="records"),
            "crossover": [c.as_record() for c in self.crossovers],
            "memory": self.memory.to_dict(orient="records"),
            "summary": list(self.summary) + list(self.memory_summary),
            "tie_tolerance": self.tie_tolerance,
            "leaders": [x.as_record() for x in self.leaders],
        }


def report(
    model: MoeModel | str,
    gpu: GpuSpec | str,
    formats: Sequence[WeightFormat | str] | str = DEFAULT_FORMATS,
    batches: Iterable[int] | str = bound.DEFAULT_BATCHES,
    tp: int = 1,
    ep: int = 1,
    routing: Routing | str | float = "uniform",
    link_gbps: float | None = None,
) -> RooflineReport:
    """The roofline of one MoE layer per format over batch sizes, with verdicts, crossovers and memory.

    With tp or ep > 1 (or a link bandwidth given) the table also holds the communication term per rank
    (roofline/comm.py: comm_bytes, t_comm_us, t_total_us) and the summary says what it adds."""
    m, g = get_model(model), get_gpu(gpu)
    fmts = bound.parse_formats(formats)
    bs = bound.parse_batches(batches)
    check_parallelism(m, tp, ep)
    route = parse_routing(routing)
    table = bound.roofline_table(m, g, fmts, bs, tp=tp, ep=ep, routing=route)
    verdicts = bound.verdicts(table)
    cross = bound.all_crossovers(table, m, g, tp=tp, ep=ep, routing=route)
    lead = leaders(table)
    mem = bound.memory_table(m, g, fmts, tp=tp, ep=ep)
    summary = sentences.summary_lines(table, lead, cross, TIE_TOLERANCE)
    if tp > 1 or ep > 1 or link_gbps is not None:  # the link term beside memory and compute
        from moeprof.roofline.comm import add_comm_columns, comm_lines

        table = add_comm_columns(table, m, g, tp, ep, link_gbps)
        summary += comm_lines(table, tp, ep)
    return RooflineReport(
        m, g, tuple(fmts), tuple(bs), tp, ep, route, table, verdicts, tuple(cross), tuple(lead), mem,
        tuple(summary), tuple(sentences.memory_lines(mem, g)))
