"""The numbers `moeprof analyze --format json`, `moeprof roofline --json` and `moeprof diff --format json`
print stay those of the project before its reorganization (commit aeb056a; tests/data/pinned/pins.py
says how the pins were made), and the headline numbers agree with a plain-pandas recomputation from
the capture's rows."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moeprof.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "moeprof" / "data" / "example_capture_h100"
SLICE = ROOT / "tests" / "data" / "example_slice"
PROBE2 = ROOT / "tests" / "data" / "analysis_probe2"
sys.path.insert(0, str(ROOT / "tests" / "data" / "pinned"))
import pins  # noqa: E402

PINNED = json.loads(gzip.open(ROOT / "tests" / "data" / "pinned" / "aeb056a.json.gz", "rt").read())


def _json(argv: list[str], capsys) -> dict:
    rc = main(argv)
    out = capsys.readouterr().out
    assert rc == 0
    return json.loads(out)


@pytest.mark.parametrize("name,folder", [("analyze_example", EXAMPLE), ("analyze_slice", SLICE),
                                         ("analyze_probe2", PROBE2)])
def test_analyze_numbers_unchanged(name, folder, capsys):
    got = pins.analysis_numbers(_json(["analyze", str(folder), "--format", "json"], capsys))
    bad = pins.compare(PINNED[name], got)
    assert not bad, f"{len(bad)} pinned numbers changed, e.g.:\n" + "\n".join(bad[:20])


def test_roofline_numbers_unchanged(capsys):
    got = pins.roofline_numbers(_json(["roofline", "--json"], capsys))
    bad = pins.compare(PINNED["roofline_default"], got)
    assert not bad, f"{len(bad)} pinned numbers changed, e.g.:\n" + "\n".join(bad[:20])


def test_diff_numbers_unchanged(capsys):
    got = pins.diff_numbers(_json(["diff", str(EXAMPLE), str(SLICE), "--format", "json"], capsys))
    bad = pins.compare(PINNED["diff_example_vs_slice"], got)
    assert not bad, f"{len(bad)} pinned numbers changed, e.g.:\n" + "\n".join(bad[:20])


def test_pins_can_fail():
    pinned = PINNED["roofline_default"]
    key = next(k for k, v in pinned.items() if isinstance(v, float) and v != 0)
    assert pins.compare(pinned, {**pinned, key: pinned[key] * (1 + 1e-6)}) == [
        f"{key}: {pinned[key] * (1 + 1e-6)!r} != pinned {pinned[key]!r}"]
    assert pins.compare(pinned, {k: v for k, v in pinned.items() if k != key})


# ---- independent: medians, speedups, winners and the measured crossover from points.csv -------------

def _medians(folder: Path) -> pd.DataFrame:
    p = pd.read_csv(folder / "points.csv")
    return p.groupby(["format", "batch"])["layer_time_ns"].median().unstack("format")


def test_example_medians_speedups_and_crossover_from_raw_rows(capsys):
    doc = _json(["analyze", str(EXAMPLE), "--format", "json"], capsys)
    med = _medians(EXAMPLE)
    layer = {(r["format"], r["batch"]): r for r in doc["layer"]}
    for (fmt, batch), r in layer.items():
        assert r["layer_time_median_ns"] == pytest.approx(med.loc[batch, fmt], rel=1e-12)
    a, b = doc["summary"]["pair"]
    assert (a, b) == ("fp8", "mxfp4")
    for v in doc["verdicts"]:
        ta, tb = med.loc[v["batch"], a], med.loc[v["batch"], b]
        assert v["winner"] == (a if ta < tb else b)
        assert v["speedup"] == pytest.approx(max(ta, tb) / min(ta, tb), rel=1e-12)
    # mxfp4 wins up to 256, fp8 from 1024: the data place the crossover in (256, 1024); the estimate
    # interpolates log(time ratio) linearly in log(batch) between those two measured batches.
    ratio = np.log(med[a] / med[b])
    assert (ratio.loc[:256] > 0).all() and (ratio.loc[1024:] < 0).all()
    r0, r1 = ratio.loc[256], ratio.loc[1024]
    estimate = float(np.exp(np.log(256) + r0 / (r0 - r1) * (np.log(1024) - np.log(256))))
    assert doc["summary"]["measured_crossover_batches"] == [pytest.approx(estimate, rel=1e-12)]
