"""Compare two captures: what changed beyond noise, per (format, batch, role) and per layer call.

1. Comparability: a different GPU model or workload (model, layer dims, top-k, tp/ep) refuses
   (MoeprofError unless force); softer differences (clock control, collectors, software, kernel,
   repeats) are warnings.
2. Per row: raw time samples (one per layer call), median bytes and tensor ops (ncu) on both
   sides, rates recomputed from them. Significance: two-sided Mann-Whitney U at `alpha` AND a
   relative change of at least `min_effect`; where a side has fewer than `min_repeats` samples,
   the change must exceed the stated `noise_floor` instead.
3. Status: faster | slower | unchanged | added | removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from moeprof.analysis import classify, metrics
from moeprof.analysis.load import Capture
from moeprof.analysis.stats import mann_whitney
from moeprof.capture_folder import LayerShape, Workload
from moeprof.errors import MoeprofError

STATUSES = ["faster", "slower", "unchanged", "added", "removed"]
LAYER_ROLE = "layer"


@dataclass
class DiffOptions:
    alpha: float = 0.05
    min_effect: float = 0.03      # relative change a significant result must also reach
    noise_floor: float = 0.05     # relative change that counts without enough repeats to test
    min_abs_ns: float = 500.0     # and an absolute one: sub-microsecond shifts of tiny kernels are timer/collector jitter
    min_repeats: int = 3
    force: bool = False


@dataclass
class DiffResult:
    rows: pd.DataFrame
    errors: list[str] = field(default_factory=list)     # incomparable (overridden by force)
    warnings: list[str] = field(default_factory=list)
    options: DiffOptions = field(default_factory=DiffOptions)
    label_a: str = ""
    label_b: str = ""

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
    sa_, sb_ = a.manifest.software, b.manifest.software
    for key in sorted(set(sa_) | set(sb_)):
        if sa_.get(key) != sb_.get(key):
            warnings.append(f"{key} differs: {sa_.get(key)} vs {sb_.get(key)}")
    return errors, warnings


def _samples(cap: Capture) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(time samples: format, batch, role, time_ns per call; counters: format, batch, role medians)."""
    k = classify.classify(cap.kernels)
    collector = metrics.timing_collector(k)
    parts = []
    if collector is not None:
        crt = metrics.call_role_times(k, collector)
        parts.append(crt[["format", "batch", "role", "time_ns"]])
    lay = metrics.layer_samples(k, cap.points, collector)
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
    return DiffResult(df, errors, warnings, opt, str(a.path), str(b.path))


def _role_order(role: str) -> int:
    order = [LAYER_ROLE] + classify.ROLES
    return order.index(role) if role in order else len(order)


def _judge(xa: np.ndarray | None, xb: np.ndarray | None, opt: DiffOptions) -> dict:
    if xa is None or len(xa) == 0:
        return {"status": "added", "change_pct": np.nan, "p_value": np.nan, "test": "n/a"}
    if xb is None or len(xb) == 0:
        return {"status": "removed", "change_pct": np.nan, "p_value": np.nan, "test": "n/a"}
    ma, mb = float(np.median(xa)), float(np.median(xb))
    change = (mb / ma - 1.0) if ma > 0 else (0.0 if mb == ma else np.inf)
    if len(xa) >= opt.min_repeats and len(xb) >= opt.min_repeats:
        res = mann_whitney(xa, xb)
        significant = res.p_value < opt.alpha and abs(change) >= opt.min_effect
        p, test = res.p_value, f"mann-whitney ({res.method}), alpha {opt.alpha}, min effect {opt.min_effect:.0%}"
    else:
        significant = abs(change) >= opt.noise_floor
        p, test = np.nan, f"noise floor {opt.noise_floor:.0%} (fewer than {opt.min_repeats} repeats)"
    if significant and abs(mb - ma) < opt.min_abs_ns:
        significant = False
        test += f"; change below {opt.min_abs_ns:.0f} ns"
    status = "unchanged" if not significant else ("faster" if change < 0 else "slower")
    return {"status": status, "change_pct": change * 100.0, "p_value": p, "test": test}
