"""CLI conventions and terminal layout: --version and -h everywhere, flags shown as flags, one-line usage
errors, defaults in one place, output readable at 80 and 120 columns, one screen of verdict, ties as ties.

Expected values come from elsewhere than the output under test: the version from pyproject.toml, winners
and speedups from points.csv with pandas, roofline ties and crossovers from the cost model directly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from moeprof.cli import app, defaults, main

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "moeprof" / "data" / "example_capture"
COMMANDS = ["analyze", "diff", "capture", "roofline", "build-kernels"]


def run(argv, capsys):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _click_command():
    from moeprof.cli import _register
    from typer.main import get_command

    _register()
    return get_command(app)


# ------------------------------------------------------------------------------------------------
# --version, -h, flags, usage errors, defaults

@pytest.mark.parametrize("prefix", [[]] + [[c] for c in COMMANDS])
def test_version_everywhere(prefix, capsys):
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    rc, out, err = run([*prefix, "--version"], capsys)
    assert (rc, out.strip(), err) == (0, f"moeprof {version}", "")


@pytest.mark.parametrize("prefix", [[]] + [[c] for c in COMMANDS])
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_short_and_long(prefix, flag, capsys):
    rc, out, _ = run([*prefix, flag], capsys)
    assert rc == 0 and out.startswith("Usage: ") and "-h, --help" in out
    if "Commands:" in out:  # each command's one-line summary whole, not cut with "..."
        assert not any(ln.rstrip().endswith("...") for ln in out.split("Commands:", 1)[1].splitlines())


def test_boolean_options_are_flags(capsys):
    """Every boolean option is a flag, and its help line shows no value after it."""
    group = _click_command()
    seen = 0
    for name in COMMANDS:
        cmd = group.commands[name]
        rc, out, _ = run([name, "--help"], capsys)
        assert rc == 0
        for p in cmd.params:
            if getattr(p, "is_flag", False) and not p.hidden:
                seen += 1
                # The option column of its help line holds its names and nothing else (no value, no type).
                line = next(ln for ln in out.splitlines() if ln.strip().startswith(tuple(p.opts)))
                names = line.strip().split("  ")[0].split(", ")
                assert set(names) == set(p.opts) | set(p.secondary_opts), f"{name}: {line!r}"
                assert "<bool>" not in line and "BOOLEAN" not in line
    assert seen >= 5  # --json, --list, --explain, --force, --all, --resume, --quiet, --version
    # A flag takes no value: `--json true` is a usage error, `--json` works.
    rc, out, err = run(["roofline", "--json", "-b", "1"], capsys)
    assert rc == 0 and json.loads(out)["batches"] == [1]
    rc, out, err = run(["roofline", "--json", "true"], capsys)
    assert rc == 2 and out == ""


@pytest.mark.parametrize("argv, words", [
    (["roofline", "--json", "true"], "unexpected extra argument"),
    (["analyze", "--bogus"], "no such option: --bogus"),
    (["diff", str(SHIPPED)], "missing argument"),
    (["capture", "--repeats", "many"], "'--repeats'"),
    (["nosuchcommand"], "no such command"),
    (["-x"], "no such option: -x"),
])
def test_usage_errors_are_one_line(argv, words, capsys):
    rc, out, err = run(argv, capsys)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("moeprof: error: ")
    assert words in err.lower() and "moeprof " in err.split("(see")[-1]
    assert "Traceback" not in err and "Usage:" not in err


def test_defaults_agree_with_the_library():
    from moeprof.analysis.diff import DiffOptions
    from moeprof.reports.outputs import RENDERERS
    from moeprof.roofline.bound import DEFAULT_BATCHES, parse_batches
    from moeprof.roofline.formats import DEFAULT_FORMATS

    assert defaults.FORMATS.split(",") == list(DEFAULT_FORMATS)
    assert parse_batches(defaults.ROOFLINE_BATCHES) == list(DEFAULT_BATCHES)
    o = DiffOptions()
    assert (defaults.ALPHA, defaults.MIN_EFFECT, defaults.NOISE_FLOOR, defaults.MIN_ABS_US * 1e3) == (
        o.alpha, o.min_effect, o.noise_floor, o.min_abs_ns)
    assert set(defaults.OUTPUT_FORMATS) == set(RENDERERS["analysis"]) == set(RENDERERS["diff"])


# ------------------------------------------------------------------------------------------------
# the shipped capture at 80 and 120 columns

def _lines(text: str) -> list[str]:
    return text.splitlines()


@pytest.fixture(scope="module")
def shipped_medians() -> pd.DataFrame:
    """Median layer time per (format, batch) straight from points.csv."""
    pts = pd.read_csv(SHIPPED / "points.csv")
    return pts.groupby(["format", "batch"])["layer_time_ns"].median().unstack("format")


@pytest.mark.parametrize("columns", [80, 120])
def test_analyze_one_screen_no_cut_cells(columns, monkeypatch, capsys, shipped_medians):
    monkeypatch.setenv("COLUMNS", str(columns))
    rc, out, err = run(["analyze", str(SHIPPED)], capsys)
    assert rc == 0, err
    lines = _lines(out)
    assert len(lines) <= 45, f"{len(lines)} lines at {columns} columns"
    assert max(len(ln) for ln in lines) <= columns
    assert "…" not in out
    # Each batch's row: winner and speedup as points.csv says (fp8 vs mxfp4: the pair the summary answers).
    rows = {int(m[1]): (m[2], m[3]) for m in re.finditer(r"^\s*(\d+)\s+(fp8|mxfp4)\s+(\d+\.\d\d)x", out, re.M)}
    t = shipped_medians
    expected = {int(b): ("fp8" if t.loc[b, "fp8"] < t.loc[b, "mxfp4"] else "mxfp4",
                         f"{max(t.loc[b, 'fp8'], t.loc[b, 'mxfp4']) / min(t.loc[b, 'fp8'], t.loc[b, 'mxfp4']):.2f}")
                for b in t.index}
    assert rows == expected
    # Every batch has its deciding reason on this screen, and the units are spelled one way.
    assert len(re.findall(r"roofline|latency/issue-bound|outside them", out)) >= len(expected)
    assert not re.search(r"\d us\b", out)


def test_analyze_explain_keeps_every_reason(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    rc, out, _ = run(["analyze", str(SHIPPED), "--explain"], capsys)
    assert (rc, out) == (0, run(["analyze", str(SHIPPED), "--verbose"], capsys)[1])  # one option, two names
    assert rc == 0 and "…" not in out
    assert max(len(ln) for ln in _lines(out)) <= 80
    rc, js, _ = run(["analyze", str(SHIPPED), "-f", "json"], capsys)
    doc = json.loads(js)
    flat = " ".join(out.replace("│", " ").replace("•", " ").split())
    for v in doc["verdicts"]:
        assert len(v["reasons"]) >= 12
        for reason in v["reasons"]:
            assert " ".join(reason.split()) in flat
    rc, md, _ = run(["analyze", str(SHIPPED), "-f", "markdown"], capsys)
    assert all(f"- {r}" in md for v in doc["verdicts"] for r in v["reasons"])


@pytest.mark.parametrize("columns", [80, 120])
def test_diff_fits_without_cut_cells(columns, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", str(columns))
    rc, out, err = run(["diff", str(SHIPPED), str(SHIPPED)], capsys)
    assert rc == 0, err
    assert "…" not in out and max(len(ln) for ln in _lines(out)) <= columns
    # One row per (format, batch, role) measured, each on one line, its status a whole word.
    pts = pd.read_csv(SHIPPED / "points.csv")
    n_points = len(pts[["format", "batch"]].drop_duplicates())
    body = [ln for ln in _lines(out) if re.match(r"^(unchanged|faster|slower)\s+(bf16|fp8|mxfp4)\s+\d+\s+\w+", ln)]
    assert len(body) > n_points  # at least the layer row and one role per point
    assert sum(ln.split()[3] == "layer" for ln in body) == n_points


def test_role_table_cells_stay_on_one_line_at_80(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    rc, out, _ = run(["analyze", str(SHIPPED), "--explain"], capsys)
    section = out.split("Time by role", 1)[1].split("Verdict", 1)[0]
    rows = [ln for ln in _lines(section) if re.match(r"^(bf16|fp8|mxfp4)\s+\d+\s", ln)]
    pts = pd.read_csv(SHIPPED / "points.csv")
    assert len(rows) == len(pts[["format", "batch"]].drop_duplicates())  # no row wrapped onto a second line


# ------------------------------------------------------------------------------------------------
# roofline: ties, pair-named crossovers, µs, 80 columns

TIE_ARGS = ["-m", "gpt-oss-20b", "-g", "h100", "-f", "fp8,mxfp4,mxfp4-w4a8", "-b", "1,64,4096", "--tp", "2"]


def _t_us(fmt: str, batch: int) -> float:
    from moeprof.roofline.cost import layer_cost

    return layer_cost("gpt-oss-20b", fmt, "h100", batch, tp=2).t_roofline_s * 1e6


def test_roofline_ties_are_ties(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    rc, out, err = run(["roofline", *TIE_ARGS], capsys)
    assert rc == 0, err
    assert "…" not in out and max(len(ln) for ln in _lines(out)) <= 80
    assert not re.search(r"\d us\b", out) and "1.00x" not in out
    text = " ".join(out.replace("│", " ").split())
    # The cost model itself: at 4096 FP8 and MXFP4-W4A8 are within 1%, MXFP4 far behind.
    t8, t4, tw = _t_us("fp8", 4096), _t_us("mxfp4", 4096), _t_us("mxfp4-w4a8", 4096)
    assert abs(t8 - tw) <= 0.01 * min(t8, tw) and t4 > 1.01 * max(t8, tw)
    assert f"FP8 and MXFP4-W4A8 tie for fastest at batch 4096 (within 1% of each other), {t4 / min(t8, tw):.2f}x " \
           f"faster than MXFP4" in text
    # At batch 1 and 64 MXFP4-W4A8 and MXFP4 tie, both ahead of FP8.
    w, m, f = _t_us("mxfp4-w4a8", 1), _t_us("mxfp4", 1), _t_us("fp8", 1)
    assert abs(w - m) <= 0.01 * min(w, m) and f > 1.01 * max(w, m)
    assert "MXFP4-W4A8 and MXFP4 tie for fastest at batch 1–64" in text


def test_roofline_crossover_named_with_its_pair(capsys):
    rc, out, _ = run(["roofline", *TIE_ARGS, "--json"], capsys)
    doc = json.loads(out)
    # The first integer batch where FP8's bound is below MXFP4's, from the cost model by scanning.
    first = next(b for b in range(65, 4097) if _t_us("fp8", b) < _t_us("mxfp4", b))
    # ... bracketed by the table's batches 64 and 4096 that the sweep evaluated.
    line = f"Crossover: FP8/MXFP4 at batch {first} (bisection between 64 and 4096): MXFP4 faster below, FP8 from there."
    assert line in doc["summary"]
    # ... on its own line, not appended to a sentence about another format.
    assert not any("crossover" in s.lower() and s != line for s in doc["summary"])


def test_roofline_json_numbers_unchanged_by_the_report(capsys):
    """The report's JSON holds the same table the bound module computes on its own."""
    from moeprof.roofline import bound

    rc, out, _ = run(["roofline", "--json", "-b", "1,512,16384"], capsys)
    doc = json.loads(out)
    table = bound.roofline_table("gpt-oss-120b", "h200", "bf16,fp8,mxfp4", [1, 512, 16384])
    def plain(df: pd.DataFrame) -> list[dict]:
        return json.loads(json.dumps(df.to_dict(orient="records"), default=float))
    assert doc["records"] == plain(table)
    assert doc["verdicts"] == plain(bound.verdicts(table))


