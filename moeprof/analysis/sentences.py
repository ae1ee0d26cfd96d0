"""The verdict in words: each sentence from the numbers analysis/verdict.py computed.

Every sentence quotes the measured or modelled numbers it rests on; a number that is missing is
written "n/a (reason)". Nothing here is canned text independent of the data. Times are written
in ns, µs or ms (fmt_time), never "us".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from moeprof.analysis.classify import GEMM_ROLES
from moeprof.analysis.metrics import (BORDERLINE, BOUND_MARGIN_PCT, BUSY_PCT, PATH_NONE, PATH_NOT_COLLECTED,
                                      PATH_UNCOUNTED, bound_class)
from moeprof.analysis.rows import PATH_BITS, get, peak_path, present, weight_bytes

if TYPE_CHECKING:
    from moeprof.analysis.verdict import Decision

NO_PAIR_ANSWER = "n/a (fewer than two formats measured)"

# ------------------------------------------------------------------------------------------------
# number formatting

def fmt_time(ns: float) -> str:
    if ns is None or not np.isfinite(ns):
        return "n/a"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def fmt_bytes(b: float) -> str:
    if b is None or not np.isfinite(b):
        return "n/a"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(b) >= div:
            return f"{b / div:.2f} {unit}" if unit == "GB" else f"{b / div:.1f} {unit}"
    return f"{b:.0f} B"


def fmt_num(x, fmt: str = "{:.0f}", suffix: str = "") -> str:
    """A number through `fmt` plus suffix; "n/a" for None, NA, NaN or inf (never a made-up 0)."""
    try:
        if x is None or x is pd.NA or not np.isfinite(float(x)):
            return "n/a"
    except (TypeError, ValueError):
        return str(x) if x else "n/a"
    return fmt.format(float(x)) + suffix


def _pct(x: float) -> str:
    return fmt_num(x, suffix="%")


# ------------------------------------------------------------------------------------------------
# reasons

def _pct_busy(x: float) -> str:
    """A percentage set against the BUSY_PCT mark: one decimal near the mark, so 59.7% never reads 60%."""
    if not np.isfinite(x):
        return "n/a"
    return f"{x:.1f}%" if abs(x - BUSY_PCT) < 1.0 else f"{x:.0f}%"


def _peak_txt(r: pd.Series) -> str:
    path, measured = peak_path(r)
    if not path:
        return "the MMA peak (path unknown)"
    return f"the {path.upper()} MMA peak" + ("" if measured else " (the format's expected path; measured path unknown)")


def _tensor_busy_txt(r: pd.Series) -> str:
    busy, src = get(r, "tensor_busy_pct"), get(r, "tensor_busy_source", "")
    if src == "tensor pipe active (ncu)":
        return f"tensor pipe {_pct_busy(busy)} active"
    return f"{_pct_busy(busy)} of {_peak_txt(r)}"


def _dram_txt(r: pd.Series, short: bool = False) -> str:
    src = get(r, "dram_bw_source", "")
    extra = f" from {src}" if present(src) and src != "ncu counters" else ""
    return f"{_pct_busy(get(r, 'dram_bw_pct_of_peak'))} of {'' if short else 'DRAM '}peak{extra}"


def bound_reason(fmt: str, lr: pd.Series, why_no_counters: str) -> str:
    bound = get(lr, "bound_measured", "")
    model = get(lr, "bound_model", "")
    intensity = get(lr, "intensity_flop_per_byte")
    model_txt = (f"the model predicts {model}-bound at {intensity:.0f} FLOP/byte" if present(model) and np.isfinite(intensity)
                 else "model prediction n/a (no cost model for this point)")
    if not present(bound):
        return f"{fmt}: measured bound n/a ({why_no_counters}); {model_txt}."
    sm = get(lr, "sm_throughput_pct")
    sm_txt = f", SM throughput {sm:.0f}%" if np.isfinite(sm) else ""
    edge = (f", borderline: within {BOUND_MARGIN_PCT:g} points of the {BUSY_PCT:.0f}% mark"
            if str(bound).endswith(BORDERLINE) else "")
    bound = bound_class(bound)
    if bound == "memory":
        what = f"memory-bound as measured ({_dram_txt(lr)}; {_tensor_busy_txt(lr)}{edge})"
    elif bound == "compute":
        what = (f"compute-bound as measured ({_tensor_busy_txt(lr)}, {_pct(get(lr, 'tensor_pct_of_peak'))} of "
                f"{_peak_txt(lr)} in useful FLOPs; {_dram_txt(lr)}{edge})")
    else:
        what = (f"latency/issue-bound as measured: neither DRAM ({_dram_txt(lr, short=True)}) nor the tensor cores "
                f"({_tensor_busy_txt(lr)}) reach {BUSY_PCT:.0f}%{sm_txt}")
    return f"{fmt}: expert GEMMs are {what}; {model_txt}."


def bytes_reason(w: str, l: str, wr: pd.Series, lr: pd.Series) -> str:
    mw, ml = get(wr, "dram_bytes"), get(lr, "dram_bytes")
    aw, al = weight_bytes(wr), weight_bytes(lr)
    parts = []
    if np.isfinite(mw) and np.isfinite(ml) and mw > 0:
        parts.append(f"the {l} expert GEMMs moved {ml / mw:.2f}x the DRAM bytes of {w} "
                     f"({fmt_bytes(ml)} vs {fmt_bytes(mw)} per call, ncu)")
    else:
        parts.append("measured DRAM bytes n/a (no ncu DRAM counters)")
    if np.isfinite(aw) and np.isfinite(al) and aw > 0:
        parts.append(f"the model's expert weight bytes: {fmt_bytes(al)} vs {fmt_bytes(aw)} ({al / aw:.2f}x)")
    else:
        parts.append("analytic weight bytes n/a (no cost model for this point)")
    s = "; ".join(parts)
    return s[0].upper() + s[1:] + "."


def path_reason(fmt: str, lr: pd.Series) -> str:
    path = get(lr, "tensor_path", "")
    model = get(lr, "mma_path_model", "")
    exp = f"; the format's expected path is {str(model).upper()}" if present(model) else ""
    if not present(path):
        return f"{fmt}: tensor-core path n/a (no ncu tensor-op counters){exp}."
    pipe, inst = get(lr, "tensor_pipe_active_pct"), get(lr, "tensor_inst_executed")
    if path == PATH_NOT_COLLECTED:
        fp16_known = np.isfinite(get(lr, "tensor_ops_fp16"))
        missing = ("tensor instructions were not counted in this capture" if fp16_known
                   else "FP16-source ops were not collected in this capture")
        counted = "FP8/BF16/FP16-source" if fp16_known else "FP8/BF16"
        txt = f"{fmt}: MMA path n/a (no {counted} tensor ops counted; {missing})"
        if np.isfinite(pipe) and pipe > 0:
            txt += (f", yet the tensor pipe was active {_pct(pipe)} of the time: the tensor cores ran ops of a type not "
                    f"counted here" + ("" if fp16_known else " (likely FP16-source MMAs on operands upcast in the "
                                                             "kernel)"))
        return txt + exp + "."
    if path == PATH_UNCOUNTED:
        return (f"{fmt}: expert GEMMs executed {inst:.3g} tensor instructions but no FP8/BF16/FP16-source tensor ops: "
                f"tensor ops of an uncounted type (e.g. TF32 or integer){exp}.")
    if path == PATH_NONE:
        return (f"{fmt}: expert GEMMs executed no tensor-core instructions (tensor instructions counted: 0): no "
                f"tensor-core work at all (SIMT or dequantize-and-FMA kernels){exp}.")
    ops = {"fp8": get(lr, "tensor_ops_fp8", 0.0), "bf16": get(lr, "tensor_ops_bf16", 0.0),
           "fp16": get(lr, "tensor_ops_fp16", 0.0)}
    total = np.nansum(list(ops.values()))
    main = path if path in ops else max(ops, key=lambda k: np.nan_to_num(ops[k]))
    share = ops[main] / total * 100 if total else np.nan
    txt = (f"{fmt}: expert GEMMs ran on the {str(path).upper()} MMA path ({_pct(share)} of tensor ops"
           f"{' on ' + main.upper() if path == 'mixed' else ''}; tensor pipe active {_pct(pipe)} of the time)")
    if present(model) and model != path:
        txt += f", not the {str(model).upper()} path the format allows"
    return txt + "."


def efficiency_reason(fmt: str, lr: pd.Series) -> str:
    pct, troof, t = get(lr, "pct_of_roofline"), get(lr, "t_roofline_ns"), get(lr, "gemm_time_median_ns")
    if not np.isfinite(pct):
        return f"{fmt}: efficiency against its roofline n/a (no analytic FLOPs/bytes for this point)."
    tf = get(lr, "useful_tflop_per_s")
    built = get(lr, "pct_of_as_built")
    built_txt = f"; {built:.0f}% of the bound of the kernels as built" if np.isfinite(built) else ""
    wb, wbb = get(lr, "gemm1_weight_bytes") + get(lr, "gemm2_weight_bytes"), get(lr, "weight_bytes_as_built")
    if built_txt and np.isfinite(wbb) and wbb > 1.01 * wb:
        built_txt += (f", which dequantize the weights per call: {wbb / 1e9:.2f} GB of weight traffic for "
                      f"{wb / 1e9:.2f} GB of packed weights")
    return (f"{fmt}: expert GEMMs reach {pct:.0f}% of their roofline ({fmt_time(troof)} ideal lower bound vs "
            f"{fmt_time(t)} measured, {tf:.0f} useful TFLOP/s{built_txt}).")


def outside_reason(w: str, l: str, wr: pd.Series, lr: pd.Series, roles: pd.DataFrame, batch: int) -> str:
    def one(fmt: str, r: pd.Series) -> str:
        ns, pct = get(r, "outside_gemm_ns"), get(r, "outside_gemm_pct")
        if not np.isfinite(ns):
            return f"{fmt} n/a (no kernel timings)"
        rr = roles[(roles["format"] == fmt) & (roles["batch"] == batch) & ~roles["role"].isin(GEMM_ROLES)]
        top = rr.sort_values("time_median_ns", ascending=False).head(1)
        top_txt = (f", mostly {top['role'].iloc[0]} {fmt_time(top['time_median_ns'].iloc[0])}"
                   if len(top) and top["time_median_ns"].iloc[0] > 0 else "")
        return f"{fmt} {fmt_time(ns)} ({pct:.0f}% of kernel time{top_txt})"
    return f"Time outside the expert GEMMs: {one(w, wr)}; {one(l, lr)}."


def padding_reason(fmt: str, lr: pd.Series) -> str:
    pad, ex, use = get(lr, "padding_pct"), get(lr, "tensor_ops"), get(lr, "useful_flops")
    if not np.isfinite(pad):
        if not np.isfinite(ex):
            why = "no ncu tensor-op counters"
        elif ex <= 0:
            why = "no tensor ops counted"
        elif not np.isfinite(use):
            why = "no analytic FLOPs for this point"
        else:
            why = (f"executed tensor ops {ex:.3g} are fewer than the useful FLOPs {use:.3g}: part of the work ran "
                   f"on a tensor-op type not counted here")
        return f"{fmt}: padding waste n/a ({why})."
    ratio = ex / use
    if ratio < 1.005:
        return f"{fmt}: no padding waste (executed tensor ops {ex:.3g} = useful FLOPs {use:.3g})."
    return (f"{fmt}: executed tensor ops are {ratio:.{2 if ratio < 10 else 1}f}x the useful FLOPs "
            f"({pad:.{0 if pad >= 10 else 1}f}% padding: {ex:.3g} executed vs {use:.3g} useful; tile remainders "
            f"and block-aligned expert groups).")


def _latency_detail(w: str, l: str, wr: pd.Series, lr: pd.Series) -> str:
    """What holds a latency/issue-bound format back, from the numbers: its tensor-pipe use, and whether
    its SMs issue more (extra in-kernel work such as unpacking narrow weights) or less (stalls) than the peer's."""
    parts = [_tensor_busy_txt(lr)]
    sl, sw = get(lr, "sm_throughput_pct"), get(wr, "sm_throughput_pct")
    bits, path = get(lr, "weight_bits"), peak_path(lr)[0]
    unpack = np.isfinite(bits) and path in PATH_BITS and bits < PATH_BITS[path]
    if np.isfinite(sl) and np.isfinite(sw):
        sm = f"SM throughput {sl:.0f}% vs {w}'s {sw:.0f}%"
        if sl > sw:
            parts.append(sm + (f": the extra issue work points at the in-kernel unpack of its {bits:g}-bit weights to "
                               f"{path.upper()}" if unpack else ": extra issue work"))
        else:
            parts.append(sm + f": it issues no more than {w}, so stalls (latency)"
                         + (f", not the extra instructions of unpacking its {bits:g}-bit weights," if unpack else "")
                         + " hold it back")
    elif unpack:
        parts.append(f"its {bits:g}-bit weights are unpacked to {path.upper()} in the kernel")
    return "; ".join(parts)


