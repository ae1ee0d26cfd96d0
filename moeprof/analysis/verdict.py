"""Per batch size: which format is faster, by how much, and why, in sentences built from the numbers.

Every reason quotes the measured or modelled numbers it rests on; a number that is missing is
written "n/a (reason)". Nothing here is canned text independent of the data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from moeprof.analysis.classify import GEMM_ROLES
from moeprof.analysis.metrics import (BORDERLINE, BOUND_MARGIN_PCT, BUSY_PCT, MEASURED_PATHS, PATH_NONE,
                                      PATH_NOT_COLLECTED, PATH_UNCOUNTED, bound_class)
from moeprof.analysis.stats import mann_whitney
from moeprof.roofline import crossover

ALPHA = 0.05


@dataclass
class Verdict:
    """One batch size. winner/runner_up/speedup/p_value compare the pair asked about (e.g. fp8 vs
    mxfp4; the two fastest formats where the pair was not both measured); fastest/next_fastest name
    the fastest of all formats measured at that batch."""
    batch: int
    winner: str
    runner_up: str | None
    speedup: float                       # runner-up time / winner time
    p_value: float | None
    significant: bool | None             # None: too few repeats to test
    times_ns: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    fastest: str = ""
    fastest_margin: float = math.nan     # next-fastest time / fastest time
    next_fastest: str | None = None
    pair: list[str] | None = None        # [winner, runner_up] when they are the pair asked about
    headline: str = ""                   # the main why (also in reasons)

    def as_record(self) -> dict:
        return asdict(self)


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


def _ok(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x)) and x is not pd.NA and x != ""


def _get(row: pd.Series | None, col: str, default=np.nan):
    if row is None or col not in row.index:
        return default
    v = row[col]
    return default if v is pd.NA or v is None else v


# ------------------------------------------------------------------------------------------------
# reasons

_PATH_BITS = {"fp4": 4, "fp8": 8, "fp16": 16, "bf16": 16}


def _pct_busy(x: float) -> str:
    """A percentage set against the BUSY_PCT mark: one decimal near the mark, so 59.7% never reads 60%."""
    if not np.isfinite(x):
        return "n/a"
    return f"{x:.1f}%" if abs(x - BUSY_PCT) < 1.0 else f"{x:.0f}%"


def _peak_path(r: pd.Series) -> tuple[str, bool]:
    """(MMA path whose peak the roofline uses, whether it was measured)."""
    path, model = _get(r, "tensor_path", ""), _get(r, "mma_path_model", "")
    if path in MEASURED_PATHS:
        return str(path), True
    return (str(model) if _ok(model) else ""), False


def _peak_txt(r: pd.Series) -> str:
    path, measured = _peak_path(r)
    if not path:
        return "the MMA peak (path unknown)"
    return f"the {path.upper()} MMA peak" + ("" if measured else " (the format's expected path; measured path unknown)")


def _tensor_busy_txt(r: pd.Series) -> str:
    busy, src = _get(r, "tensor_busy_pct"), _get(r, "tensor_busy_source", "")
    if src == "tensor pipe active (ncu)":
        return f"tensor pipe {_pct_busy(busy)} active"
    return f"{_pct_busy(busy)} of {_peak_txt(r)}"


def _dram_txt(r: pd.Series, short: bool = False) -> str:
    src = _get(r, "dram_bw_source", "")
    extra = f" from {src}" if _ok(src) and src != "ncu counters" else ""
    return f"{_pct_busy(_get(r, 'dram_bw_pct_of_peak'))} of {'' if short else 'DRAM '}peak{extra}"


def _bound_reason(fmt: str, lr: pd.Series, why_no_counters: str) -> str:
    bound = _get(lr, "bound_measured", "")
    model = _get(lr, "bound_model", "")
    intensity = _get(lr, "intensity_flop_per_byte")
    model_txt = (f"the model predicts {model}-bound at {intensity:.0f} FLOP/byte" if _ok(model) and np.isfinite(intensity)
                 else "model prediction n/a (no cost model for this point)")
    if not _ok(bound):
        return f"{fmt}: measured bound n/a ({why_no_counters}); {model_txt}."
    sm = _get(lr, "sm_throughput_pct")
    sm_txt = f", SM throughput {sm:.0f}%" if np.isfinite(sm) else ""
    edge = (f", borderline: within {BOUND_MARGIN_PCT:g} points of the {BUSY_PCT:.0f}% mark"
            if str(bound).endswith(BORDERLINE) else "")
    bound = bound_class(bound)
    if bound == "memory":
        what = f"memory-bound as measured ({_dram_txt(lr)}; {_tensor_busy_txt(lr)}{edge})"
    elif bound == "compute":
        what = (f"compute-bound as measured ({_tensor_busy_txt(lr)}, {_pct(_get(lr, 'tensor_pct_of_peak'))} of "
                f"{_peak_txt(lr)} in useful FLOPs; {_dram_txt(lr)}{edge})")
    else:
        what = (f"latency/issue-bound as measured: neither DRAM ({_dram_txt(lr, short=True)}) nor the tensor cores "
                f"({_tensor_busy_txt(lr)}) reach {BUSY_PCT:.0f}%{sm_txt}")
    return f"{fmt}: expert GEMMs are {what}; {model_txt}."


def _weights(r: pd.Series) -> float:
    seen = str(_get(r, "gemms_measured", "gemm1,gemm2")).split(",")
    return float(sum(_get(r, f"{g}_weight_bytes") for g in GEMM_ROLES if g in seen)) if seen != [""] else np.nan


def _bytes_reason(w: str, l: str, wr: pd.Series, lr: pd.Series) -> str:
    mw, ml = _get(wr, "dram_bytes"), _get(lr, "dram_bytes")
    aw, al = _weights(wr), _weights(lr)
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


def _path_reason(fmt: str, lr: pd.Series) -> str:
    path = _get(lr, "tensor_path", "")
    model = _get(lr, "mma_path_model", "")
    exp = f"; the format's expected path is {str(model).upper()}" if _ok(model) else ""
    if not _ok(path):
        return f"{fmt}: tensor-core path n/a (no ncu tensor-op counters){exp}."
    pipe, inst = _get(lr, "tensor_pipe_active_pct"), _get(lr, "tensor_inst_executed")
    if path == PATH_NOT_COLLECTED:
        fp16_known = np.isfinite(_get(lr, "tensor_ops_fp16"))
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
    ops = {"fp8": _get(lr, "tensor_ops_fp8", 0.0), "bf16": _get(lr, "tensor_ops_bf16", 0.0),
           "fp16": _get(lr, "tensor_ops_fp16", 0.0)}
    total = np.nansum(list(ops.values()))
    main = path if path in ops else max(ops, key=lambda k: np.nan_to_num(ops[k]))
    share = ops[main] / total * 100 if total else np.nan
    txt = (f"{fmt}: expert GEMMs ran on the {str(path).upper()} MMA path ({_pct(share)} of tensor ops"
           f"{' on ' + main.upper() if path == 'mixed' else ''}; tensor pipe active {_pct(pipe)} of the time)")
    if _ok(model) and model != path:
        txt += f", not the {str(model).upper()} path the format allows"
    return txt + "."


def _efficiency_reason(fmt: str, lr: pd.Series) -> str:
    pct, troof, t = _get(lr, "pct_of_roofline"), _get(lr, "t_roofline_ns"), _get(lr, "gemm_time_median_ns")
    if not np.isfinite(pct):
        return f"{fmt}: efficiency against its roofline n/a (no analytic FLOPs/bytes for this point)."
    tf = _get(lr, "useful_tflop_per_s")
    built = _get(lr, "pct_of_as_built")
    built_txt = f"; {built:.0f}% of the bound of the kernels as built" if np.isfinite(built) else ""
    return (f"{fmt}: expert GEMMs reach {pct:.0f}% of their roofline ({fmt_time(troof)} ideal lower bound vs "
            f"{fmt_time(t)} measured, {tf:.0f} useful TFLOP/s{built_txt}).")


def _outside_reason(w: str, l: str, wr: pd.Series, lr: pd.Series, roles: pd.DataFrame, batch: int) -> str:
    def one(fmt: str, r: pd.Series) -> str:
        ns, pct = _get(r, "outside_gemm_ns"), _get(r, "outside_gemm_pct")
        if not np.isfinite(ns):
            return f"{fmt} n/a (no kernel timings)"
        rr = roles[(roles["format"] == fmt) & (roles["batch"] == batch) & ~roles["role"].isin(GEMM_ROLES)]
        top = rr.sort_values("time_median_ns", ascending=False).head(1)
        top_txt = (f", mostly {top['role'].iloc[0]} {fmt_time(top['time_median_ns'].iloc[0])}"
                   if len(top) and top["time_median_ns"].iloc[0] > 0 else "")
        return f"{fmt} {fmt_time(ns)} ({pct:.0f}% of kernel time{top_txt})"
    return f"Time outside the expert GEMMs: {one(w, wr)}; {one(l, lr)}."


def _padding_reason(fmt: str, lr: pd.Series) -> str:
    pad, ex, use = _get(lr, "padding_pct"), _get(lr, "tensor_ops"), _get(lr, "useful_flops")
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
    sl, sw = _get(lr, "sm_throughput_pct"), _get(wr, "sm_throughput_pct")
    bits, path = _get(lr, "weight_bits"), _peak_path(lr)[0]
    unpack = np.isfinite(bits) and path in _PATH_BITS and bits < _PATH_BITS[path]
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


def _headline(w: str, l: str, wr: pd.Series, lr: pd.Series) -> str:
    """The main why of the pair, from the numbers: did the format the roofline favours win, and if not, why not."""
    tw, tl = _get(wr, "t_roofline_ns"), _get(lr, "t_roofline_ns")
    if not (np.isfinite(tw) and np.isfinite(tl)):
        return "Why: n/a (no roofline for the expert GEMMs at this point: no cost model or no GEMM timings)."
    gw, gl = _get(wr, "gemm_time_median_ns"), _get(lr, "gemm_time_median_ns")
    ow, ol = _get(wr, "outside_gemm_ns"), _get(lr, "outside_gemm_ns")
    if all(np.isfinite([gw, gl, ow, ol])) and (ol - ow) > (gl - gw) and (ol - ow) > 0:
        return (f"Why: the expert GEMMs are not the difference ({l} {fmt_time(gl)} vs {w} {fmt_time(gw)}): {l} spends "
                f"{fmt_time(ol - ow)} more outside them.")
    mw, ml = _get(wr, "dram_bytes"), _get(lr, "dram_bytes")
    if np.isfinite(mw) and np.isfinite(ml) and mw > 0:
        bytes_txt, src = ml / mw, "DRAM bytes"
    else:
        aw, al = _weights(wr), _weights(lr)
        bytes_txt, src = (al / aw if aw > 0 else np.nan), "expert weight bytes (model)"
    dw, dl = _get(wr, "dram_bw_pct_of_peak"), _get(lr, "dram_bw_pct_of_peak")
    bl = bound_class(_get(lr, "bound_measured", ""))
    if tl < tw:  # the loser had the lower roofline: say what kept it from it
        moves = (f"{l} moves {bytes_txt:.2f}x the {src} of {w}" if np.isfinite(bytes_txt)
                 else f"{l} has the lower roofline")
        head = (f"Why: {moves} (roofline bound {fmt_time(tl)} vs {fmt_time(tw)}) but its expert GEMMs reach only "
                f"{_pct_busy(dl)} of DRAM peak vs {w}'s {_pct_busy(dw)}")
        if bl == "latency/issue":
            return head + f": they are latency/issue-bound, not memory-bound ({_latency_detail(w, l, wr, lr)})."
        if bl == "memory":
            return head + f": they are memory-bound yet reach only {_pct(_get(lr, 'pct_of_roofline'))} of their roofline."
        if bl == "compute":
            return head + f": they are compute-bound ({_tensor_busy_txt(lr)}), not limited by the bytes they move."
        return head + " (measured bound n/a: no ncu counters)."
    # The winner had the lower roofline too.
    model = _get(wr, "bound_model", "")
    if model == "compute":
        pw, pl = _peak_path(wr)[0], _peak_path(lr)[0]
        basis = (f"compute-bound, {pw.upper()} MMA peak {_get(wr, 'peak_tensor_flop_per_s') / _get(lr, 'peak_tensor_flop_per_s'):.1f}x "
                 f"the {pl.upper()} peak" if pw and pl and pw != pl else "compute-bound")
    elif model == "memory" and np.isfinite(bytes_txt):
        basis = f"memory-bound, {l} moves {bytes_txt:.2f}x the {src}"
    else:
        basis = "model bound n/a"
    txt = (f"Why: {w} has the lower roofline bound ({fmt_time(tw)} vs {fmt_time(tl)} for {l}; {basis}) and its expert "
           f"GEMMs reach {_pct(_get(wr, 'pct_of_roofline'))} of it vs {_pct(_get(lr, 'pct_of_roofline'))} for {l}")
    if bl == "latency/issue":
        txt += f"; {l}'s expert GEMMs are latency/issue-bound (DRAM {_pct_busy(dl)}; {_latency_detail(w, l, wr, lr)})"
    return txt + "."


# ------------------------------------------------------------------------------------------------

def verdicts(layer: pd.DataFrame, roles: pd.DataFrame, samples: pd.DataFrame, formats: list[str] | None = None,
             why_no_counters: str = "no ncu counters in this capture",
             pair: tuple[str, str] | None = None) -> list[Verdict]:
    """One verdict per batch size measured in at least two of `formats` (default: all).

    Each states the fastest of all formats at that batch, then compares `pair` (the question asked,
    e.g. fp8 vs mxfp4) with its reasons; where the pair was not both measured, the two fastest.
    """
    out: list[Verdict] = []
    if layer.empty:
        return out
    lay = layer if formats is None else layer[layer["format"].isin(formats)]
    for batch, g in lay.groupby("batch", sort=True):
        g = g[g["layer_time_median_ns"].notna()].sort_values("layer_time_median_ns")
        if len(g) < 2:
            continue
        fastest, nxt = str(g["format"].iloc[0]), str(g["format"].iloc[1])
        margin = float(g["layer_time_median_ns"].iloc[1] / g["layer_time_median_ns"].iloc[0])
        gp = g[g["format"].isin(pair)] if pair else g.iloc[:0]
        is_pair = len(gp) == 2
        wr, lr = (gp.iloc[0], gp.iloc[1]) if is_pair else (g.iloc[0], g.iloc[1])
        w, l = str(wr["format"]), str(lr["format"])
        speedup = float(lr["layer_time_median_ns"] / wr["layer_time_median_ns"])
        sw = samples.loc[(samples["format"] == w) & (samples["batch"] == batch), "time_ns"].to_numpy(float)
        sl = samples.loc[(samples["format"] == l) & (samples["batch"] == batch), "time_ns"].to_numpy(float)
        p = sig = None
        sw, sl = sw[np.isfinite(sw)], sl[np.isfinite(sl)]
        if len(sw) >= 2 and len(sl) >= 2:
            p = mann_whitney(sw, sl).p_value
            sig = bool(p < ALPHA)
        head = (f"At batch {batch}, {w} is {speedup:.2f}x faster than {l}: {fmt_time(wr['layer_time_median_ns'])} "
                f"vs {fmt_time(lr['layer_time_median_ns'])} per layer call (median of {len(sw)} and {len(sl)}")
        if p is None:
            head += "; too few repeats for a significance test)."
        else:
            head += f"; Mann-Whitney p={p:.2g}, {'significant' if sig else 'NOT significant'} at {ALPHA})."
        reasons = [head]
        if len(g) > 2 or not is_pair and pair:
            overall = (f"{fastest} is also the fastest of the {len(g)} formats measured here" if fastest == w
                       else f"Fastest of the {len(g)} formats measured here: {fastest}")
            reasons.append(overall + f" ({margin:.2f}x over {nxt}, the next fastest)"
                           + ("" if is_pair or not pair else f"; {' vs '.join(pair)} were not both measured at this batch")
                           + ".")
        headline = _headline(w, l, wr, lr)
        reasons += [headline,
                    _bound_reason(w, wr, why_no_counters), _bound_reason(l, lr, why_no_counters),
                    _bytes_reason(w, l, wr, lr),
                    _path_reason(w, wr), _path_reason(l, lr),
                    _efficiency_reason(w, wr), _efficiency_reason(l, lr),
                    _outside_reason(w, l, wr, lr, roles, int(batch)),
                    _padding_reason(w, wr), _padding_reason(l, lr)]
        others = {str(r["format"]): float(r["layer_time_median_ns"]) for _, r in g.iterrows()}
        out.append(Verdict(int(batch), w, l, speedup, p, sig, others, reasons, fastest=fastest,
                           fastest_margin=margin, next_fastest=nxt, pair=[w, l] if is_pair else None,
                           headline=headline))
    return out


def pick_pair(formats: list[str], pair: tuple[str, str] | None = None) -> tuple[str, str] | None:
    """The two formats the summary answers about: the given pair, else FP8 vs an MXFP4 flavour."""
    if pair:
        return pair if all(f in formats for f in pair) else None
    fp8 = next((f for f in ("fp8", "fp8-block") if f in formats), None)
    fp4 = next((f for f in formats if f.startswith("mxfp4")), None)
    if fp8 and fp4:
        return fp8, fp4
    return (formats[0], formats[1]) if len(formats) >= 2 else None


def measured_crossovers(layer: pd.DataFrame, a: str, b: str) -> list[crossover.Crossover]:
    """Where the faster of a and b changes between measured batches (median layer times): the bracketing
    batches and a log-log estimate between them (moeprof.roofline.crossover)."""
    ok = layer[np.isfinite(layer["layer_time_median_ns"].astype(float)) & (layer["layer_time_median_ns"] > 0)]
    ta = ok[ok["format"] == a].set_index("batch")["layer_time_median_ns"]
    tb = ok[ok["format"] == b].set_index("batch")["layer_time_median_ns"]
    common = sorted(set(ta.index) & set(tb.index))
    if len(common) < 2:
        return []
    return crossover.find(common, [ta[x] for x in common], [tb[x] for x in common], a, b, basis="measured")


def measured_crossover(layer: pd.DataFrame, a: str, b: str) -> float | None:
    """The estimate of the first change of the faster of a and b (see measured_crossovers)."""
    found = measured_crossovers(layer, a, b)
    return found[0].estimate if found else None


# Below this speedup a win is reported as "about even" in the short answer (it can still be significant).
NEAR_TIE = 1.05


def _runs(wins: list[tuple[int, str, float]]) -> list[tuple[str, int, int]]:
    """Contiguous batch ranges won by the same format: [(format, first batch, last batch)]."""
    return [(fmt, bs[0], bs[-1]) for fmt, bs in crossover.winner_runs([(b, f) for b, f, _ in wins])]


def _span(first: int, last: int) -> str:
    return f"batch {first}" if first == last else f"batch {first}–{last}"


def _needs(r: pd.Series) -> str:
    tp = r.get("min_tp_to_fit")
    return f"needs tp≥{int(tp)}" if tp is not None and _ok(tp) else "no tensor-parallel split up to tp=64 fits"


def _memory_answer(m: pd.DataFrame, pair: tuple[str, str], gpu_label: str) -> str:
    """The memory side of the answer: a format that does not fit decides more than any speedup."""
    a, b = pair
    ra, rb = m.loc[a], m.loc[b]
    tp = int(ra.get("tp", 1) or 1) if _ok(ra.get("tp", 1)) else 1
    where = f"one {gpu_label}" if tp == 1 else f"{gpu_label} at tp={tp}"
    fits = {a: bool(ra["fits"]), b: bool(rb["fits"])}
    if fits[a] != fits[b]:
        no, yes = (a, b) if not fits[a] else (b, a)
        rn, ry = m.loc[no], m.loc[yes]
        return (f". But {no} weights ({fmt_bytes(rn['weight_bytes_per_gpu'])}) do not fit {where} ({_needs(rn)}), "
                f"while {yes} fits with {fmt_bytes(ry['kv_free_bytes_per_gpu'])} left for the KV cache")
    if not fits[a]:
        return (f". Neither fits {where}: weights {fmt_bytes(ra['weight_bytes_per_gpu'])} ({a}, {_needs(ra)}) and "
                f"{fmt_bytes(rb['weight_bytes_per_gpu'])} ({b}, {_needs(rb)})")
    smaller = min(pair, key=lambda f: m.loc[f, "weight_bytes_per_gpu"])
    other = b if smaller == a else a
    gain = m.loc[smaller, "kv_free_bytes_per_gpu"] - m.loc[other, "kv_free_bytes_per_gpu"]
    return f"; {smaller} leaves {fmt_bytes(gain)} more HBM per GPU for the KV cache"


def summary(layer: pd.DataFrame, vds: list[Verdict], pair: tuple[str, str] | None, predicted: tuple[float | None, str],
            memory: pd.DataFrame, memory_note: str | None, gpu_label: str,
            predicted_crossover: crossover.Crossover | None = None) -> dict:
    """The short answer to "FP8 or MXFP4 here?" with crossover and memory effect.

    `predicted` is (estimate, source) of the model's crossover; `predicted_crossover` its interval."""
    if pair is None:
        return {"pair": None, "answer": "n/a (fewer than two formats measured)", "lines": []}
    a, b = pair
    lines = []
    wins = {a: [], b: []}
    timed = layer[layer["format"].isin(pair) & np.isfinite(layer["layer_time_median_ns"].astype(float))]
    untimed = [f for f in pair if f not in set(timed["format"])]
    for _, g in timed.groupby("batch"):
        if len(g) == 2:
            g = g.sort_values("layer_time_median_ns")
            wins[str(g["format"].iloc[0])].append(
                (int(g["batch"].iloc[0]), float(g["layer_time_median_ns"].iloc[1] / g["layer_time_median_ns"].iloc[0])))
    for f in pair:
        if wins[f]:
            lines.append(f"{f} is faster at batch " + ", ".join(f"{bt} ({s:.2f}x)" for bt, s in wins[f]) + ".")
    crossings = measured_crossovers(layer, a, b)
    xs = [c.estimate for c in crossings]
    xm = xs[0] if xs else None
    xp, xp_src = predicted
    lines.append(("Measured crossovers: " if len(xs) > 1 else "Measured crossover: ")
                 + (", ".join(f"batch ~{x:.0f}" for x in xs) if xs else "none within the measured batches")
                 + "; predicted: " + (f"batch ~{xp:.0f} ({xp_src})" if xp else xp_src) + ".")
    if memory is not None and not memory.empty and set(pair) <= set(memory["format"]):
        m = memory.set_index("format")
        ma, mb = m.loc[a], m.loc[b]

        def kv(r: pd.Series) -> str:
            return fmt_bytes(r["kv_free_bytes_per_gpu"]) if r["fits"] else f"none (weights do not fit; {_needs(r)})"
        lines.append(f"Memory on {gpu_label}: weights {fmt_bytes(ma['weight_bytes_per_gpu'])} ({a}) vs "
                     f"{fmt_bytes(mb['weight_bytes_per_gpu'])} ({b}) per GPU; KV-cache room "
                     f"{kv(ma)} vs {kv(mb)} (after a {ma['reserve_fraction'] * 100:.0f}% runtime reserve).")
    else:
        lines.append(f"Memory effect n/a ({memory_note or 'no cost model for these formats'}).")
    if untimed:
        answer = (f"n/a: {' and '.join(untimed)} {'has' if len(untimed) == 1 else 'have'} no sound layer times "
                  f"in this capture (see the dropped rows), so no {a} vs {b} verdict")
        lines.insert(0, f"No layer times for {', '.join(untimed)}: its rows were missing or dropped as unsound.")
    elif not wins[a] and not wins[b]:
        answer = f"n/a ({a} and {b} share no measured batch)"
    elif not wins[b] or not wins[a]:
        best = a if wins[a] else b
        answer = f"{best} is faster at every measured batch ({', '.join(str(x) for x, _ in wins[best])})"
    else:
        ordered = sorted((bt, f, sp) for f in pair for bt, sp in wins[f])
        parts = []
        for f in sorted(pair, key=lambda f: min(bt for bt, _ in wins[f])):  # who wins the smallest batch first
            spans = [_span(lo, hi) for g, lo, hi in _runs(ordered) if g == f]
            parts.append(f"{f} at " + " and ".join(spans))
        answer = "; ".join(parts)
        if xs:
            answer += " (crossover" + ("s" if len(xs) > 1 else "") + " ~" + ", ~".join(f"{x:.0f}" for x in xs) + ")"
        ties = [bt for bt, _, sp in ordered if sp < NEAR_TIE]
        if ties:
            answer += (f"; within {100 * (NEAR_TIE - 1):.0f}% of each other at batch "
                       + ", ".join(str(t) for t in ties))
    if memory is not None and not memory.empty and set(pair) <= set(memory["format"]):
        answer += _memory_answer(memory.set_index("format"), pair, gpu_label)
    return {"pair": list(pair), "answer": answer + ".", "lines": lines,
            "measured_crossover_batch": xm, "measured_crossover_batches": xs, "predicted_crossover_batch": xp,
            "predicted_crossover_source": xp_src,
            # the same crossovers as intervals: bracketing batches, estimate and its method (roofline.crossover)
            "measured_crossovers": [c.as_record() for c in crossings],
            "predicted_crossover": predicted_crossover.as_record() if predicted_crossover else None}
