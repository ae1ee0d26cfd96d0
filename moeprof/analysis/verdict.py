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
from moeprof.analysis.expected import crossover_from_ratio
from moeprof.analysis.stats import mann_whitney

ALPHA = 0.05


@dataclass
class Verdict:
    batch: int
    winner: str
    runner_up: str | None
    speedup: float                       # runner-up time / winner time
    p_value: float | None
    significant: bool | None             # None: too few repeats to test
    times_ns: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

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


def _pct(x: float) -> str:
    return f"{x:.0f}%" if np.isfinite(x) else "n/a"


def _ok(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x)) and x is not pd.NA and x != ""


def _get(row: pd.Series | None, col: str, default=np.nan):
    if row is None or col not in row.index:
        return default
    v = row[col]
    return default if v is pd.NA or v is None else v


# ------------------------------------------------------------------------------------------------
# reasons

def _bound_reason(fmt: str, lr: pd.Series, why_no_counters: str) -> str:
    dram, tens = _get(lr, "dram_bw_pct_of_peak"), _get(lr, "tensor_pct_of_peak")
    path = _get(lr, "tensor_path", "") or _get(lr, "mma_path_model", "")
    model = _get(lr, "bound_model", "")
    intensity = _get(lr, "intensity_flop_per_byte")
    model_txt = (f"the model predicts {model}-bound at {intensity:.0f} FLOP/byte" if _ok(model) and np.isfinite(intensity)
                 else "model prediction n/a (no cost model for this point)")
    if not (np.isfinite(dram) and np.isfinite(tens)):
        return f"{fmt}: measured bound n/a ({why_no_counters}); {model_txt}."
    bound = "memory" if dram >= tens else "compute"
    src = _get(lr, "dram_bw_source", "")
    return (f"{fmt}: expert GEMMs are {bound}-bound as measured ({dram:.0f}% of DRAM peak"
            f"{' from ' + src if src and src != 'ncu counters' else ''}, {tens:.0f}% of the "
            f"{str(path).upper() or '?'} MMA peak); {model_txt}.")


def _bytes_reason(w: str, l: str, wr: pd.Series, lr: pd.Series) -> str:
    mw, ml = _get(wr, "dram_bytes"), _get(lr, "dram_bytes")
    def weights(r: pd.Series) -> float:
        seen = str(_get(r, "gemms_measured", "gemm1,gemm2")).split(",")
        return float(sum(_get(r, f"{g}_weight_bytes") for g in GEMM_ROLES if g in seen)) if seen != [""] else np.nan
    aw, al = weights(wr), weights(lr)
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
    if not _ok(path):
        exp = f"; the format's expected path is {str(model).upper()}" if _ok(model) else ""
        return f"{fmt}: tensor-core path n/a (no ncu tensor-op counters){exp}."
    if path == "none":
        return f"{fmt}: the expert GEMMs executed no tensor-core ops (SIMT or dequantize-and-FMA kernels)."
    ops_f8, ops_bf = _get(lr, "tensor_ops_fp8", 0.0), _get(lr, "tensor_ops_bf16", 0.0)
    total = np.nansum([ops_f8, ops_bf])
    share = (ops_f8 if path == "fp8" else ops_bf) / total * 100 if total else np.nan
    pipe = _get(lr, "tensor_pipe_active_pct")
    txt = (f"{fmt}: expert GEMMs ran on the {str(path).upper()} MMA path ({_pct(share)} of tensor ops; "
           f"tensor pipe active {_pct(pipe)} of the time)")
    if _ok(model) and model != path:
        txt += f", not the {str(model).upper()} path the format allows"
    return txt + "."


def _efficiency_reason(fmt: str, lr: pd.Series) -> str:
    pct, troof, t = _get(lr, "pct_of_roofline"), _get(lr, "t_roofline_ns"), _get(lr, "gemm_time_median_ns")
    if not np.isfinite(pct):
        return f"{fmt}: efficiency against its roofline n/a (no analytic FLOPs/bytes for this point)."
    tf = _get(lr, "useful_tflop_per_s")
    return (f"{fmt}: expert GEMMs reach {pct:.0f}% of their roofline ({fmt_time(troof)} lower bound vs "
            f"{fmt_time(t)} measured, {tf:.0f} useful TFLOP/s).")


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
    pad = _get(lr, "padding_pct")
    if not np.isfinite(pad):
        why = ("no ncu tensor-op counters" if not np.isfinite(_get(lr, "tensor_ops"))
               else "no analytic FLOPs for this point")
        return f"{fmt}: padding waste n/a ({why})."
    ex, use = _get(lr, "tensor_ops"), _get(lr, "useful_flops")
    if pad < 0.5:
        return f"{fmt}: no padding waste (executed tensor ops {ex:.3g} = useful FLOPs {use:.3g})."
    return (f"{fmt}: {pad:.1f}% of executed tensor ops are padding ({ex:.3g} executed vs {use:.3g} useful "
            f"FLOPs: tile remainders and block-aligned expert groups).")


# ------------------------------------------------------------------------------------------------