def headline(d: Decision, wr: pd.Series, lr: pd.Series) -> str:
    """The main why of the pair in full: did the format the roofline favours win, and if not, why not."""
    from moeprof.analysis import verdict as v  # the Decision kinds (verdict.py imports this module)

    w, l = d.winner, d.loser
    if d.kind == v.NO_ROOFLINE:
        return "Why: n/a (no roofline for the expert GEMMs at this point: no cost model or no GEMM timings)."
    if d.kind == v.OUTSIDE_GEMMS:
        return (f"Why: the expert GEMMs are not the difference ({l} {fmt_time(d.gemm_loser_ns)} vs {w} "
                f"{fmt_time(d.gemm_winner_ns)}): {l} spends {fmt_time(d.outside_extra_ns)} more outside them.")
    bl = d.loser_bound
    if d.kind == v.LOSER_LOWER_ROOF:  # say what kept the loser from its lower roofline
        moves = (f"{l} moves {d.bytes_ratio:.2f}x the {d.bytes_source} of {w}" if np.isfinite(d.bytes_ratio)
                 else f"{l} has the lower roofline")
        head = (f"Why: {moves} (roofline bound {fmt_time(d.roof_loser_ns)} vs {fmt_time(d.roof_winner_ns)}) but its "
                f"expert GEMMs reach only {_pct_busy(d.dram_pct_loser)} of DRAM peak vs {w}'s {_pct_busy(d.dram_pct_winner)}")
        if bl == "latency/issue":
            return head + f": they are latency/issue-bound, not memory-bound ({_latency_detail(w, l, wr, lr)})."
        if bl == "memory":
            return head + f": they are memory-bound yet reach only {_pct(d.roofline_pct_loser)} of their roofline."
        if bl == "compute":
            return head + f": they are compute-bound ({_tensor_busy_txt(lr)}), not limited by the bytes they move."
        return head + " (measured bound n/a: no ncu counters)."
    if d.winner_model_bound == "compute":
        pw, pl = d.winner_path, d.loser_path
        basis = (f"compute-bound, {pw.upper()} MMA peak {d.peak_ratio:.1f}x the {pl.upper()} peak"
                 if pw and pl and pw != pl else "compute-bound")
    elif d.winner_model_bound == "memory" and np.isfinite(d.bytes_ratio):
        basis = f"memory-bound, {l} moves {d.bytes_ratio:.2f}x the {d.bytes_source}"
    else:
        basis = "model bound n/a"
    txt = (f"Why: {w} has the lower roofline bound ({fmt_time(d.roof_winner_ns)} vs {fmt_time(d.roof_loser_ns)} for "
           f"{l}; {basis}) and its expert GEMMs reach {_pct(d.roofline_pct_winner)} of it vs "
           f"{_pct(d.roofline_pct_loser)} for {l}")
    if bl == "latency/issue":
        txt += (f"; {l}'s expert GEMMs are latency/issue-bound (DRAM {_pct_busy(d.dram_pct_loser)}; "
                f"{_latency_detail(w, l, wr, lr)})")
    return txt + "."


