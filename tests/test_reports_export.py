"""Exports: JSON has no NaN (null instead) and names the GPU; CSV and markdown carry every point."""

from __future__ import annotations

import json
from pathlib import Path

from moeprof.analysis.load import load_capture
from moeprof.analysis.pipeline import analyze
from moeprof.reports.export import analysis_csv, analysis_json
from moeprof.reports.markdown import analysis_markdown

FIXTURE = Path(__file__).parent / "data" / "analysis_probe2"


def test_exports_real_capture():
    a = analyze(load_capture(FIXTURE))
    doc = json.loads(analysis_json(a))  # json.loads rejects nothing, so check for NaN tokens below
    assert "NaN" not in analysis_json(a)
    route = next(r for r in doc["roles"] if r["role"] == "route" and r["format"] == "fp8")
    # no FP8/BF16 ops counted and this capture has no FP16-source / tensor-instruction counters: unknown, not "none"
    assert route["useful_flops"] is None and route["tensor_path"] == "n/a"
    assert doc["peaks"]["tensor_source"].startswith("ncu per-cycle peaks")
    assert analysis_csv(a).splitlines()[0].startswith("format,batch,role,")
    md = analysis_markdown(a)
    assert "NVIDIA H200" in md and "### Batch 256: fp8 " in md and "x faster than bf16" in md
