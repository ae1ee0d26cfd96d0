"""Per batch size: which format is faster, by how much, and what decided it, as numbers.

The numbers are computed here (winner, speedup, significance, what decided the pair, who wins which
batch range, crossovers, memory); analysis/sentences.py puts them in words. Every reason quotes the
measured or modelled numbers it rests on; a number that is missing is written "n/a (reason)".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from moeprof.analysis import sentences
from moeprof.analysis.metrics import bound_class
from moeprof.analysis.rows import get, peak_path, weight_bytes
from moeprof.analysis.stats import mann_whitney
from moeprof.roofline import crossover

ALPHA = 0.05
# Below this speedup a win is reported as "about even" in the short answer (it can still be significant).
NEAR_TIE = 1.05

# What decided the pair at one batch (Decision.kind).
NO_ROOFLINE = "no roofline"                # no cost model or no GEMM timings: nothing to set the times against
OUTSIDE_GEMMS = "outside the GEMMs"        # the loser spends more outside the expert GEMMs than inside them
LOSER_LOWER_ROOF = "loser's lower roofline"  # the loser had the lower bound but its kernels stayed far from it
WINNER_LOWER_ROOF = "winner's lower roofline"  # the winner had the lower bound too


@dataclass(frozen=True)
class Decision:
    """The numbers behind the main why of a pair at one batch (see the kinds above)."""
    kind: str
    winner: str
    loser: str
    roof_winner_ns: float = math.nan         # roofline bound of the expert GEMMs
    roof_loser_ns: float = math.nan
    gemm_winner_ns: float = math.nan         # measured expert GEMM time
    gemm_loser_ns: float = math.nan
    outside_extra_ns: float = math.nan       # loser's time outside the expert GEMMs minus the winner's
    bytes_ratio: float = math.nan            # loser bytes / winner bytes
    bytes_source: str = ""                   # "DRAM bytes" (ncu) or "expert weight bytes (model)"
    dram_pct_winner: float = math.nan        # achieved DRAM bandwidth, % of peak
    dram_pct_loser: float = math.nan
    loser_bound: str = ""                    # measured bound of the loser's expert GEMMs
    winner_model_bound: str = ""             # the cost model's bound for the winner
    winner_path: str = ""                    # MMA path whose peak each roofline uses
    loser_path: str = ""
    peak_ratio: float = math.nan             # winner's MMA peak / loser's MMA peak
    roofline_pct_winner: float = math.nan    # % of roofline reached by the expert GEMMs
    roofline_pct_loser: float = math.nan


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
    deciding_reason: str = ""            # the main why in a few words (the terminal's per-batch table)
    decision: Decision | None = None

    def as_record(self) -> dict:
        return asdict(self)


def _finite(*xs: float) -> bool:
    return all(np.isfinite(x) for x in xs)


def decide(w: str, l: str, wr: pd.Series, lr: pd.Series) -> Decision:
    """What decided winner w over loser l: did the format the roofline favours win, and if not, why not."""
    tw, tl = get(wr, "t_roofline_ns"), get(lr, "t_roofline_ns")
    if not _finite(tw, tl):
        return Decision(NO_ROOFLINE, w, l)
    gw, gl = get(wr, "gemm_time_median_ns"), get(lr, "gemm_time_median_ns")
    ow, ol = get(wr, "outside_gemm_ns"), get(lr, "outside_gemm_ns")
    mw, ml = get(wr, "dram_bytes"), get(lr, "dram_bytes")
    if _finite(mw, ml) and mw > 0:
        ratio, src = ml / mw, "DRAM bytes"
    else:
        aw, al = weight_bytes(wr), weight_bytes(lr)
        ratio, src = (al / aw if aw > 0 else np.nan), "expert weight bytes (model)"
    pw, pl = peak_path(wr)[0], peak_path(lr)[0]
    fw, fl = get(wr, "peak_tensor_flop_per_s"), get(lr, "peak_tensor_flop_per_s")
    outside_wins = _finite(gw, gl, ow, ol) and (ol - ow) > (gl - gw) and (ol - ow) > 0
    kind = OUTSIDE_GEMMS if outside_wins else (LOSER_LOWER_ROOF if tl < tw else WINNER_LOWER_ROOF)
    return Decision(
        kind, w, l, roof_winner_ns=float(tw), roof_loser_ns=float(tl), gemm_winner_ns=float(gw),
        gemm_loser_ns=float(gl), outside_extra_ns=float(ol - ow), bytes_ratio=float(ratio), bytes_source=src,
        dram_pct_winner=float(get(wr, "dram_bw_pct_of_peak")), dram_pct_loser=float(get(lr, "dram_bw_pct_of_peak")),
        loser_bound=bound_class(get(lr, "bound_measured", "")), winner_model_bound=str(get(wr, "bound_model", "")),
        winner_path=pw, loser_path=pl,
        peak_ratio=float(fw / fl) if _finite(fw, fl) and fl > 0 else math.nan,
        roofline_pct_winner=float(get(wr, "pct_of_roofline")), roofline_pct_loser=float(get(lr, "pct_of_roofline")),
    )


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
        d = decide(w, l, wr, lr)
        headline = sentences.headline(d, wr, lr)
        reasons = [sentences.comparison(int(batch), w, l, speedup, wr, lr, len(sw), len(sl), p, sig, ALPHA)]
        if len(g) > 2 or not is_pair and pair:
            reasons.append(sentences.fastest_overall(fastest, w, len(g), margin, nxt, None if is_pair else pair))
        reasons += [headline,
                    sentences.bound_reason(w, wr, why_no_counters), sentences.bound_reason(l, lr, why_no_counters),
                    sentences.bytes_reason(w, l, wr, lr),
                    sentences.path_reason(w, wr), sentences.path_reason(l, lr),
                    sentences.efficiency_reason(w, wr), sentences.efficiency_reason(l, lr),
                    sentences.outside_reason(w, l, wr, lr, roles, int(batch)),
                    sentences.padding_reason(w, wr), sentences.padding_reason(l, lr)]
        clock = sentences.clock_reason(w, l, wr, lr)
        if clock:
            reasons.append(clock)
        others = {str(r["format"]): float(r["layer_time_median_ns"]) for _, r in g.iterrows()}
        out.append(Verdict(int(batch), w, l, speedup, p, sig, others, reasons, fastest=fastest,
                           fastest_margin=margin, next_fastest=nxt, pair=[w, l] if is_pair else None,
                           headline=headline, deciding_reason=sentences.deciding_reason(d, lr), decision=d))
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


def _runs(wins: list[tuple[int, str, float]]) -> list[tuple[str, int, int]]:
    """Contiguous batch ranges won by the same format: [(format, first batch, last batch)]."""
    return [(fmt, bs[0], bs[-1]) for fmt, bs in crossover.winner_runs([(b, f) for b, f, _ in wins])]


def summary(layer: pd.DataFrame, vds: list[Verdict], pair: tuple[str, str] | None, predicted: tuple[float | None, str],
            memory: pd.DataFrame, memory_note: str | None, gpu_label: str,
            predicted_crossover: crossover.Crossover | None = None) -> dict:
    """The short answer to "FP8 or MXFP4 here?": who wins which batch range, crossover, memory effect.

    `predicted` is (estimate, source) of the model's crossover; `predicted_crossover` its interval."""
    if pair is None:
        return {"pair": None, "answer": sentences.NO_PAIR_ANSWER, "lines": []}
    a, b = pair
    wins: dict[str, list[tuple[int, float]]] = {a: [], b: []}  # format -> [(batch, speedup over the other)]
    timed = layer[layer["format"].isin(pair) & np.isfinite(layer["layer_time_median_ns"].astype(float))]
    untimed = [f for f in pair if f not in set(timed["format"])]  # rows missing or dropped as unsound
    for _, g in timed.groupby("batch"):
        if len(g) == 2:
            g = g.sort_values("layer_time_median_ns")
            wins[str(g["format"].iloc[0])].append(
                (int(g["batch"].iloc[0]), float(g["layer_time_median_ns"].iloc[1] / g["layer_time_median_ns"].iloc[0])))
    ordered = sorted((bt, f, sp) for f in pair for bt, sp in wins[f])
    runs = _runs(ordered)
    ties = [bt for bt, _, sp in ordered if sp < NEAR_TIE]
    crossings = measured_crossovers(layer, a, b)
    xs = [c.estimate for c in crossings]
    xp, xp_src = predicted
    mem = (memory.set_index("format") if memory is not None and not memory.empty and set(pair) <= set(memory["format"])
           else None)
    lines = sentences.summary_lines(pair, wins, crossings, xp, xp_src, predicted_crossover, mem, memory_note,
                                    gpu_label, untimed)
    answer = sentences.answer(pair, wins, runs, xs, ties, NEAR_TIE, mem, gpu_label, untimed)
    return {"pair": list(pair), "answer": answer, "lines": lines,
            "measured_crossover_batch": xs[0] if xs else None, "measured_crossover_batches": xs,
            "predicted_crossover_batch": xp, "predicted_crossover_source": xp_src,
            # the same crossovers as intervals: bracketing batches, estimate and its method (roofline.crossover)
            "measured_crossovers": [c.as_record() for c in crossings],
            "predicted_crossover": predicted_crossover.as_record() if predicted_crossover else None,
            "runs": [{"winner": f, "first_batch": lo, "last_batch": hi} for f, lo, hi in runs],
            "near_tie_batches": ties, "near_tie_speedup": NEAR_TIE}