def verdicts(layer: pd.DataFrame, roles: pd.DataFrame, samples: pd.DataFrame, formats: list[str] | None = None,
             why_no_counters: str = "no ncu counters in this capture") -> list[Verdict]:
    """One verdict per batch size measured in at least two of `formats` (default: all)."""
    out: list[Verdict] = []
    if layer.empty:
        return out
    lay = layer if formats is None else layer[layer["format"].isin(formats)]
    for batch, g in lay.groupby("batch", sort=True):
        g = g[g["layer_time_median_ns"].notna()].sort_values("layer_time_median_ns")
        if len(g) < 2:
            continue
        wr, lr = g.iloc[0], g.iloc[1]
        w, l = str(wr["format"]), str(lr["format"])
        speedup = float(lr["layer_time_median_ns"] / wr["layer_time_median_ns"])
        sw = samples.loc[(samples["format"] == w) & (samples["batch"] == batch), "time_ns"].to_numpy(float)
        sl = samples.loc[(samples["format"] == l) & (samples["batch"] == batch), "time_ns"].to_numpy(float)
        p = sig = None
        if len(sw) >= 2 and len(sl) >= 2:
            p = mann_whitney(sw, sl).p_value
            sig = bool(p < ALPHA)
        head = (f"At batch {batch}, {w} is {speedup:.2f}x faster than {l}: {fmt_time(wr['layer_time_median_ns'])} "
                f"vs {fmt_time(lr['layer_time_median_ns'])} per layer call (median of {len(sw)} and {len(sl)}")
        if p is None:
            head += "; too few repeats for a significance test)."
        else:
            head += f"; Mann-Whitney p={p:.2g}, {'significant' if sig else 'NOT significant'} at {ALPHA})."
        reasons = [head,
                   _bound_reason(w, wr, why_no_counters), _bound_reason(l, lr, why_no_counters),
                   _bytes_reason(w, l, wr, lr),
                   _path_reason(w, wr), _path_reason(l, lr),
                   _efficiency_reason(w, wr), _efficiency_reason(l, lr),
                   _outside_reason(w, l, wr, lr, roles, int(batch)),
                   _padding_reason(w, wr), _padding_reason(l, lr)]
        others = {str(r["format"]): float(r["layer_time_median_ns"]) for _, r in g.iterrows()}
        out.append(Verdict(int(batch), w, l, speedup, p, sig, others, reasons))
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


def measured_crossover(layer: pd.DataFrame, a: str, b: str) -> float | None:
    """Batch where the faster of a and b changes, log-interpolated between measured batches."""
    ta = layer[layer["format"] == a].set_index("batch")["layer_time_median_ns"]
    tb = layer[layer["format"] == b].set_index("batch")["layer_time_median_ns"]
    common = sorted(set(ta.index) & set(tb.index))
    if len(common) < 2:
        return None
    return crossover_from_ratio(common, [ta[x] / tb[x] for x in common])


def summary(layer: pd.DataFrame, vds: list[Verdict], pair: tuple[str, str] | None, predicted: tuple[float | None, str],
            memory: pd.DataFrame, memory_note: str | None, gpu_label: str) -> dict:
    """The short answer to "FP8 or MXFP4 here?" with crossover and memory effect."""
    if pair is None:
        return {"pair": None, "answer": "n/a (fewer than two formats measured)", "lines": []}
    a, b = pair
    lines = []
    wins = {a: [], b: []}
    for _, g in layer[layer["format"].isin(pair)].groupby("batch"):
        if len(g) == 2:
            g = g.sort_values("layer_time_median_ns")
            wins[str(g["format"].iloc[0])].append(
                (int(g["batch"].iloc[0]), float(g["layer_time_median_ns"].iloc[1] / g["layer_time_median_ns"].iloc[0])))
    for f in pair:
        if wins[f]:
            lines.append(f"{f} is faster at batch " + ", ".join(f"{bt} ({s:.2f}x)" for bt, s in wins[f]) + ".")
    xm = measured_crossover(layer, a, b)
    xp, xp_src = predicted
    lines.append("Measured crossover: " + (f"batch ~{xm:.0f}" if xm else "none within the measured batches")
                 + "; predicted: " + (f"batch ~{xp:.0f} ({xp_src})" if xp else xp_src) + ".")
    if memory is not None and not memory.empty and set(pair) <= set(memory["format"]):
        m = memory.set_index("format")
        ma, mb = m.loc[a], m.loc[b]

        def kv(r: pd.Series) -> str:
            return fmt_bytes(r["kv_free_bytes_per_gpu"]) if r["fits"] else "none (weights do not fit)"
        lines.append(f"Memory on {gpu_label}: weights {fmt_bytes(ma['weight_bytes_per_gpu'])} ({a}) vs "
                     f"{fmt_bytes(mb['weight_bytes_per_gpu'])} ({b}) per GPU; KV-cache room "
                     f"{kv(ma)} vs {kv(mb)} (after a {ma['reserve_fraction'] * 100:.0f}% runtime reserve).")
    else:
        lines.append(f"Memory effect n/a ({memory_note or 'no cost model for these formats'}).")
    if not wins[a] and not wins[b]:
        answer = f"n/a ({a} and {b} share no measured batch)"
    elif not wins[b] or not wins[a]:
        best = a if wins[a] else b
        answer = f"{best} at every measured batch ({', '.join(str(x) for x, _ in wins[best])})"
    else:
        lo, hi = (a, b) if min(x for x, _ in wins[a]) < min(x for x, _ in wins[b]) else (b, a)
        answer = (f"{lo} up to batch {max(x for x, _ in wins[lo])}, {hi} from batch {min(x for x, _ in wins[hi])}"
                  + (f" (crossover ~{xm:.0f})" if xm else ""))
    if memory is not None and not memory.empty and set(pair) <= set(memory["format"]):
        m = memory.set_index("format")
        smaller = min(pair, key=lambda f: m.loc[f, "weight_bytes_per_gpu"])
        other = b if smaller == a else a
        gain = m.loc[smaller, "kv_free_bytes_per_gpu"] - max(m.loc[other, "kv_free_bytes_per_gpu"], 0.0)
        answer += f"; {smaller} leaves {fmt_bytes(gain)} more HBM per GPU for the KV cache"
    return {"pair": list(pair), "answer": answer + ".", "lines": lines,
            "measured_crossover_batch": xm, "predicted_crossover_batch": xp, "predicted_crossover_source": xp_src}