def deciding_reason(d: Decision, lr: pd.Series) -> str:
    """The main why in a few words, for one row of the per-batch table (the full sentence: headline)."""
    from moeprof.analysis import verdict as v

    w, l = d.winner, d.loser
    src = "DRAM bytes" if d.bytes_source == "DRAM bytes" else "weight bytes (model)"
    if d.kind == v.NO_ROOFLINE:
        return "n/a (no roofline for the expert GEMMs)"
    if d.kind == v.OUTSIDE_GEMMS:
        return f"not the GEMMs: {l} spends {fmt_time(d.outside_extra_ns)} more outside them"
    if d.kind == v.LOSER_LOWER_ROOF:
        less = f"despite {d.bytes_ratio:.2f}x the {src}" if np.isfinite(d.bytes_ratio) else "despite its lower roofline"
        dram = f"{_pct_busy(d.dram_pct_loser)} of DRAM peak ({w} {_pct_busy(d.dram_pct_winner)})"
        if d.loser_bound == "latency/issue":
            return f"{l} latency/issue-bound at {dram} {less}"
        if d.loser_bound == "memory":
            return f"{l} reaches only {_pct(d.roofline_pct_loser)} of its roofline, {dram}, {less}"
        if d.loser_bound == "compute":
            return f"{l} compute-bound ({_tensor_busy_txt(lr)}) {less}"
        return f"{l} far from its roofline {less} (measured bound n/a)"
    if d.winner_model_bound == "compute" and d.winner_path and d.loser_path and d.winner_path != d.loser_path:
        return (f"compute-bound roofline: {w}'s {d.winner_path.upper()} MMA peak is {d.peak_ratio:.1f}x "
                f"{l}'s {d.loser_path.upper()}")
    if d.winner_model_bound == "memory" and np.isfinite(d.bytes_ratio):
        return f"memory-bound roofline: {l} moves {d.bytes_ratio:.2f}x the {src}"
    return f"{w} has the lower roofline ({fmt_time(d.roof_winner_ns)} vs {fmt_time(d.roof_loser_ns)})"


