"""`analyze(capture)`: load -> classify -> metrics -> verdicts, in one result object for the reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from moeprof.analysis import classify, expected, metrics, sentences, validate, verdict
from moeprof.analysis.load import Capture
from moeprof.errors import MoeprofError
from moeprof.roofline.cost import ROOFLINE_BASIS, ROOFLINE_BASIS_NOTE


@dataclass
class Analysis:
    capture: Capture
    kernels: pd.DataFrame          # classified
    roles: pd.DataFrame            # per (format, batch, role)
    layer: pd.DataFrame            # per (format, batch)
    samples: pd.DataFrame          # per layer call: format, batch, time_ns
    verdicts: list[verdict.Verdict]
    summary: dict[str, Any]
    peaks: metrics.Peaks
    memory: pd.DataFrame
    timing_collector: str | None
    notes: list[str] = field(default_factory=list)
    expectations: expected.Expectations | None = None  # what the model expects, resolved once for this capture
    dropped: list[validate.Dropped] = field(default_factory=list)  # rows validation left out, and why
    ranks: Any = None  # moeprof.analysis.ranks.RankAnalysis for a capture of several GPUs, else None

    @property
    def gpu_label(self) -> str:
        return self.capture.gpu_name


def analyze(capture: Capture, pair: tuple[str, str] | None = None, timing: str | None = None) -> Analysis:
    from moeprof.analysis.ranks import analyze_ranks, counter_rank, has_ranks, single_rank_kernels

    k = classify.classify(single_rank_kernels(capture.kernels))  # several ranks: rank 0's (ranks.py has all)
    notes = list(capture.warnings) + [d.line() for d in capture.dropped]
    if has_ranks(capture.kernels):
        notes.append("several ranks: per-role tables show rank 0's kernels; layer times are the slowest rank's")
        cr = counter_rank(capture.kernels)
        if cr not in (None, 0):
            notes.append(f"ncu counters come from rank {cr}, the rank ncu profiled")
    collector = metrics.timing_collector(k, timing)
    if timing and collector is None:
        raise MoeprofError(f"capture has no kernel timings from collector {timing!r}")
    if collector is None and capture.points["layer_time_ns"].notna().sum() == 0:
        dropped = "; ".join(d.line() for d in capture.dropped)
        raise MoeprofError(f"{capture.path}: no layer times in points.csv and no kernel timings in kernels.csv"
                           + (f" ({dropped})" if dropped else ""))
    if collector == "ncu":
        notes.append("kernel times come from ncu replay (caches flushed, serialized): slower than real runs")
    # The distinct (format, batch) pairs first: a million launches share a few dozen points.
    pts = k.loc[k["batch"].notna().to_numpy(), ["format", "batch"]].drop_duplicates()
    points = sorted(set(zip(pts["format"], pts["batch"].astype("int64"))) |
                    set(zip(capture.points["format"], capture.points["batch"].dropna().astype("int64"))))
    exp = expected.expectations(capture.manifest, points)
    notes += [f"{what}: {why}" for what, why in exp.notes.items()]
    if exp.cost_note:
        notes.append(f"cost model: {exp.cost_note}")
    # The as-built traffic describes moeprof's own kernels; other programs' kernels have their own.
    w = capture.manifest.workload
    ours = not w.external and w.kernel in (None, "triton")
    if not exp.costs.empty:
        notes.append(ROOFLINE_BASIS_NOTE if ours else
                     "% of roofline is measured against the ideal bound; the as-built bound is n/a (it models "
                     "moeprof's own kernels, and this capture ran " + (w.kernel or "another program's kernels") + ")")
    pk = metrics.peaks(k, capture.manifest, exp.gpu)
    # Per-call role times feed both tables: computed once (a pass over every launch).
    role_times = metrics.call_role_times(k, collector) if collector else None
    # a dequantization pass counts in the as-built bound where the capture shows one ran
    costs = expected.dequant_as_seen(exp.costs, k) if ours else exp.costs
    roles = metrics.role_table(k, costs, pk, collector, role_times) if collector else pd.DataFrame()
    layer = metrics.layer_table(k, capture.points, costs, pk, collector, role_times)
    if capture.sustain_s > 0 and "layer_time_source" in layer:   # charts and tables say how the calls were timed
        layer["layer_time_source"] = layer["layer_time_source"].str.replace(
            "(CUDA events)", f"(CUDA events after {capture.sustain_s:g} s of back-to-back calls)", regex=False)
    samples = metrics.layer_samples(k, capture.points, collector)
    power = sentences.power_note(layer, capture.manifest.gpu.sm_clock_max_mhz if capture.manifest.gpu else None)
    if power:
        notes.append(power)
    if not ours:
        as_built = ("t_as_built_ns", "pct_of_as_built", "layer_t_as_built_ns", "layer_pct_of_as_built",
                    "bytes_as_built", "gemm1_bytes_as_built", "gemm2_bytes_as_built", "t_as_built_spec_s",
                    "weight_bytes_as_built", "gemm1_dequant_bytes_as_built", "gemm2_dequant_bytes_as_built",
                    "t_compute_spec_s", "hbm_bytes_per_s_spec")
        layer = layer.drop(columns=[c for c in as_built if c in layer])
        roles = roles.drop(columns=[c for c in as_built if c in roles])
    ncu = capture.manifest.collector("ncu")
    why = (f"ncu {ncu.status}: {ncu.reason}" if ncu.status not in (None, "ok")
           else "no ncu counters for these kernels")
    formats = sorted(layer["format"].unique()) if not layer.empty else []
    chosen = verdict.pick_pair(formats, pair)
    if pair and chosen is None:
        raise MoeprofError(f"--pair {','.join(pair)}: capture has formats {', '.join(formats) or 'none'}")
    vds = verdict.verdicts(layer, roles, samples, why_no_counters=why, pair=chosen)
    xp, xp_source = exp.predicted_crossover(*chosen) if chosen else (None, "n/a")
    summ = verdict.summary(layer, vds, chosen, (xp.estimate if xp else None, xp_source), exp.memory, exp.memory_note,
                           capture.gpu_name, predicted_crossover=xp)
    summ["roofline_basis"] = ROOFLINE_BASIS  # "% of roofline" is against the ideal bound; see the notes
    ranks = analyze_ranks(capture) if has_ranks(capture.kernels) else None
    return Analysis(capture, k, roles, layer, samples, vds, summ, pk, exp.memory, collector, notes, exp,
                    dropped=list(capture.dropped), ranks=ranks)
