"""The roofline verdict in words (no markup), from the numbers of roofline/bound.py and roofline/report.py.

Formats that tie (within the report's tolerance) are said to tie, never "1.00x faster"; each
crossover is named with its pair; times are written in µs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import pandas as pd

from moeprof.roofline.gpus import GpuSpec, get_gpu

if TYPE_CHECKING:
    from moeprof.roofline.crossover import Crossover
    from moeprof.roofline.report import Leaders


def label(fmt: str) -> str:
    return fmt.upper()


def us(t_us: float) -> str:
    return f"{t_us:,.1f} µs" if t_us < 1000 else f"{t_us:,.0f} µs"


def span(batches: Sequence[int]) -> str:
    return f"batch {batches[0]}" if len(batches) == 1 else f"batch {batches[0]}–{batches[-1]}"


def names(formats: Sequence[str]) -> str:
    labels = [label(f) for f in formats]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _segments(lead: Sequence[Leaders]) -> list[tuple[frozenset[str], list[Leaders]]]:
    """Consecutive batches led by the same set of formats."""
    out: list[tuple[frozenset[str], list[Leaders]]] = []
    for x in lead:
        key = frozenset(x.formats)
        if out and out[-1][0] == key:
            out[-1][1].append(x)
        else:
            out.append((key, [x]))
    return out


def _lead(seg: list[Leaders], tolerance: float) -> str:
    first = seg[0].formats
    batches = [x.batch for x in seg]
    if len(first) > 1:
        text = f"{names(first)} tie for fastest at {span(batches)} (within {tolerance:.0%} of each other)"
    else:
        text = f"{label(first[0])} is fastest at {span(batches)}"
    if all(x.next_format for x in seg):
        lo, hi = min(x.speedup for x in seg), max(x.speedup for x in seg)
        spread = f"{lo:.2f}x" if round(lo, 2) == round(hi, 2) else f"{lo:.2f}x–{hi:.2f}x"
        nexts = list(dict.fromkeys(x.next_format for x in seg))
        text += f", {spread} faster than " + (label(nexts[0]) if len(nexts) == 1 else "the next format")
    return text


def _why(rows: pd.DataFrame, gone: str, new: str, batch: int) -> str:
    """Why format `new` leads at `batch` where `gone` led before."""
    a, w = rows.loc[(gone, batch)], rows.loc[(new, batch)]
    if a["bound"] == "compute" and a["peak_flops_per_s"] < w["peak_flops_per_s"]:
        ratio = a["peak_flops_per_s"] / w["peak_flops_per_s"]
        share = "half" if abs(ratio - 0.5) < 0.01 else f"{ratio:.2g}x"
        return (f"{label(gone)} has become compute-bound and runs its MMA in {a['mma_path'].upper()} at "
                f"{a['peak_flops_per_s'] / 1e12:.0f} TFLOP/s, {share} of {label(new)}'s "
                f"{w['peak_flops_per_s'] / 1e12:.0f} TFLOP/s ({w['mma_path'].upper()} MMA)")
    if a["bound"] == "memory" and w["bound"] == "memory":
        return f"{label(new)} moves {w['bytes'] / a['bytes']:.2f}x the bytes of {label(gone)}"
    return (f"{label(new)}'s bound is {us(w['t_roofline_us'])} ({w['bound']}-bound) vs {us(a['t_roofline_us'])} "
            f"for {label(gone)} ({a['bound']}-bound)")


def crossover_line(crossovers: Sequence[Crossover], batches: Sequence[int]) -> str:
    """Every crossover, each named with its pair: where it lies (bracketing batches, estimate and its method)
    and which format is faster on each side."""
    if not crossovers:
        return f"Crossovers: none between any two formats over {span(list(batches))}."
    parts = []
    for c in crossovers:
        where = (f"at batch {c.estimate:.0f} ({c.method} between {c.lo} and {c.hi})" if c.estimate is not None
                 else f"between batch {c.lo} and {c.hi}")
        parts.append(f"{label(c.a)}/{label(c.b)} {where}: {label(c.before)} faster below, {label(c.after)} from there")
    return ("Crossover: " if len(parts) == 1 else "Crossovers: ") + "; ".join(parts) + "."


def summary_lines(table: pd.DataFrame, lead: Sequence[Leaders], crossovers: Sequence[Crossover],
                  tolerance: float) -> list[str]:
    """The verdict in plain words, from a roofline table of one model and GPU."""
    if table.empty:
        return []
    rows = table.set_index(["format", "batch"])
    formats = list(dict.fromkeys(table["format"]))
    batches = [x.batch for x in lead]
    lines: list[str] = []

    # 1. The smallest batch: who moves the fewest bytes.
    first = lead[0]
    w0, b0 = first.formats[0], first.batch
    if rows.loc[(w0, b0), "bound"] == "memory" and len(formats) > 1:
        def moves(f: str) -> str:
            ratio = rows.loc[(w0, b0), "bytes"] / rows.loc[(f, b0), "bytes"]
            return (f"the bytes of {label(f)} (within {tolerance:.0%})" if abs(ratio - 1) < tolerance
                    else f"{ratio:.2f}x the bytes of {label(f)}")
        ratios = ", ".join(moves(f) for f in formats if f != w0)
        lines.append(f"At batch {b0} the layer is memory-bound: {label(w0)} moves {ratios}.")

    # 2. Who leads which batch range, and why the lead changes.
    segments = _segments(lead) if len(formats) > 1 else []
    for i, (key, seg) in enumerate(segments):
        text = _lead(seg, tolerance)
        if i == 0:
            lines.append(text[0].upper() + text[1:] + ".")
            continue
        prev = segments[i - 1][1][-1].formats
        gone = next((f for f in prev if f not in key), prev[0])
        new = next((f for f in seg[0].formats if f not in prev), seg[0].formats[0])
        why = _why(rows, gone, new, seg[0].batch) if gone != new else ""
        lines.append(text[0].upper() + text[1:] + (f", because {why}." if why else "."))

    # 3. The crossovers of every pair, 4. where each format turns compute-bound.
    if len(formats) > 1:
        lines.append(crossover_line(crossovers, batches))
    turns = []
    for f in formats:
        cb = table[(table["format"] == f) & (table["bound"] == "compute")]["batch"]
        turns.append(f"{label(f)} from batch {int(cb.min())}" if len(cb) else f"{label(f)} never (up to batch {max(batches)})")
    lines.append("Compute-bound: " + "; ".join(turns) + ".")
    lines.append("These are lower bounds (max of FLOPs/peak and bytes/bandwidth); real kernels add dequantization, "
                 "routing, quantization and launch costs. `moeprof capture` measures them.")
    return lines


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB"


def memory_lines(mem: pd.DataFrame, gpu: GpuSpec | str) -> list[str]:
    """Whole-model weight memory per format and the KV-cache room it leaves, in plain words."""
    gpu = get_gpu(gpu)
    if mem.empty:
        return []
    r0 = mem.iloc[0]
    where = f"{r0['num_gpus']}x {gpu.display_name} (tp={r0['tp']}, ep={r0['ep']})"
    lines = [
        f"Weights per GPU on {where}, {r0['reserve_fraction']:.0%} of HBM reserved for the runtime, "
        f"non-expert weights in BF16:"
    ]
    for _, r in mem.iterrows():
        head = f"{label(r['format'])}: model {_gb(r['model_weight_bytes'])}, {_gb(r['weight_bytes_per_gpu'])} per GPU"
        if r["fits"]:
            lines.append(f"{head}, leaves {_gb(r['free_bytes_per_gpu'])} per GPU for the KV cache.")
        else:
            need = r["min_tp_to_fit"]
            hint = f"; fits from tp={int(need)}" if pd.notna(need) and need else ""
            lines.append(f"{head}: does not fit ({_gb(-r['free_bytes_per_gpu'])} over){hint}.")
    return lines