def comparison(batch: int, w: str, l: str, speedup: float, wr: pd.Series, lr: pd.Series, n_w: int, n_l: int,
               p: float | None, significant: bool | None, alpha: float) -> str:
    """The first reason: who is faster by how much, with the test behind it."""
    head = (f"At batch {batch}, {w} is {speedup:.2f}x faster than {l}: {fmt_time(wr['layer_time_median_ns'])} "
            f"vs {fmt_time(lr['layer_time_median_ns'])} per layer call (median of {n_w} and {n_l}")
    if p is None:
        return head + "; too few repeats for a significance test)."
    return head + f"; Mann-Whitney p={p:.2g}, {'significant' if significant else 'NOT significant'} at {alpha})."


# share of a point's NVML samples under a power reason from which the card counts as at its power limit
POWER_LIMITED_FRACTION = 0.5


def clock_reason(w: str, l: str, wr: pd.Series, lr: pd.Series) -> str | None:
    """What NVML saw while each format was timed (SM clock, power, power capping); None when neither
    point has it (captures made before moeprof recorded it, or NVML not readable)."""
    def one(fmt: str, r: pd.Series) -> tuple[str, bool] | None:
        clk, cap = get(r, "sm_clock_median_mhz"), get(r, "power_capped_fraction")
        if not np.isfinite(clk):
            return None
        watts, low, hot = get(r, "power_median_w"), get(r, "sm_clock_min_mhz"), get(r, "thermal_slowdown_fraction")
        w_txt = f", {watts:.0f} W" if np.isfinite(watts) else ""
        low_txt = f", min {low:.0f} MHz" if np.isfinite(low) and low < clk else ""
        hot_txt = f"; thermal slowdown in {hot * 100:.0f}% of samples" if np.isfinite(hot) and hot > 0 else ""
        limited = np.isfinite(cap) and cap >= POWER_LIMITED_FRACTION
        if limited:
            txt = (f"{fmt} ran the card at its power limit (power capping in {cap * 100:.0f}% of samples{w_txt}; "
                   f"SM clock median {clk:.0f} MHz{low_txt}{hot_txt})")
        else:
            cap_txt = (f"power-capped in {cap * 100:.0f}% of samples" if np.isfinite(cap) and cap > 0
                       else "not power-capped" if np.isfinite(cap) else "power capping n/a")
            txt = f"{fmt}: SM clock median {clk:.0f} MHz{low_txt}{w_txt}, {cap_txt}{hot_txt}"
        return txt, limited
    a, b = one(w, wr), one(l, lr)
    if a is None and b is None:
        return None
    parts = [x[0] if x else f"{fmt}: not recorded" for fmt, x in ((w, a), (l, b))]
    limited = [fmt for fmt, x in ((w, a), (l, b)) if x and x[1]]
    whose = f"{limited[0]}'s time is" if len(limited) == 1 else "both formats' times are"
    tail = (f": {whose} partly a statement about the card's power budget (a kernel bound by instruction "
            f"issue slows with the clock)" if limited else "")
    return "Clocks while timed (NVML): " + "; ".join(parts) + tail + "."