def test_measured_tie_shown_as_tie():
    from moeprof.analysis.verdict import Verdict
    from moeprof.reports.terminal import speedup_cell

    assert speedup_cell(Verdict(16, "fp8", "mxfp4", 1.02, 0.4, False)) == "1.02x (n.s.)"
    assert speedup_cell(Verdict(16, "fp8", "mxfp4", 1.30, 1e-6, True)) == "1.30x"


def test_kernel_report_fits_80_columns(monkeypatch, capsys):
    """A program without labels: its kernel table fits a pipe; every kernel's calls are on its row."""
    capture = ROOT / "tests" / "data" / "grouped_mm_h200" / "A_fp8_nolabels"
    monkeypatch.setenv("COLUMNS", "80")
    rc, out, err = run(["analyze", str(capture)], capsys)
    assert rc == 0, err
    assert max(len(ln) for ln in _lines(out)) <= 80
    rc, js, _ = run(["analyze", str(capture), "-f", "json"], capsys)
    kernels = json.loads(js)["kernels"]
    rows = re.findall(r"^(route|sort|quant|gemm1|act|gemm2|combine|communication|other|set-up)\s+\S.*?\s(\d+)\s+"
                      r"\d+\.\d\d? [mµ]s", out, re.M)
    top = sorted(kernels, key=lambda k: -k["total_ns"])[:len(rows)]
    assert len(rows) >= 10 and [int(c) for _, c in rows] == [k["calls"] for k in top]


@pytest.mark.parametrize("run_name", ["tp2", "ep2"])
def test_cross_rank_view_fits_80_columns(run_name, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    rc, out, err = run(["analyze", str(ROOT / "tests" / "data" / "multi_gpu_h200" / run_name)], capsys)
    assert rc == 0, err
    assert "Across ranks:" in out and max(len(ln) for ln in _lines(out)) <= 80
    assert not re.search(r"\d us\b", out)
