"""`moeprof analyze` and `moeprof diff` end to end on the real H200 probe capture."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from moeprof.cli import main

FIXTURE = str(Path(__file__).parent / "data" / "analysis_probe2")


def run(argv, capsys):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_analyze_json(capsys):
    rc, out, _ = run(["analyze", FIXTURE, "--format", "json"], capsys)
    assert rc == 0
    doc = json.loads(out)
    [v] = doc["verdicts"]
    assert {"batch", "winner", "speedup", "reasons"} <= set(v)
    # no points.csv rows here: layer time = the median over calls of the summed nsys kernel durations
    k = pd.read_csv(Path(FIXTURE) / "kernels.csv")
    k = k[(k["collector"] == "nsys") & (k["batch"] == 256)]
    med = k.groupby(["format", "repeat"])["duration_ns"].sum().groupby("format").median()
    assert v["batch"] == 256 and v["winner"] == med.idxmin() == "fp8"
    assert v["speedup"] == pytest.approx(med["bf16"] / med["fp8"], rel=1e-12)
    assert all(isinstance(r, str) for r in v["reasons"])
    assert doc["gpu"]["name"] == "NVIDIA H200"
    assert {r["role"] for r in doc["roles"]} == {"route", "gemm1", "act"}
    assert doc["layer"] and doc["summary"]["pair"] == ["bf16", "fp8"]
    assert "NaN" not in out


def test_analyze_table_markdown_csv(capsys):
    rc, out, _ = run(["analyze", FIXTURE], capsys)
    assert rc == 0 and "NVIDIA H200" in out and "Answer:" in out and "deciding reason" in " ".join(out.lower().split())
    rc, out, _ = run(["analyze", FIXTURE, "--explain"], capsys)
    assert rc == 0 and "Verdict" in out and "Time by role" in out
    rc, out, _ = run(["analyze", FIXTURE, "-f", "markdown"], capsys)
    assert rc == 0 and out.startswith("# moeprof analysis") and "| format | batch |" in out
    rc, out, _ = run(["analyze", FIXTURE, "-f", "csv"], capsys)
    df = pd.read_csv(io.StringIO(out))
    assert rc == 0 and set(df["role"]) == {"layer", "route", "gemm1", "act"}


def test_analyze_plots(tmp_path, capsys):
    rc, _, err = run(["analyze", FIXTURE, "-f", "json", "--plot", str(tmp_path / "plots")], capsys)
    assert rc == 0 and "wrote 6 charts" in err
    for stem in ("roofline", "breakdown", "speedup"):
        assert (tmp_path / "plots" / f"{stem}.png").stat().st_size > 1000
        assert "NVIDIA H200" in (tmp_path / "plots" / f"{stem}.svg").read_text()


@pytest.mark.parametrize("argv, msg", [
    (["analyze", "/nonexistent/capture"], "no such capture folder"),
    (["analyze", FIXTURE, "--format", "xml"], "unknown --format"),
    (["analyze", FIXTURE, "--pair", "fp8"], "--pair takes two formats"),
    (["analyze", FIXTURE, "--pair", "fp8,mxfp4"], "capture has formats bf16, fp8"),
    (["analyze", FIXTURE, "--timing", "torch"], "no kernel timings from collector 'torch'"),
])
def test_analyze_errors(argv, msg, capsys):
    rc, _, err = run(argv, capsys)
    assert rc == 2 and msg in err and err.count("\n") == 1


def test_analyze_default_capture(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MOEPROF_EXAMPLE_CAPTURE", FIXTURE)
    rc, out, _ = run(["analyze", "-f", "json"], capsys)
    assert rc == 0 and json.loads(out)["verdicts"]
    monkeypatch.setenv("MOEPROF_EXAMPLE_CAPTURE", str(tmp_path / "none"))
    rc, _, err = run(["analyze"], capsys)
    assert rc == 2 and "no example capture" in err


def test_diff_json_self(capsys):
    rc, out, _ = run(["diff", FIXTURE, FIXTURE, "--format", "json"], capsys)
    assert rc == 0
    doc = json.loads(out)
    assert doc["rows"] and {r["status"] for r in doc["rows"]} == {"unchanged"}
    assert doc["counts"]["unchanged"] == len(doc["rows"])
    rc, out, _ = run(["diff", FIXTURE, FIXTURE], capsys)
    assert rc == 0 and "unchanged: " in out
    rc, out, _ = run(["diff", FIXTURE, FIXTURE, "-f", "markdown"], capsys)
    assert rc == 0 and "| status |" in out


def test_diff_bad_option(capsys):
    rc, _, err = run(["diff", FIXTURE, FIXTURE, "--min-effect", "2"], capsys)
    assert rc == 2 and "--min-effect must be in [0, 1)" in err