def _batch_runs(batches: list[int], hit: set[int]) -> str:
    """The batches in `hit` as runs over the measured sweep `batches` ("64–16384" where every batch the
    format measured from 64 to 16384 is in `hit`), so that a note stays one line per format."""
    runs: list[list[int]] = []
    prev_hit = False
    for b in batches:
        if b in hit:
            if prev_hit:
                runs[-1].append(b)
            else:
                runs.append([b])
        prev_hit = b in hit
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}–{r[-1]}" for r in runs)


def power_note(layer: pd.DataFrame, max_clock_mhz: float | None) -> str | None:
    """One line naming the points timed with the card at its power limit (NVML columns); None if none."""
    if layer.empty or "power_capped_fraction" not in layer:
        return None
    capped = layer["power_capped_fraction"].to_numpy(dtype=float) >= POWER_LIMITED_FRACTION
    hit = layer[capped]
    if hit.empty:
        return None
    per_fmt = []
    for fmt, g in layer.groupby("format", sort=True):
        in_hit = {int(b) for b in hit.loc[hit["format"] == fmt, "batch"]}
        if in_hit:
            per_fmt.append(f"{fmt} at {_batch_runs(sorted(int(b) for b in g['batch'].unique()), in_hit)}")
    clk = hit["sm_clock_median_mhz"].to_numpy(dtype=float)
    clk = clk[np.isfinite(clk)]
    clk_txt = ""
    if len(clk):
        lo, hi = clk.min(), clk.max()
        clk_txt = f", SM clock median {lo:.0f}" if lo == hi else f", SM clock median {lo:.0f}-{hi:.0f}"
        clk_txt += f" of {max_clock_mhz:.0f} MHz" if max_clock_mhz and np.isfinite(max_clock_mhz) else " MHz"
    return (f"power limit: these points were timed on a power-capped card (NVML capping in >= "
            f"{POWER_LIMITED_FRACTION * 100:.0f}% of samples{clk_txt}): {'; '.join(per_fmt)}. "
            f"--explain gives each point's clock.")


