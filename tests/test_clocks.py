"""NVML clocks beside the CUDA-event times: the sampler's summary, the points.csv columns through the
analysis (validated, per point, a verdict reason), on a real H200 capture (tests/data/clock_capture_h200:
every point but fp8 at batch 16 ran under power capping)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from moeprof.capture_folder import POINT_CLOCK_COLUMNS
from moeprof.cli import main
from moeprof.profiler import clocks

CAPTURE = Path(__file__).resolve().parent / "data" / "clock_capture_h200"


def test_summary_medians_and_shares():
    s = [clocks.Sample(0.0, 1980.0, 600.0, 0), clocks.Sample(0.1, 1900.0, 700.0, clocks.SW_POWER_CAP),
         clocks.Sample(0.2, 1700.0, 690.0, clocks.SW_POWER_CAP | clocks.SW_THERMAL_SLOWDOWN),
         clocks.Sample(0.3, 1950.0, 650.0, clocks.HW_POWER_BRAKE_SLOWDOWN)]
    got = clocks.summarize(s)
    # by hand: clocks sorted 1700 1900 1950 1980 -> median 1925; powers 600 650 690 700 -> 670
    assert (got.sm_clock_median_mhz, got.sm_clock_min_mhz, got.power_median_w) == (1925.0, 1700.0, 670.0)
    assert got.power_capped_fraction == 0.75 and got.thermal_slowdown_fraction == 0.25 and got.samples == 4
    assert clocks.summarize([]) is None
    # an idle or application-clock reason is no power or thermal limit
    idle = clocks.summarize([clocks.Sample(0.0, 345.0, 80.0, 0x1 | 0x2)])
    assert idle.power_capped_fraction == 0.0 and idle.thermal_slowdown_fraction == 0.0


def test_sampler_reads_on_a_thread_and_without_nvml_records_nothing(monkeypatch):
    reads = iter([(1980.0, 500.0, 0), (1800.0, 699.0, clocks.SW_POWER_CAP)] + [(1800.0, 699.0, clocks.SW_POWER_CAP)] * 10**6)

    class FakeNvml:
        def __init__(self, uuid, index):
            pass

        def read(self):
            c, w, r = next(reads)
            return clocks.Sample(0.0, c, w, r)

    monkeypatch.setattr(clocks, "_Nvml", FakeNvml)
    monkeypatch.setattr(clocks, "_device_ids", lambda device: (None, 0))
    with clocks.ClockSampler(period_s=0.0005) as cs:
        import time

        t_end = time.perf_counter() + 0.05
        while len(cs.samples) < 3 and time.perf_counter() < t_end:
            time.sleep(0.001)
    n = len(cs.samples)
    assert n >= 3 and cs.summary.samples == n
    assert cs.summary.sm_clock_min_mhz == 1800.0 and cs.summary.power_capped_fraction == (n - 1) / n

    def no_nvml(uuid, index):
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    monkeypatch.setattr(clocks, "_Nvml", no_nvml)
    with clocks.ClockSampler() as cs:
        pass
    assert cs.summary is None and cs.samples == []


def _named_batches(note: str, fmt: str, measured: list[int]) -> set[int]:
    """The batches a note names for fmt: "16, 64" or "64–16384" (every measured batch from 64 to 16384)."""
    m = re.search(rf"\b{fmt} at ([0-9–, ]+)", note)
    if not m:
        return set()
    named: set[int] = set()
    for item in m.group(1).strip(" ,").split(", "):
        lo, _, hi = item.partition("–")
        named |= {b for b in measured if int(lo) <= b <= int(hi or lo)}
    return named


def _per_point(path: Path) -> dict[tuple[str, int], dict[str, float]]:
    """points.csv's clock values per point, read with the csv module (each point's rows carry one value)."""
    out: dict[tuple[str, int], dict[str, float]] = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            vals = {c: float(r[c]) for c in POINT_CLOCK_COLUMNS}
            key = (r["format"], int(r["batch"]))
            assert out.setdefault(key, vals) == vals, key
    return out


def _analyze(d: Path, capsys) -> dict:
    rc = main(["analyze", str(d), "-f", "json"])
    out = capsys.readouterr().out
    assert rc == 0
    return json.loads(out)


def test_real_capture_clocks_reach_the_layer_table_and_the_verdict(capsys):
    want = _per_point(CAPTURE / "points.csv")
    assert len(want) == 6
    doc = _analyze(CAPTURE, capsys)
    max_mhz = json.loads((CAPTURE / "manifest.json").read_text())["gpu"]["sm_clock_max_mhz"]
    for r in doc["layer"]:
        w = want[(r["format"], r["batch"])]
        for c in POINT_CLOCK_COLUMNS:
            assert r[c] == pytest.approx(w[c]), (r["format"], r["batch"], c)
        assert 0 < r["sm_clock_median_mhz"] <= max_mhz
    for v in doc["verdicts"]:
        line = next(x for x in v["reasons"] if x.startswith("Clocks while timed (NVML):"))
        for fmt in (v["winner"], v["runner_up"]):
            limited = want[(fmt, v["batch"])]["power_capped_fraction"] >= 0.5
            assert (f"{fmt} ran the card at its power limit" in line) == limited, line
            assert f"{want[(fmt, v['batch'])]['sm_clock_median_mhz']:.0f} MHz" in line
    # one note names the power-limited points, per format
    note = next(n for n in doc["notes"] if n.startswith("power limit:"))
    for fmt in ("fp8", "mxfp4"):
        capped = {b for (f, b), w in want.items() if f == fmt and w["power_capped_fraction"] >= 0.5}
        assert _named_batches(note, fmt, sorted(b for (f, b) in want if f == fmt)) == capped, note
    # fp8 at 16 was the one point not capped
    v16 = next(v for v in doc["verdicts"] if v["batch"] == 16)
    assert "fp8: SM clock median 1980 MHz" in " ".join(v16["reasons"]) and "not power-capped" in " ".join(v16["reasons"])


def test_power_note_names_runs_of_the_sweep_and_gaps_apart(tmp_path, capsys):
    # mxfp4 capped at 16 and 256 but not at 64 (edited copy of the real capture): two separate batches;
    # fp8 capped at all three: one run over the sweep
    d = tmp_path / "cap"
    shutil.copytree(CAPTURE, d)
    rows = list(csv.DictReader(open(d / "points.csv", newline="")))
    for r in rows:
        r["power_capped_fraction"] = "0.0" if (r["format"], r["batch"]) == ("mxfp4", "64") else "1.0"
    with open(d / "points.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    note = next(n for n in _analyze(d, capsys)["notes"] if n.startswith("power limit:"))
    assert "mxfp4 at 16, 256" in note and "fp8 at 16–256" in note, note
    assert _named_batches(note, "mxfp4", [16, 64, 256]) == {16, 256}
    assert _named_batches(note, "fp8", [16, 64, 256]) == {16, 64, 256}


def test_shipped_capture_power_note_matches_its_points(capsys):
    # the shipped H200 capture was timed after sustained calls (manifest), and its note names exactly the
    # points whose NVML samples were capped at least half the time
    from moeprof.analysis.load import example_capture_path

    src = example_capture_path()
    manifest = json.loads((src / "manifest.json").read_text())
    assert manifest["collectors"]["events"]["options"]["sustain_s"] == 2
    want = _per_point(src / "points.csv")
    doc = _analyze(src, capsys)
    note = next(n for n in doc["notes"] if n.startswith("power limit:"))
    for fmt in sorted({f for f, _ in want}):
        capped = {b for (f, b), w in want.items() if f == fmt and w["power_capped_fraction"] >= 0.5}
        assert _named_batches(note, fmt, sorted(b for (f, b) in want if f == fmt)) == capped, (fmt, note)
    # every table and chart that shows these times says how they were taken
    assert {r["layer_time_source"] for r in doc["layer"]} == {
        "points.csv (CUDA events after 2 s of back-to-back calls)"}


def test_unsound_clock_values_are_set_to_na_and_named(tmp_path, capsys):
    d = tmp_path / "cap"
    shutil.copytree(CAPTURE, d)
    rows = list(csv.DictReader(open(d / "points.csv", newline="")))
    for r in rows:
        if r["format"] == "mxfp4" and r["batch"] == "64":
            r["sm_clock_median_mhz"] = "0"          # a failed read, not a clock
            r["power_capped_fraction"] = "1.5"      # not a share
        if r["format"] == "fp8" and r["batch"] == "256":
            r["power_median_w"] = "-5"
    with open(d / "points.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    doc = _analyze(d, capsys)
    reasons = " | ".join(x["reason"] for x in doc["dropped"])
    assert "sm_clock_median_mhz not a positive number" in reasons
    assert "power_capped_fraction not a share within [0, 1]" in reasons
    assert "power_median_w negative" in reasons
    row = next(r for r in doc["layer"] if r["format"] == "mxfp4" and r["batch"] == 64)
    assert row["sm_clock_median_mhz"] is None and row["power_capped_fraction"] is None
    assert row["repeats"] == 20    # the times stay
    v64 = next(v for v in doc["verdicts"] if v["batch"] == 64)
    line = next(x for x in v64["reasons"] if x.startswith("Clocks while timed"))
    assert "mxfp4: not recorded" in line and "mxfp4 ran the card" not in line


def test_captures_without_clock_columns_get_no_clock_reason(capsys):
    from moeprof.analysis.load import example_capture_path

    doc = _analyze(example_capture_path().parent / "example_capture_h100", capsys)
    assert doc["verdicts"]
    assert not any(x.startswith("Clocks while timed") for v in doc["verdicts"] for x in v["reasons"])
    assert not any(n.startswith("power limit:") for n in doc["notes"])


@pytest.mark.parametrize("value", ["-1", "nan", "601"])
def test_sustain_seconds_out_of_range_are_refused_in_one_line(tmp_path, capsys, value):
    rc = main(["capture", "-f", "fp8", "-b", "16", "--sustain-s", value, "-o", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2 and "--sustain-s must be between 0 and 600 seconds" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


SUSTAIN = Path(__file__).resolve().parent / "data" / "clock_sustain_h200"


def test_diff_names_points_whose_power_state_differs():
    """The same points in a burst (A) and after 3 s of sustained calls (B), run 94: diff warns that the
    timing differs and names each point where only one capture ran the card at its power limit."""
    from moeprof.analysis.diff import diff
    from moeprof.analysis.load import load_capture

    a, b = load_capture(SUSTAIN / "burst"), load_capture(SUSTAIN / "sustained")
    want_a, want_b = _per_point(SUSTAIN / "burst" / "points.csv"), _per_point(SUSTAIN / "sustained" / "points.csv")
    d = diff(a, b)
    assert any("--sustain-s 0 vs 3" in w for w in d.warnings)
    for key in want_a:
        la, lb = (w[key]["power_capped_fraction"] >= 0.5 for w in (want_a, want_b))
        named = any(w.startswith(f"{key[0]} at {key[1]}: the card was at its power limit") for w in d.warnings)
        assert named == (la != lb), key
        row = d.rows[(d.rows["format"] == key[0]) & (d.rows["batch"] == key[1]) & (d.rows["role"] == "layer")].iloc[0]
        assert row["sm_clock_a_mhz"] == want_a[key]["sm_clock_median_mhz"]
        assert row["sm_clock_b_mhz"] == want_b[key]["sm_clock_median_mhz"]
    # a capture against itself: no power-state warning
    assert not any("power limit" in w or "sustain" in w for w in diff(b, b).warnings)


def test_explain_layer_table_shows_the_clocks_only_where_recorded(capsys):
    from moeprof.analysis.load import example_capture_path

    assert main(["analyze", str(CAPTURE), "--explain"]) == 0
    out = capsys.readouterr().out
    assert "SM MHz" in out
    want = _per_point(CAPTURE / "points.csv")
    for (fmt, batch), w in want.items():
        row = next(ln for ln in out.splitlines() if ln.split()[:2] == [fmt, str(batch)] and "µs" in ln)
        assert row.split()[-2:] == [f"{w['sm_clock_median_mhz']:.0f}", f"{w['power_capped_fraction'] * 100:.0f}%"], row
    assert main(["analyze", str(example_capture_path().parent / "example_capture_h100"), "--explain"]) == 0
    assert "SM MHz" not in capsys.readouterr().out


@pytest.mark.parametrize("stored, want", [(3, 3.0), (0.5, 0.5), (1e9, 0.0), (-1, 0.0), (float("nan"), 0.0),
                                          (True, 0.0), ("3", 0.0), (None, 0.0)])
def test_resume_takes_a_stored_sustain_only_within_the_bound(stored, want):
    from moeprof.profiler.capture import stored_sustain_s

    assert stored_sustain_s(stored, 0.0) == want
