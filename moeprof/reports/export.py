"""Machine-readable reports: JSON objects and CSV tables for `analyze` and `diff`."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import pandas as pd

from moeprof.analysis.diff import DiffResult
from moeprof.analysis.pipeline import Analysis


def json_safe(value: Any) -> Any:
    """JSON-safe: NaN/NA -> None, numpy scalars -> Python, containers recursively."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    if df is None or df.empty:
        return []
    out = df.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.CategoricalDtype):
            out[col] = out[col].astype(str)
    return [json_safe(r) for r in out.to_dict(orient="records")]


def analysis_dict(a: Analysis) -> dict[str, Any]:
    m = a.capture.manifest
    return json_safe({
        "capture": str(a.capture.path),
        "gpu": m.gpu.to_json(),
        "workload": m.workload.to_json(),
        "timing_collector": a.timing_collector,
        "peaks": {"sm_clock_hz": a.peaks.sm_clock_hz, "sm_count": a.peaks.sm_count,
                  "tensor_flop_per_s": a.peaks.tensor_flops_per_s, "tensor_source": a.peaks.tensor_source,
                  "dram_bytes_per_s": a.peaks.dram_bytes_per_s, "dram_source": a.peaks.dram_source},
        "verdicts": [v.as_record() for v in a.verdicts],
        "summary": a.summary,
        "layer": records(a.layer),
        "roles": records(a.roles),
        "memory": records(a.memory),
        "notes": a.notes,
        "dropped": [d.as_record() for d in a.dropped],
        "ranks": None if a.ranks is None else {
            "world_size": a.ranks.world_size, "ranks_present": a.ranks.ranks_present,
            "comparable": a.ranks.cross_rank, "layer": records(a.ranks.layer), "communication": records(a.ranks.comm),
            "notes": a.ranks.notes},
    })


def analysis_json(a: Analysis) -> str:
    return json.dumps(analysis_dict(a), indent=2)


def analysis_csv(a: Analysis) -> str:
    """One table: a 'layer' row per (format, batch) followed by its role rows (union of columns)."""
    layer = a.layer.assign(role="layer")
    roles = a.roles.copy()
    if not roles.empty:
        roles["role"] = roles["role"].astype(str)
    df = pd.concat([layer, roles], ignore_index=True, sort=False)
    lead = [c for c in ("format", "batch", "role") if c in df.columns]
    df = df[lead + [c for c in df.columns if c not in lead]]
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue()


def diff_dict(d: DiffResult) -> dict[str, Any]:
    o = d.options
    return json_safe({
        "a": d.label_a, "b": d.label_b,
        "comparable": not d.errors, "errors": d.errors, "warnings": d.warnings,
        "options": {"alpha": o.alpha, "min_effect": o.min_effect, "noise_floor": o.noise_floor,
                    "min_abs_ns": o.min_abs_ns, "resamples": o.resamples, "force": o.force},
        "decision_rule": d.decision_rule,
        "counts": d.counts(),
        "rows": records(d.rows),
    })


def diff_json(d: DiffResult) -> str:
    return json.dumps(diff_dict(d), indent=2)


def diff_csv(d: DiffResult) -> str:
    buf = io.StringIO()
    d.rows.to_csv(buf, index=False)
    return buf.getvalue()
