"""What the analytical model expects for a capture: GPU spec, model shape, per-point cost, peaks.

The bridge between a capture's manifest and `moeprof.models` (specs, presets, cost model). Each
lookup that can fail returns a note saying why, so reports can print "n/a (reason)".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from moeprof.errors import MoeprofError


@dataclass
class Expected:
    gpu: Any = None                 # moeprof.roofline.gpus.GpuSpec | None
    model: Any = None               # moeprof.roofline.shapes.MoeModel | None
    tp: int = 1
    ep: int = 1
    routing: str = "uniform"
    notes: dict[str, str] = field(default_factory=dict)  # what is missing -> why


def resolve(manifest: dict[str, Any]) -> Expected:
    """GPU spec and model shape named by a manifest (None with a note where unknown)."""
    from moeprof.roofline import gpus, shapes

    exp = Expected()
    g = manifest.get("gpu") or {}
    for key in (g.get("spec"), g.get("name")):
        if not key:
            continue
        try:
            exp.gpu = gpus.get_gpu(str(key))
            break
        except MoeprofError:
            continue
    if exp.gpu is None:
        exp.notes["gpu"] = f"no spec for GPU {g.get('name') or g.get('spec') or '(unnamed)'!r}"

    w = manifest.get("workload") or {}
    exp.tp, exp.ep = int(w.get("tp") or 1), int(w.get("ep") or 1)
    exp.routing = str(w.get("routing") or "uniform")
    model = None
    if w.get("model"):
        try:
            model = shapes.get_model(str(w["model"]))
        except MoeprofError as exc:
            exp.notes["model"] = str(exc)
    dims = {"hidden_size": w.get("hidden_size"), "expert_intermediate_size": w.get("intermediate_size"),
            "num_experts": w.get("num_experts"), "top_k": w.get("top_k")}
    if all(isinstance(v, int) and v > 0 for v in dims.values()):
        if model is None:
            model = shapes.MoeModel(name=str(w.get("model") or "capture"), num_moe_layers=1, num_layers=1, **dims)
            exp.notes.pop("model", None)
        elif any(getattr(model, k) != v for k, v in dims.items()):
            # The capture ran a reshaped layer: trust the dims that ran.
            model = dataclasses.replace(model, name=f"{model.name} (capture dims)", **dims)
    if model is None and "model" not in exp.notes:
        exp.notes["model"] = "manifest names no model and no layer dims"
    exp.model = model
    return exp


def point_costs(exp: Expected, points: list[tuple[str, int]]) -> tuple[pd.DataFrame, str | None]:
    """Analytical cost per (format, batch): FLOPs, bytes, predicted bound. Note says why if empty."""
    if exp.gpu is None or exp.model is None:
        return pd.DataFrame(), "; ".join(exp.notes.values()) or "no GPU spec or model"
    from moeprof.roofline import cost, formats

    rows, skipped = [], []
    for fmt, batch in points:
        try:
            c = cost.layer_cost(exp.model, fmt, exp.gpu, int(batch), tp=exp.tp, ep=exp.ep, routing=exp.routing)
        except MoeprofError as exc:
            skipped.append(f"{fmt}: {exc}")
            continue
        rows.append({
            "format": fmt, "batch": int(batch), "mma_path_model": c.mma_path,
            "weight_bits": formats.get_format(fmt).weight_bits,
            "flops": c.flops, "gemm1_flops": c.gemm1_flops, "gemm2_flops": c.gemm2_flops,
            "bytes": c.bytes, "weight_bytes": c.weight_bytes,
            "gemm1_bytes": c.gemm1_bytes, "gemm2_bytes": c.gemm2_bytes,
            "gemm1_weight_bytes": c.gemm1_weight_bytes, "gemm2_weight_bytes": c.gemm2_weight_bytes,
            "experts_touched_model": c.experts_touched, "intensity_flop_per_byte": c.intensity_flop_per_byte,
            "t_roofline_spec_s": c.t_roofline_s, "bound_model": c.bound,
        })
    note = ("; ".join(sorted(set(skipped))) or None) if skipped else None
    return pd.DataFrame(rows), note


def memory(exp: Expected, formats: list[str]) -> tuple[pd.DataFrame, str | None]:
    """Weight bytes per GPU and HBM left for the KV cache, per format."""
    if exp.gpu is None or exp.model is None:
        return pd.DataFrame(), "; ".join(exp.notes.values()) or "no GPU spec or model"
    from moeprof.roofline import cost

    rows = []
    for fmt in formats:
        try:
            plan = cost.memory_plan(exp.model, fmt, exp.gpu, tp=exp.tp, ep=exp.ep)
        except MoeprofError:
            continue
        try:
            min_tp = cost.min_tp_to_fit(exp.model, fmt, exp.gpu) if not plan.fits else exp.tp
        except MoeprofError:
            min_tp = None
        rows.append({"format": fmt, "weight_bytes_per_gpu": plan.weight_bytes_per_gpu,
                     "kv_free_bytes_per_gpu": plan.free_bytes_per_gpu, "hbm_bytes": plan.hbm_bytes,
                     "reserve_fraction": plan.reserve_fraction, "fits": plan.fits, "tp": exp.tp, "ep": exp.ep,
                     "min_tp_to_fit": min_tp, "num_moe_layers": exp.model.num_moe_layers})
    return pd.DataFrame(rows), None if rows else "cost model knows none of the formats"


def predicted_crossover(exp: Expected, fmt_a: str, fmt_b: str, lo: int = 1, hi: int = 65536) -> tuple[float | None, str]:
    """Smallest batch (power-of-two grid, log-interpolated) where the faster format by roofline changes."""
    if exp.gpu is None or exp.model is None:
        return None, "n/a (" + ("; ".join(exp.notes.values()) or "no GPU spec or model") + ")"
    from moeprof.roofline import cost

    batches = [2 ** i for i in range(int(np.log2(lo)), int(np.log2(hi)) + 1)]
    try:
        ratio = [cost.layer_cost(exp.model, fmt_a, exp.gpu, b, tp=exp.tp, ep=exp.ep, routing=exp.routing).t_roofline_s
                 / cost.layer_cost(exp.model, fmt_b, exp.gpu, b, tp=exp.tp, ep=exp.ep, routing=exp.routing).t_roofline_s
                 for b in batches]
    except MoeprofError as exc:
        return None, f"n/a ({exc})"
    x = crossover_from_ratio(batches, ratio)
    if x is None:
        return None, f"none between batch {lo} and {hi} by the roofline model"
    return x, "roofline model"


def crossovers_from_ratio(batches: list[int] | np.ndarray, ratio: list[float] | np.ndarray) -> list[float]:
    """Every batch where ratio (time a / time b) crosses 1, interpolated in log(batch), log(ratio)."""
    b = np.asarray(batches, dtype=float)
    r = np.log(np.asarray(ratio, dtype=float))
    found: list[float] = []
    for i in range(1, len(b)):
        if not (np.isfinite(r[i - 1]) and np.isfinite(r[i])):
            continue
        if r[i - 1] == 0:
            found.append(float(b[i - 1]))
        elif np.sign(r[i - 1]) != np.sign(r[i]) and r[i] != 0:
            lb0, lb1 = np.log(b[i - 1]), np.log(b[i])
            t = r[i - 1] / (r[i - 1] - r[i])
            found.append(float(np.exp(lb0 + t * (lb1 - lb0))))
    return found


def crossover_from_ratio(batches: list[int] | np.ndarray, ratio: list[float] | np.ndarray) -> float | None:
    """First batch where ratio (time a / time b) crosses 1, interpolated in log(batch), log(ratio)."""
    found = crossovers_from_ratio(batches, ratio)
    return found[0] if found else None