def fastest_overall(fastest: str, winner: str, n_formats: int, margin: float, next_fastest: str,
                    missing_pair: tuple[str, str] | None) -> str:
    """Which of all the formats measured at this batch is fastest (the pair may not include it)."""
    overall = (f"{fastest} is also the fastest of the {n_formats} formats measured here" if fastest == winner
               else f"Fastest of the {n_formats} formats measured here: {fastest}")
    return (overall + f" ({margin:.2f}x over {next_fastest}, the next fastest)"
            + (f"; {' vs '.join(missing_pair)} were not both measured at this batch" if missing_pair else "") + ".")


def heading(v) -> str:
    """One line per batch: the pair's winner, and the fastest of all formats where that differs."""
    head = f"batch {v.batch}: {v.winner} {v.speedup:.2f}x faster than {v.runner_up}"
    if v.fastest and v.fastest != v.winner:
        head += f"; fastest overall: {v.fastest} ({v.fastest_margin:.2f}x over {v.next_fastest})"
    elif v.fastest and len(v.times_ns) > 2:
        head += f"; also fastest overall ({v.fastest_margin:.2f}x over {v.next_fastest})"
    return head


# ------------------------------------------------------------------------------------------------
# the short answer

def span(first: int, last: int) -> str:
    return f"batch {first}" if first == last else f"batch {first}–{last}"


