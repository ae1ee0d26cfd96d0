"""What the analytical model expects for a capture, resolved once: GPU spec, model shape, parallelism,
per-point cost, memory plan, the model's time curve per format (for the predicted crossover), notes.

The bridge between a capture's manifest and `moeprof.roofline` (specs, presets, cost model).
`expectations(manifest, points)` builds one `Expectations` before the metrics; everything after reads
from it. Each lookup that can fail leaves a note saying why, so reports can print "n/a (reason)".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from moeprof.capture_folder import Manifest
from moeprof.errors import MoeprofError
from moeprof.roofline import crossover

# The model's crossover is searched on powers of two over this range of batches.
PREDICTED_CROSSOVER_RANGE = (1, 65536)


@dataclass(frozen=True)
class Subject:
    """The GPU and model a manifest names, resolved to the roofline's objects (None where unknown)."""
    gpu: Any = None                 # moeprof.roofline.gpus.GpuSpec | None
    model: Any = None               # moeprof.roofline.shapes.MoeModel | None
    tp: int = 1
    ep: int = 1
    routing: str = "uniform"
    notes: dict[str, str] = field(default_factory=dict)  # what is missing -> why
    # The model is a known preset (whole-model numbers such as weight memory need its layer count);
    # False where only the capture's layer dims describe it.
    model_is_preset: bool = False

    @property
    def why_not(self) -> str:
        return "; ".join(self.notes.values()) or "no GPU spec or model"


@dataclass(frozen=True)
class Expectations:
    subject: Subject
    costs: pd.DataFrame                      # per (format, batch): FLOPs, bytes, roofline time, bound
    cost_note: str | None
    memory: pd.DataFrame                     # per format: weights and KV-cache room per GPU
    memory_note: str | None
    model_times_s: dict[str, list[float]]    # roofline time per format on the crossover grid
    model_time_notes: dict[str, str]         # format -> why it has no curve

    @property
    def gpu(self) -> Any:
        return self.subject.gpu

    @property
    def model(self) -> Any:
        return self.subject.model

    @property
    def notes(self) -> dict[str, str]:
        return self.subject.notes

    def predicted_crossover(self, fmt_a: str, fmt_b: str) -> tuple[crossover.Crossover | None, str]:
        """The first batch where the faster format by the roofline model changes (log-log interpolated
        between the powers of two that bracket it), and where it comes from or why there is none."""
        lo, hi = PREDICTED_CROSSOVER_RANGE
        if self.gpu is None or self.model is None:
            return None, "n/a (" + self.subject.why_not + ")"
        for f in (fmt_a, fmt_b):
            if f in self.model_time_notes:
                return None, f"n/a ({self.model_time_notes[f]})"
            if f not in self.model_times_s:
                return None, f"n/a (no model times for {f})"
        found = crossover.find(crossover.doubling_grid(lo, hi), self.model_times_s[fmt_a], self.model_times_s[fmt_b],
                               fmt_a, fmt_b, basis="roofline model")
        if not found:
            return None, f"none between batch {lo} and {hi} by the roofline model"
        return found[0], "roofline model"


