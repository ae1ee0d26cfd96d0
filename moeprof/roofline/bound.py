"""Roofline tables over batch sizes and formats, per-batch verdicts, crossovers, memory (the verdict in words:
roofline/sentences.py; everything at once: roofline/report.py)."""

from __future__ import annotations

import re
from itertools import combinations
from typing import Iterable, Sequence

import pandas as pd

from moeprof.errors import MoeprofError
from moeprof.roofline import crossover
from moeprof.roofline.crossover import TIE_RTOL, Crossover
from moeprof.roofline.cost import (
    Routing,
    layer_cost,
    memory_plan,
    min_tp_to_fit,
    parse_routing,
)
from moeprof.roofline.formats import DEFAULT_FORMATS, WeightFormat, get_format
from moeprof.roofline.gpus import GpuSpec, get_gpu
from moeprof.roofline.shapes import MoeModel, get_model

DEFAULT_BATCHES = tuple(2**i for i in range(15))  # 1 .. 16384
MAX_BATCH = 1 << 24

TABLE_COLUMNS = [
    "model", "gpu", "format", "batch", "tp", "ep", "routing", "mma_path",
    "experts_touched", "token_expert_pairs", "flops", "bytes", "weight_bytes", "act_bytes",
    "intensity_flop_per_byte", "t_compute_us", "t_memory_us", "t_roofline_us", "bound",
    "peak_flops_per_s", "hbm_bytes_per_s",
    "gemm1_flops", "gemm2_flops", "shared_flops",
    "gemm1_weight_bytes", "gemm2_weight_bytes", "shared_weight_bytes",
    "gemm1_act_bytes", "gemm2_act_bytes", "shared_act_bytes",
    "gemm1_t_roofline_us", "gemm2_t_roofline_us", "shared_t_roofline_us",
    "experts_touched_total", "tokens",
]


def parse_batches(spec: str | int | Iterable[int]) -> list[int]:
    """'1,2,4', '1..16384' (doubling from the low end up to the high end), or a mix: '1..8,100'."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = str(spec)
    if not isinstance(spec, str):
        values = list(spec)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise MoeprofError(f"batch sizes must be positive integers, got {v!r}")
        return sorted(set(values))
    out: set[int] = set()
    for item in spec.split(","):
        item = item.strip()
        m = re.fullmatch(r"(\d+)\s*(?:\.\.|-|:)\s*(\d+)", item)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo < 1 or hi < lo:
                raise MoeprofError(f"bad batch range {item!r}: need 1 <= LO <= HI, e.g. 1..16384")
            b = lo
            while b <= hi:
                out.add(b)
                b *= 2
        elif re.fullmatch(r"[-+]?\d+", item):
            b = int(item)
            if b < 1:
                raise MoeprofError(f"batch sizes must be >= 1, got {item!r}")
            out.add(b)
        else:
            raise MoeprofError(f"bad batch {item!r}: use a list like 1,2,4 or a range like 1..16384")
    if not out:
        raise MoeprofError("no batch sizes given")
    if max(out) > MAX_BATCH:
        raise MoeprofError(f"batch {max(out)} is larger than the supported {MAX_BATCH}")
    return sorted(out)


def parse_formats(spec: str | Iterable[str | WeightFormat]) -> list[WeightFormat]:
    items = [s for s in spec.split(",") if s.strip()] if isinstance(spec, str) else list(spec)
    if not items:
        raise MoeprofError("no formats given")
    fmts: list[WeightFormat] = []
    for item in items:
        f = get_format(item)
        if f not in fmts:
            fmts.append(f)
    return fmts


def roofline_table(
    model: MoeModel | str,
    gpu: GpuSpec | str,
    formats: Sequence[WeightFormat | str] | str = DEFAULT_FORMATS,
    batches: Iterable[int] | str = DEFAULT_BATCHES,
    tp: int = 1,
    ep: int = 1,
    routing: Routing | str | float = "uniform",
) -> pd.DataFrame:
    """One row per (format, batch): the layer_cost record (see TABLE_COLUMNS)."""
    model, gpu = get_model(model), get_gpu(gpu)
    fmts = parse_formats(formats)
    routing = parse_routing(routing)
    rows = [
        layer_cost(model, f, gpu, b, tp=tp, ep=ep, routing=routing).as_record()
        for f in fmts
        for b in parse_batches(batches)
    ]
    return pd.DataFrame(rows)[TABLE_COLUMNS]


def _times(table: pd.DataFrame) -> pd.DataFrame:
    """batch x format matrix of t_roofline_us, formats in table order."""
    order = list(dict.fromkeys(table["format"]))
    return table.pivot(index="batch", columns="format", values="t_roofline_us")[order].sort_index()


def verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """Per batch: fastest format, runner-up, speedup = t(runner-up) / t(winner), and any ties."""
    times = _times(table)
    bound = table.pivot(index="batch", columns="format", values="bound")
    rows = []
    for batch, t in times.iterrows():
        ranked = t.sort_values(kind="stable")
        winner, t_win = ranked.index[0], float(ranked.iloc[0])
        tied = [f for f in ranked.index[1:] if abs(float(ranked[f]) - t_win) <= TIE_RTOL * t_win]
        runner = ranked.index[1] if len(ranked) > 1 else None
        t_run = float(ranked.iloc[1]) if runner is not None else float("nan")
        rows.append({
            "batch": int(batch),
            "winner": winner,
            "winner_t_us": t_win,
            "winner_bound": bound.loc[batch, winner],
            "runner_up": runner,
            "runner_up_t_us": t_run,
            "speedup": t_run / t_win if runner is not None else float("nan"),
            "tied_with": ",".join(tied),
        })
    return pd.DataFrame(rows)


def crossovers(table: pd.DataFrame, a: str, b: str) -> list[Crossover]:
    """Batches of the table where the faster of formats a and b changes (ties keep the previous winner),
    each bracketed by the table's batches with a log-log estimate between them."""
    times = _times(table)
    for f in (a, b):
        if f not in times.columns:
            raise MoeprofError(f"format {f!r} is not in the table; it has {', '.join(times.columns)}")
    return crossover.find(list(times.index), times[a].to_list(), times[b].to_list(), a, b, basis="roofline model")


