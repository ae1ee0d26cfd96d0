"""Markdown rendering of an analysis and of a diff (for PRs, issues, docs)."""

from __future__ import annotations

from moeprof.analysis.diff import DiffResult
from moeprof.analysis.pipeline import Analysis
from moeprof.analysis.sentences import fmt_num, fmt_time, heading
from moeprof.reports.terminal import interval_cell, mma_cell, point_cell, role_rows, speedup_cell, winner_cell


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def per_batch_table(a: Analysis) -> str:
    """One row per batch: winner, speedup, each format's bound / % of roofline / MMA path, the deciding reason."""
    pair = a.summary.get("pair") or []
    measured = sorted(a.layer["format"].unique()) if not a.layer.empty else []
    formats = [f for f in pair if f in measured] + [f for f in measured if f not in pair]
    rows = a.layer.set_index(["format", "batch"])
    body = [[str(v.batch), winner_cell(v), speedup_cell(v)]
            + [point_cell(rows.loc[(f, v.batch)] if (f, v.batch) in rows.index else None) for f in formats]
            + [v.deciding_reason] for v in a.verdicts]
    return _table(["batch", "winner", "speedup"] + [f"{f} (bound, % roofline, MMA)" for f in formats]
                  + ["deciding reason"], body)


def analysis_markdown(a: Analysis) -> str:
    w = a.capture.workload
    out = [f"# moeprof analysis: {w.get('model', 'workload')} on {a.gpu_label}", "",
           f"Capture `{a.capture.path}`; kernel times from {a.timing_collector or 'n/a'}.", "",
           f"Peaks: tensor {a.peaks.tensor_source}; DRAM {a.peaks.dram_source}.", ""]
    out += [f"> note: {n}" for n in a.notes]
    s = a.summary
    out += ["", "## Verdict", "", f"**{s.get('answer')}**", ""] + [f"- {x}" for x in s.get("lines", [])]
    if a.verdicts:
        out += ["", per_batch_table(a)]
    for v in a.verdicts:
        h = heading(v)
        out += ["", f"### B{h[1:]}", ""]
        out += [f"- {r}" for r in v.reasons]
    out += ["", "## Layer calls", ""]
    rows = [[str(r["format"]), str(r["batch"]), fmt_time(r["layer_time_median_ns"]),
             f"{fmt_time(r.get('layer_time_p10_ns'))}–{fmt_time(r.get('layer_time_p90_ns'))}",
             fmt_num(r.get("tokens_per_s"), "{:,.0f}"), fmt_num(r.get("pct_of_roofline"), suffix="%"),
             fmt_num(r.get("dram_bw_pct_of_peak"), suffix="%"), fmt_num(r.get("tensor_pct_of_peak"), suffix="%"),
             fmt_num(r.get("tensor_pipe_active_pct"), suffix="%"), str(r.get("bound_measured") or "n/a"),
             mma_cell(r), fmt_num(r.get("padding_pct"), suffix="%"),
             fmt_num(r.get("outside_gemm_pct"), suffix="%")] for _, r in a.layer.iterrows()]
    out.append(_table(["format", "batch", "time", "p10–p90", "tokens/s", "GEMM % roofline", "DRAM % peak",
                       "tensor % peak (useful)", "tensor pipe active", "bound (measured)", "MMA path",
                       "padding (% of executed)", "outside GEMMs"], rows))
    if not a.roles.empty:
        present, rows = role_rows(a)
        out += ["", "## Time by role", "", _table(["format", "batch"] + present, rows)]
    return "\n".join(out) + "\n"


def diff_markdown(d: DiffResult) -> str:
    out = ["# moeprof diff", "", f"A: `{d.label_a}`  ", f"B: `{d.label_b}`", ""]
    out += [f"> incomparable (forced): {e}" for e in d.errors]
    out += [f"> warning: {w}" for w in d.warnings]
    out += ["", ", ".join(f"{k}: {v}" for k, v in d.counts().items()), ""]
    rows = [[r["status"], str(r["format"]), str(r["batch"]), str(r["role"]), fmt_time(r["time_a_ns"]),
             fmt_time(r["time_b_ns"]), fmt_num(r["change_pct"], "{:+.1f}", "%"), interval_cell(r),
             fmt_num(r.get("threshold_pct"), "{:.1f}", "%"), f"{r['n_a']}/{r['n_b']}"] for _, r in d.rows.iterrows()]
    out.append(_table(["status", "format", "batch", "role", "A", "B", "change", "interval", "threshold", "n A/B"],
                      rows))
    out += ["", f"Decision rule: {d.decision_rule}"]
    return "\n".join(out) + "\n"