def _needs(r: pd.Series) -> str:
    tp = r.get("min_tp_to_fit")
    return f"needs tp≥{int(tp)}" if tp is not None and present(tp) else "no tensor-parallel split up to tp=64 fits"


def memory_answer(m: pd.DataFrame, pair: tuple[str, str], gpu_label: str) -> str:
    """The memory side of the answer: a format that does not fit decides more than any speedup."""
    a, b = pair
    ra, rb = m.loc[a], m.loc[b]
    tp = int(ra.get("tp", 1) or 1) if present(ra.get("tp", 1)) else 1
    where = f"one {gpu_label}" if tp == 1 else f"{gpu_label} at tp={tp}"
    fits = {a: bool(ra["fits"]), b: bool(rb["fits"])}
    if fits[a] != fits[b]:
        no, yes = (a, b) if not fits[a] else (b, a)
        rn, ry = m.loc[no], m.loc[yes]
        return (f"But {no} weights ({fmt_bytes(rn['weight_bytes_per_gpu'])}) do not fit {where} ({_needs(rn)}), "
                f"while {yes} fits with {fmt_bytes(ry['kv_free_bytes_per_gpu'])} left for the KV cache")
    if not fits[a]:
        return (f"Neither fits {where}: weights {fmt_bytes(ra['weight_bytes_per_gpu'])} ({a}, {_needs(ra)}) and "
                f"{fmt_bytes(rb['weight_bytes_per_gpu'])} ({b}, {_needs(rb)})")
    smaller = min(pair, key=lambda f: m.loc[f, "weight_bytes_per_gpu"])
    other = b if smaller == a else a
    gain = m.loc[smaller, "kv_free_bytes_per_gpu"] - m.loc[other, "kv_free_bytes_per_gpu"]
    return f"{smaller} leaves {fmt_bytes(gain)} more HBM per GPU for the KV cache"


def crossover_words(pair: tuple[str, str], xs: list[float]) -> str:
    """Measured crossovers, each named with its pair: 'fp8/mxfp4 crossover ~825'."""
    if not xs:
        return ""
    return f"{pair[0]}/{pair[1]} crossover{'s' if len(xs) > 1 else ''} ~" + ", ~".join(f"{x:.0f}" for x in xs)


def crossover_line(pair: tuple[str, str], crossings: list, xp: float | None, xp_src: str, predicted) -> str:
    """The measured crossovers of the pair (bracketing batches, estimate, method), then the model's."""
    a, b = pair
    head = f"Measured {a}/{b} crossover{'s' if len(crossings) > 1 else ''}: "
    measured = "; ".join(c.describe() for c in crossings) if crossings else "none within the measured batches"
    if predicted is not None:
        model = f"predicted ({xp_src}): {predicted.describe()}"
    else:
        model = "predicted: " + (f"batch ~{xp:.0f} ({xp_src})" if xp else xp_src)
    return head + measured + "; " + model + "."