def first_win(table: pd.DataFrame, a: str, b: str) -> int | None:
    """First batch of the table where format a is strictly faster than b."""
    times = _times(table)
    for batch, t in times.iterrows():
        if crossover.winner(float(t[a]), float(t[b]), a, b) == a:
            return int(batch)
    return None


def refine_crossover(
    model: MoeModel | str,
    gpu: GpuSpec | str,
    c: Crossover,
    tp: int = 1,
    ep: int = 1,
    routing: Routing | str | float = "uniform",
) -> Crossover:
    """The estimate bisected to the first integer batch in (lo, hi] where c.after wins."""
    return crossover.bisect(
        c, lambda fmt, b: layer_cost(model, fmt, gpu, b, tp=tp, ep=ep, routing=routing).t_roofline_s)


def all_crossovers(
    table: pd.DataFrame,
    model: MoeModel | str | None = None,
    gpu: GpuSpec | str | None = None,
    tp: int = 1,
    ep: int = 1,
    routing: Routing | str | float = "uniform",
) -> list[Crossover]:
    """Crossovers for every pair of formats in the table; estimates bisected to the integer batch if model and
    gpu are given (else log-log interpolated between the table's batches)."""
    formats = list(dict.fromkeys(table["format"]))
    out: list[Crossover] = []
    for a, b in combinations(formats, 2):
        for c in crossovers(table, a, b):
            if model is not None and gpu is not None:
                c = refine_crossover(model, gpu, c, tp=tp, ep=ep, routing=routing)
            out.append(c)
    return out


def memory_table(
    model: MoeModel | str,
    gpu: GpuSpec | str,
    formats: Sequence[WeightFormat | str] | str = DEFAULT_FORMATS,
    tp: int = 1,
    ep: int = 1,
) -> pd.DataFrame:
    """Per format: whole-model weight bytes, per-GPU weights and KV-cache room; smallest tp that fits."""
    rows = []
    for f in parse_formats(formats):
        rec = memory_plan(model, f, gpu, tp=tp, ep=ep).as_record()
        rec["min_tp_to_fit"] = min_tp_to_fit(model, f, gpu)
        rows.append(rec)
    return pd.DataFrame(rows)