def resolve(manifest: Manifest) -> Subject:
    """GPU spec and model shape named by a manifest (None with a note where unknown)."""
    from moeprof.roofline import gpus, shapes

    notes: dict[str, str] = {}
    g = manifest.gpu
    gpu = None
    for key in (g.spec, g.name):
        if not key:
            continue
        try:
            gpu = gpus.get_gpu(key)
            break
        except MoeprofError:
            continue
    if gpu is None:
        notes["gpu"] = f"no spec for GPU {g.name or g.spec or '(unnamed)'!r}"
    # The name is what the driver reported; a spec that names another GPU (a hand-edited or damaged
    # manifest) would give another card's bandwidth and memory: trust the name and say so.
    by_name = gpus.match_gpu(g.name) if g.name else None
    if gpu is not None and by_name is not None and by_name.name != gpu.name:
        notes["gpu spec"] = (f"manifest gpu.spec {g.spec!r} contradicts gpu.name {g.name!r}: trusting the name "
                             f"(what the driver reported) and using the {by_name.name} spec")
        gpu = by_name

    w = manifest.workload
    model, model_is_preset = None, False
    if w.model:
        try:
            model = shapes.get_model(w.model)
            model_is_preset = True
        except MoeprofError as exc:
            notes["model"] = str(exc)
    if w.shape is not None:
        dims = w.shape.to_json()
        if model is None:
            model = shapes.MoeModel(name=w.model or "capture", num_moe_layers=1, num_layers=1, **dims)
            notes["model"] = (f"model {w.model or '(unnamed)'!r} is not a known preset: the per-layer cost uses the "
                              f"capture's layer dims; whole-model weight memory and KV-cache room are skipped")
        elif any(getattr(model, k) != v for k, v in dims.items()):
            # The capture ran a reshaped layer: trust the dims that ran.
            model = dataclasses.replace(model, name=f"{model.name} (capture dims)", **dims)
    if model is None and "model" not in notes:
        notes["model"] = "manifest names no model and no layer dims"
    return Subject(gpu=gpu, model=model, tp=int(w.tp), ep=int(w.ep), routing=w.routing, notes=notes,
                   model_is_preset=model_is_preset)


def point_costs(subject: Subject, points: list[tuple[str, int]]) -> tuple[pd.DataFrame, str | None]:
    """Analytical cost per (format, batch): FLOPs, bytes, predicted bound. Note says why if empty."""
    if subject.gpu is None or subject.model is None:
        return pd.DataFrame(), subject.why_not
    from moeprof.roofline import cost, formats

    rows, skipped = [], []
    for fmt, batch in points:
        try:
            c = cost.layer_cost(subject.model, fmt, subject.gpu, int(batch), tp=subject.tp, ep=subject.ep,
                                routing=subject.routing)
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
            "bytes_as_built": c.bytes_as_built, "gemm1_bytes_as_built": c.gemm1_bytes_as_built,
            "gemm2_bytes_as_built": c.gemm2_bytes_as_built, "t_as_built_spec_s": c.t_as_built_s,
            # the GEMMs' weight traffic as built (> the packed weight bytes where prefill dequantizes)
            "weight_bytes_as_built": c.gemm1_weight_bytes_as_built + c.gemm2_weight_bytes_as_built,
            "t_compute_spec_s": c.t_compute_s, "hbm_bytes_per_s_spec": c.hbm_bytes_per_s,
            "gemm1_dequant_bytes_as_built": c.gemm1_weight_bytes_as_built - c.gemm1_weight_bytes,
            "gemm2_dequant_bytes_as_built": c.gemm2_weight_bytes_as_built - c.gemm2_weight_bytes,
            # what the prefill dequantization pass adds where it runs (MX formats)
            "gemm1_dequant_bytes_if_run": c.gemm1_weight_bytes_dequant - c.gemm1_weight_bytes,
            "gemm2_dequant_bytes_if_run": c.gemm2_weight_bytes_dequant - c.gemm2_weight_bytes,
        })
    note = ("; ".join(sorted(set(skipped))) or None) if skipped else None
    return pd.DataFrame(rows), note


