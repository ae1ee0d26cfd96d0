"""Compare two captures: what changed beyond noise, per (format, batch, role) and per layer call.

1. Comparability: a different GPU model or workload (model, layer dims, top-k, tp/ep) refuses
   (MoeprofError unless force); softer differences (clock control, collectors, software, kernel,
   repeats) are warnings. Rows either capture dropped as unsound are named in the warnings.
2. Per row: time samples in repeat order (one per layer call) on both sides, median bytes and
   tensor ops (ncu), rates recomputed from them.
3. Decision (stated in DiffResult.decision_rule). Repeats of one run are neither independent nor
   stationary (clocks and temperature drift over a run), so no rank test: instead
   - change = median(B) / median(A) - 1, with a (1 - alpha) interval from a circular block bootstrap
     over contiguous repeats (seeded: the same captures give the same interval);
   - the threshold a change must clear = the largest of: min_effect; each side's within-run drift
     (range of the medians of 4 contiguous blocks of its repeats); where a side has only 1-2 repeats,
     the other side's full sample range (a lone call can land anywhere in it); where both sides
     have a single repeat, the stated noise_floor;
   - slower / faster: the whole interval beyond +threshold / -threshold (and |B - A| >= min_abs_ns);
     unchanged: the whole interval within +-threshold, or |B - A| < min_abs_ns;
     inconclusive: the interval straddles the threshold, or one repeat per side changed less than
     the threshold (no spread is known to confirm "unchanged").
4. Status: faster | slower | unchanged | inconclusive | added | removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from moeprof.analysis import classify, metrics
from moeprof.analysis.load import Capture
from moeprof.analysis.sentences import POWER_LIMITED_FRACTION
from moeprof.analysis.stats import BOOTSTRAP_SEED, block_bootstrap_medians, run_drift, sample_range
from moeprof.capture_folder import LayerShape, Workload
from moeprof.errors import MoeprofError

STATUSES = ["faster", "slower", "unchanged", "inconclusive", "added", "removed"]
LAYER_ROLE = "layer"


@dataclass
class DiffOptions:
    alpha: float = 0.05           # the interval on the change is a (1 - alpha) bootstrap interval
    min_effect: float = 0.03      # smallest relative change that counts, however quiet the runs
    noise_floor: float = 0.05     # relative change that counts when both sides have one repeat (no spread known)
    min_abs_ns: float = 500.0     # and an absolute one: sub-microsecond shifts of tiny kernels are timer/collector jitter
    resamples: int = 2000         # bootstrap resamples per row
    force: bool = False


@dataclass
class DiffResult:
    rows: pd.DataFrame
    errors: list[str] = field(default_factory=list)     # incomparable (overridden by force)
    warnings: list[str] = field(default_factory=list)
    options: DiffOptions = field(default_factory=DiffOptions)
    label_a: str = ""
    label_b: str = ""

    @property
    def decision_rule(self) -> str:
        """The rule behind every status, in one paragraph (reports print it; JSON carries it)."""
        o = self.options
        return (f"change = median(B)/median(A) - 1 with a {1 - o.alpha:.0%} circular block-bootstrap interval over "
                f"contiguous repeats ({o.resamples} resamples, seed {BOOTSTRAP_SEED}); threshold = the largest of "
                f"{o.min_effect:.0%}, each side's within-run drift (range of the medians of 4 contiguous blocks of "
                f"repeats), the other side's sample range where a side has 1-2 repeats, and {o.noise_floor:.0%} where "
                f"both have 1; slower/faster: the whole interval beyond +/-threshold and |B - A| >= "
                f"{o.min_abs_ns / 1e3:g} µs; unchanged: the whole interval within +/-threshold or |B - A| < "
                f"{o.min_abs_ns / 1e3:g} µs; inconclusive: the interval straddles the threshold, or one repeat per "
                f"side and a change below the threshold")

    def counts(self) -> dict[str, int]:
        vc = self.rows["status"].value_counts() if len(self.rows) else pd.Series(dtype=int)
        return {s: int(vc.get(s, 0)) for s in STATUSES}


_WORKLOAD_HARD = ["model", *LayerShape.KEYS, "tp", "ep"]
_WORKLOAD_SOFT = ["routing", "kernel", "repeats", "mode", "seed"]


def _workload_value(w: Workload, key: str):
    return getattr(w.shape, key, None) if key in LayerShape.KEYS else getattr(w, key)


def comparability(a: Capture, b: Capture) -> tuple[list[str], list[str]]:
    """(errors, warnings): errors make the captures incomparable, warnings qualify the result."""
    errors: list[str] = []
    warnings: list[str] = []
    ga, gb = a.manifest.gpu, b.manifest.gpu
    if (ga.name, ga.spec) != (gb.name, gb.spec):
        errors.append(f"different GPUs: {ga.name!r} vs {gb.name!r} (their numbers are not comparable)")
    elif ga.sm_count != gb.sm_count:
        errors.append(f"different SM counts: {ga.sm_count} vs {gb.sm_count} (MIG slice or variant?)")
    for key in ("driver", "cuda"):
        if getattr(ga, key) != getattr(gb, key):
            warnings.append(f"{key} differs: {getattr(ga, key)} vs {getattr(gb, key)}")
    wa, wb = a.manifest.workload, b.manifest.workload
    for key in _WORKLOAD_HARD:
        va, vb = _workload_value(wa, key), _workload_value(wb, key)
        if va != vb:
            errors.append(f"different workload {key}: {va!r} vs {vb!r}")
    for key in _WORKLOAD_SOFT:
        va, vb = _workload_value(wa, key), _workload_value(wb, key)
        if va != vb:
            warnings.append(f"workload {key} differs: {va!r} vs {vb!r}")
    ca, cb = a.manifest.collectors, b.manifest.collectors
    for name in sorted(set(ca) | set(cb)):
        sa, sb = a.manifest.collector(name).status, b.manifest.collector(name).status
        if sa != sb:
            warnings.append(f"collector {name}: {sa or 'absent'} vs {sb or 'absent'}")
    na, nb = a.manifest.collector("ncu"), b.manifest.collector("ncu")
    if na.status == "ok" and nb.status == "ok":  # else the line above said so
        oa, ob = na.option_dict, nb.option_dict
        for key in ("clock_control", "cache_control", "replay_mode"):
            if oa.get(key) != ob.get(key):
                warnings.append(f"ncu {key} differs: {oa.get(key)} vs {ob.get(key)} (counter rates may shift)")
    sus_a, sus_b = a.sustain_s, b.sustain_s
    if sus_a != sus_b:
        warnings.append(f"timing after sustained load differs: --sustain-s {sus_a:g} vs {sus_b:g} (times taken "
                        f"after sustained calls include the card's power state)")
    sa_, sb_ = a.manifest.software, b.manifest.software
    for key in sorted(set(sa_) | set(sb_)):
        if sa_.get(key) != sb_.get(key):
            warnings.append(f"{key} differs: {sa_.get(key)} vs {sb_.get(key)}")
    return errors, warnings


def _clocks(cap: Capture) -> dict[tuple[str, int], tuple[float, float]]:
    """(SM clock median MHz, power-capped share) per point, from points.csv's NVML columns."""
    p = cap.points
    if p.empty or "sm_clock_median_mhz" not in p or p["sm_clock_median_mhz"].isna().all():
        return {}
    p = p[p["batch"].notna()]
    g = p.groupby([p["format"], p["batch"].astype("int64")], sort=False)
    med = g[["sm_clock_median_mhz", "power_capped_fraction"]].median()
    return {(str(f), int(b)): (float(r["sm_clock_median_mhz"]), float(r["power_capped_fraction"]))
            for (f, b), r in med.iterrows()}