def summary_lines(pair: tuple[str, str], wins: dict[str, list[tuple[int, float]]], crossings: list,
                  xp: float | None, xp_src: str, predicted, mem: pd.DataFrame | None, memory_note: str | None,
                  gpu_label: str, untimed: list[str] = ()) -> list[str]:
    """Per format the batches it wins, the crossover (measured and predicted), the memory effect."""
    a, b = pair
    lines = []
    if untimed:
        lines.append(f"No layer times for {', '.join(untimed)}: its rows were missing or dropped as unsound.")
    for f in pair:
        if wins[f]:
            lines.append(f"{f} is faster at batch " + ", ".join(f"{bt} ({s:.2f}x)" for bt, s in wins[f]) + ".")
    lines.append(crossover_line(pair, crossings, xp, xp_src, predicted))
    if mem is not None:
        ma, mb = mem.loc[a], mem.loc[b]

        def kv(r: pd.Series) -> str:
            return fmt_bytes(r["kv_free_bytes_per_gpu"]) if r["fits"] else f"none (weights do not fit; {_needs(r)})"
        lines.append(f"Memory on {gpu_label}: weights {fmt_bytes(ma['weight_bytes_per_gpu'])} ({a}) vs "
                     f"{fmt_bytes(mb['weight_bytes_per_gpu'])} ({b}) per GPU; KV-cache room "
                     f"{kv(ma)} vs {kv(mb)} (after a {ma['reserve_fraction'] * 100:.0f}% runtime reserve).")
    else:
        lines.append(f"Memory effect n/a ({memory_note or 'no cost model for these formats'}).")
    return lines


def speed_answer(pair: tuple[str, str], wins: dict[str, list[tuple[int, float]]],
                 runs: list[tuple[str, int, int]], xs: list[float], ties: list[int], near_tie: float,
                 untimed: list[str] = ()) -> str:
    """Who wins which batch range, the crossover named with its pair, and near-ties."""
    a, b = pair
    if untimed:
        return (f"n/a: {' and '.join(untimed)} {'has' if len(untimed) == 1 else 'have'} no sound layer times "
                f"in this capture (see the dropped rows), so no {a} vs {b} verdict")
    if not wins[a] and not wins[b]:
        return f"n/a ({a} and {b} share no measured batch)"
    if not wins[b] or not wins[a]:
        best = a if wins[a] else b
        return f"{best} is faster at every measured batch ({', '.join(str(x) for x, _ in wins[best])})"
    parts = []
    for f in sorted(pair, key=lambda f: min(bt for bt, _ in wins[f])):  # who wins the smallest batch first
        spans = [span(lo, hi) for g, lo, hi in runs if g == f]
        parts.append(f"{f} at " + " and ".join(spans))
    text = "; ".join(parts)
    if xs:
        text += f" ({crossover_words(pair, xs)})"
    if ties:
        text += f"; within {100 * (near_tie - 1):.0f}% of each other at batch " + ", ".join(str(t) for t in ties)
    return text


def answer(pair: tuple[str, str], wins: dict[str, list[tuple[int, float]]], runs: list[tuple[str, int, int]],
           xs: list[float], ties: list[int], near_tie: float, mem: pd.DataFrame | None, gpu_label: str,
           untimed: list[str] = ()) -> str:
    """The short answer: speed by batch range, then the memory effect."""
    text = speed_answer(pair, wins, runs, xs, ties, near_tie, untimed)
    if mem is None:
        return text + "."
    m = memory_answer(mem, pair, gpu_label)
    return text + (". " + m if m.startswith(("But", "Neither")) else "; " + m) + "."