def memory(subject: Subject, formats: list[str]) -> tuple[pd.DataFrame, str | None]:
    """Weight bytes per GPU and HBM left for the KV cache, per format (known preset models only)."""
    if subject.gpu is None or subject.model is None:
        return pd.DataFrame(), subject.why_not
    if not subject.model_is_preset:
        return pd.DataFrame(), f"{subject.model.name!r} is not a known model preset: its layer count is unknown"
    from moeprof.roofline import cost

    rows = []
    for fmt in formats:
        try:
            plan = cost.memory_plan(subject.model, fmt, subject.gpu, tp=subject.tp, ep=subject.ep)
        except MoeprofError:
            continue
        try:
            min_tp = cost.min_tp_to_fit(subject.model, fmt, subject.gpu) if not plan.fits else subject.tp
        except MoeprofError:
            min_tp = None
        rows.append({"format": fmt, "weight_bytes_per_gpu": plan.weight_bytes_per_gpu,
                     "kv_free_bytes_per_gpu": plan.free_bytes_per_gpu, "hbm_bytes": plan.hbm_bytes,
                     "reserve_fraction": plan.reserve_fraction, "fits": plan.fits, "tp": subject.tp,
                     "ep": subject.ep, "min_tp_to_fit": min_tp, "num_moe_layers": subject.model.num_moe_layers})
    return pd.DataFrame(rows), None if rows else "cost model knows none of the formats"


def model_times(subject: Subject, formats: list[str]) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Roofline time of the layer per format on the crossover grid; formats the model cannot cost get a note."""
    if subject.gpu is None or subject.model is None:
        return {}, {}
    from moeprof.roofline import cost

    grid = crossover.doubling_grid(*PREDICTED_CROSSOVER_RANGE)
    times: dict[str, list[float]] = {}
    notes: dict[str, str] = {}
    for fmt in formats:
        try:
            times[fmt] = [cost.layer_cost(subject.model, fmt, subject.gpu, b, tp=subject.tp, ep=subject.ep,
                                          routing=subject.routing).t_roofline_s for b in grid]
        except MoeprofError as exc:
            notes[fmt] = str(exc)
    return times, notes


def expectations(manifest: Manifest, points: list[tuple[str, int]]) -> Expectations:
    """Everything the model expects for these (format, batch) points of the capture, resolved once."""
    subject = resolve(manifest)
    formats = sorted({f for f, _ in points})
    costs, cost_note = point_costs(subject, points)
    mem, mem_note = memory(subject, formats)
    times, time_notes = model_times(subject, formats)
    return Expectations(subject, costs, cost_note, mem, mem_note, times, time_notes)


def dequant_as_seen(costs: pd.DataFrame, kernels: pd.DataFrame) -> pd.DataFrame:
    """The as-built bound counts a prefill dequantization pass exactly at the points where the capture shows
    one ran (a kernel named *dequant* at that format and batch), whatever the model assumed there
    (roofline.cost.AS_BUILT_DEQUANT): a capture made before the kernels dequantized, or after they stopped,
    keeps the packed-weight traffic; one that ran the fallback counts the pass (DEQUANT_PASS)."""
    need = ("gemm1_dequant_bytes_as_built", "gemm1_dequant_bytes_if_run")
    if costs.empty or any(c not in costs for c in need) or "kernel_name" not in kernels:
        return costs
    hit = kernels.loc[kernels["kernel_name"].astype(str).str.contains("dequant", na=False)
                      & kernels["batch"].notna(), ["format", "batch"]].drop_duplicates()
    ran = set(zip(hit["format"], hit["batch"].astype("int64")))
    out = costs.copy()
    seen = pd.Series([(f, int(b)) in ran for f, b in zip(out["format"], out["batch"])], index=out.index)
    change = pd.Series(False, index=out.index)
    for g in ("gemm1", "gemm2"):
        want = out[f"{g}_dequant_bytes_if_run"].where(seen, 0.0)
        delta = want - out[f"{g}_dequant_bytes_as_built"]
        moved = delta != 0
        if moved.any():
            out.loc[moved, f"{g}_bytes_as_built"] += delta[moved]
            out.loc[moved, "bytes_as_built"] += delta[moved]
            out.loc[moved, "weight_bytes_as_built"] += delta[moved]
            out.loc[moved, f"{g}_dequant_bytes_as_built"] = want[moved]
            change |= moved
    if change.any():
        out.loc[change, "t_as_built_spec_s"] = np.maximum(out.loc[change, "t_compute_spec_s"],
                                                          out.loc[change, "bytes_as_built"]
                                                          / out.loc[change, "hbm_bytes_per_s_spec"])
    return out