def _power_warnings(df: pd.DataFrame, clk_a: dict, clk_b: dict) -> list[str]:
    """Points where one capture ran the card at its power limit and the other did not."""
    out = []
    for key in sorted(set(clk_a) & set(clk_b)):
        (ca, fa), (cb, fb) = clk_a[key], clk_b[key]
        la, lb = fa >= POWER_LIMITED_FRACTION, fb >= POWER_LIMITED_FRACTION
        if la != lb:
            out.append(f"{key[0]} at {key[1]}: the card was at its power limit in {'A' if la else 'B'} only "
                       f"(SM clock median {ca:.0f} vs {cb:.0f} MHz): a time change there is partly the card's "
                       f"power state")
    return out


def _samples(cap: Capture) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(time samples: format, batch, role, time_ns per call; counters: format, batch, role medians)."""
    k = classify.classify(cap.kernels)
    collector = metrics.timing_collector(k)
    parts = []
    if collector is not None:
        crt = metrics.call_role_times(k, collector).sort_values("call_id", kind="stable")  # call order
        parts.append(crt[["format", "batch", "role", "time_ns"]])
    pts = cap.points.sort_values("repeat", kind="stable") if "repeat" in cap.points else cap.points
    lay = metrics.layer_samples(k, pts, collector)
    if not lay.empty:
        parts.append(lay.assign(role=LAYER_ROLE))
    samples = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["format", "batch", "role", "time_ns"])
    keys = ["format", "batch", "role"]
    counters = metrics._counters_per_call(k, keys)
    lc = metrics._counters_per_call(k.assign(role=LAYER_ROLE), keys)
    counters = pd.concat([counters, lc], ignore_index=True) if not counters.empty else lc
    if not counters.empty:
        counters["role"] = counters["role"].astype(str)
    return samples, counters


def _counter_cols(c: pd.DataFrame) -> pd.DataFrame:
    if c.empty:
        return pd.DataFrame(columns=["format", "batch", "role", "dram_bytes", "tensor_ops", "gpu_time_ns"])
    return pd.DataFrame({
        "format": c["format"], "batch": c["batch"], "role": c["role"],
        "dram_bytes": metrics.dram_bytes(c),
        "tensor_ops": metrics.tensor_ops(c),
        "gpu_time_ns": c["gpu_time_ns"],
    })


def diff(a: Capture, b: Capture, options: DiffOptions | None = None) -> DiffResult:
    opt = options or DiffOptions()
    errors, warnings = comparability(a, b)
    for side, cap in (("A", a), ("B", b)):
        warnings += [f"{side} {d.line()}" for d in getattr(cap, "dropped", [])]
    if errors and not opt.force:
        raise MoeprofError("captures are not comparable: " + "; ".join(errors) + " (--force compares anyway)")
    sa, ca = _samples(a)
    sb, cb = _samples(b)
    keys = ["format", "batch", "role"]
    ga = {k: g["time_ns"].to_numpy(float) for k, g in sa.groupby(keys, sort=False)}
    gb = {k: g["time_ns"].to_numpy(float) for k, g in sb.groupby(keys, sort=False)}
    cnt_a = _counter_cols(ca).set_index(keys)
    cnt_b = _counter_cols(cb).set_index(keys)
    rows = []
    for key in sorted(set(ga) | set(gb), key=lambda k: (str(k[0]), int(k[1]), _role_order(k[2]))):
        xa, xb = ga.get(key), gb.get(key)
        rec = dict(zip(keys, key))
        rec.update(n_a=0 if xa is None else len(xa), n_b=0 if xb is None else len(xb))
        rec["time_a_ns"] = float(np.median(xa)) if xa is not None and len(xa) else np.nan
        rec["time_b_ns"] = float(np.median(xb)) if xb is not None and len(xb) else np.nan
        for side, cnt in (("a", cnt_a), ("b", cnt_b)):
            row = cnt.loc[key] if key in cnt.index else None
            for col in ("dram_bytes", "tensor_ops", "gpu_time_ns"):
                rec[f"{col}_{side}"] = float(row[col]) if row is not None and pd.notna(row[col]) else np.nan
            rec[f"dram_bw_{side}_bytes_per_s"] = rec[f"dram_bytes_{side}"] / rec[f"gpu_time_ns_{side}"] * 1e9
            rec[f"tflop_per_s_{side}"] = rec[f"tensor_ops_{side}"] / rec[f"time_{side}_ns"] * 1e-3
        rec.update(_judge(xa, xb, opt))
        rows.append(rec)
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=keys + ["status"])
    else:
        df["dram_bytes_change_pct"] = (df["dram_bytes_b"] / df["dram_bytes_a"] - 1) * 100
        df["tensor_ops_change_pct"] = (df["tensor_ops_b"] / df["tensor_ops_a"] - 1) * 100
        # NVML while the layer calls were timed (points.csv), on the whole-layer rows
        clk_a, clk_b = _clocks(a), _clocks(b)
        if clk_a or clk_b:
            layer = (df["role"] == LAYER_ROLE).to_numpy()
            for side, clk in (("a", clk_a), ("b", clk_b)):
                vals = [clk.get((str(f), int(bt))) if lay else None
                        for f, bt, lay in zip(df["format"], df["batch"], layer)]
                df[f"sm_clock_{side}_mhz"] = [v[0] if v else np.nan for v in vals]
                df[f"power_capped_{side}_fraction"] = [v[1] if v else np.nan for v in vals]
            warnings += _power_warnings(df, clk_a, clk_b)
    return DiffResult(df, errors, warnings, opt, str(a.path), str(b.path))


def _role_order(role: str) -> int:
    order = [LAYER_ROLE] + classify.ROLES
    return order.index(role) if role in order else len(order)


def _judge(xa: np.ndarray | None, xb: np.ndarray | None, opt: DiffOptions) -> dict:
    """Status of one row from its samples in repeat order (see the module docstring and decision_rule)."""
    none = {"ci_low_pct": np.nan, "ci_high_pct": np.nan, "threshold_pct": np.nan, "drift_a_pct": np.nan,
            "drift_b_pct": np.nan, "change_pct": np.nan}
    if xa is None or len(xa) == 0:
        return {"status": "added", **none, "test": "n/a"}
    if xb is None or len(xb) == 0:
        return {"status": "removed", **none, "test": "n/a"}
    xa, xb = np.asarray(xa, dtype=float), np.asarray(xb, dtype=float)
    ma, mb = float(np.median(xa)), float(np.median(xb))
    change = mb / ma - 1.0
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    ratio = block_bootstrap_medians(xb, opt.resamples, rng) / block_bootstrap_medians(xa, opt.resamples, rng)
    lo, hi = (float(q) - 1.0 for q in np.quantile(ratio, [opt.alpha / 2, 1 - opt.alpha / 2]))
    drift_a, drift_b = run_drift(xa), run_drift(xb)
    parts = {"min effect": opt.min_effect, "drift A": drift_a, "drift B": drift_b}
    if len(xb) <= 2:
        parts["range A"] = sample_range(xa)
    if len(xa) <= 2:
        parts["range B"] = sample_range(xb)
    single = len(xa) == 1 and len(xb) == 1
    if single:
        parts["noise floor"] = opt.noise_floor
    known = {k: v for k, v in parts.items() if np.isfinite(v)}
    source = max(known, key=known.get)
    threshold = known[source]
    test = f"{1 - opt.alpha:.0%} interval {lo * 100:+.1f}%..{hi * 100:+.1f}%, threshold {threshold:.1%} ({source})"
    if abs(mb - ma) < opt.min_abs_ns:
        status, test = "unchanged", test + f"; change below {opt.min_abs_ns:.0f} ns"
    elif lo > threshold:
        status = "slower"
    elif hi < -threshold:
        status = "faster"
    elif -threshold <= lo and hi <= threshold and not single:
        status = "unchanged"
    else:
        status = "inconclusive"
        test += "; one repeat per side" if single else "; the interval straddles the threshold"
    return {"status": status, "change_pct": change * 100.0, "ci_low_pct": lo * 100.0, "ci_high_pct": hi * 100.0,
            "threshold_pct": threshold * 100.0, "drift_a_pct": drift_a * 100.0, "drift_b_pct": drift_b * 100.0,
            "test": test}
