"""The numbers `moeprof analyze --format json` and `moeprof roofline --json` print, keyed by what they
describe (not by where the report puts them), so a change of report layout keeps the pins valid.

The pinned files were made with the project at commit aeb056a (before the capture contract, the
expectations and the crossover were given one home each) and must not move while the code is reorganized:

    git worktree add /tmp/moeprof-aeb056a aeb056a
    cd /tmp/moeprof-aeb056a
    PYTHONPATH=$PWD moeprof analyze --format json > /tmp/analyze.json
    PYTHONPATH=$PWD moeprof analyze tests/data/example_slice --format json > /tmp/slice.json
    PYTHONPATH=$PWD moeprof analyze tests/data/analysis_probe2 --format json > /tmp/probe2.json
    PYTHONPATH=$PWD moeprof roofline --json > /tmp/roofline.json
    PYTHONPATH=$PWD moeprof diff moeprof/data/example_capture_h100 tests/data/example_slice --format json > /tmp/diff.json
    cd -  # back in this project
    python tests/data/pinned/pins.py /tmp/analyze.json /tmp/slice.json /tmp/probe2.json /tmp/roofline.json \
        /tmp/diff.json

A deliberate change of a number (a better cost model, a fixed bug) regenerates them from the commit
that makes it, and says so in that commit. Changed so far (the file's "made_with" repeats it): the
measured bound labels within metrics.BOUND_MARGIN_PCT of the 60% mark ("memory (borderline)");
analysis_probe2's whole-model memory, dropped because its model is no preset; analyze_slice and
diff_example_vs_slice, re-made after tests/data/example_slice was rebuilt from the shipped capture
(the old slice came from an earlier capture).
"""

from __future__ import annotations

import gzip
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Decisions pinned as text besides the numbers: who wins, and the measured bound.
_TEXT_KEYS = {"winner", "runner_up", "fastest", "bound", "winner_bound", "bound_model", "bound_measured",
              "tensor_path", "mma_path", "mma_path_model"}

# Per role, the numbers the reports quote (the layer rows pin every column).
_ROLE_KEYS = ("time_median_ns", "time_p10_ns", "time_p90_ns", "share_pct", "launches_per_call", "dram_bytes",
              "tensor_ops", "useful_flops", "dram_bw_pct_of_peak", "tensor_busy_pct", "pct_of_roofline",
              "bound_measured", "tensor_path")


def _scalars(rec: dict, prefix: str, out: dict) -> None:
    for key, value in rec.items():
        if isinstance(value, bool):
            out[f"{prefix}{key}"] = value
        elif isinstance(value, (int, float)):
            out[f"{prefix}{key}"] = float(value)
        elif isinstance(value, str) and key in _TEXT_KEYS:
            out[f"{prefix}{key}"] = value
        elif isinstance(value, dict):
            _scalars(value, f"{prefix}{key}.", out)


def analysis_numbers(d: dict) -> dict:
    out: dict = {}
    for r in d["layer"]:
        _scalars(r, f"layer/{r['format']}/{r['batch']}/", out)
    for r in d["roles"]:
        _scalars({k: r[k] for k in _ROLE_KEYS if k in r}, f"roles/{r['format']}/{r['batch']}/{r['role']}/", out)
    for v in d["verdicts"]:
        _scalars({k: v[k] for k in ("winner", "runner_up", "speedup", "p_value", "fastest", "fastest_margin",
                                    "times_ns")}, f"verdict/{v['batch']}/", out)
    for r in d["memory"]:
        _scalars(r, f"memory/{r['format']}/", out)
    peaks = d["peaks"]
    _scalars({k: peaks[k] for k in ("sm_clock_hz", "sm_count", "dram_bytes_per_s", "tensor_flop_per_s")}, "peaks/", out)
    s = d["summary"]
    out["summary/measured_crossover_batches"] = [float(x) for x in s.get("measured_crossover_batches") or []]
    out["summary/predicted_crossover_batch"] = s.get("predicted_crossover_batch")
    return out


def roofline_numbers(d: dict) -> dict:
    out: dict = {}
    for r in d["records"]:
        _scalars(r, f"records/{r['format']}/{r['batch']}/", out)
    for v in d["verdicts"]:
        _scalars(v, f"verdict/{v['batch']}/", out)
    for c in d["crossover"]:
        _scalars({k: c[k] for k in ("batch", "prev_batch", "winner", "batch_exact")},
                 f"crossover/{c['a']}/{c['b']}/{c.get('loser')}->{c['winner']}/", out)
    for r in d["memory"]:
        _scalars(r, f"memory/{r['format']}/", out)
    return out


# Per diff row: the medians and counters on both sides and the change; how significance is decided
# (status, p-value, test) is not pinned.
_DIFF_KEYS = ("n_a", "n_b", "time_a_ns", "time_b_ns", "dram_bytes_a", "dram_bytes_b", "tensor_ops_a", "tensor_ops_b",
              "change_pct")


def diff_numbers(d: dict) -> dict:
    out: dict = {}
    for r in d["rows"]:
        _scalars({k: r[k] for k in _DIFF_KEYS if k in r}, f"rows/{r['format']}/{r['batch']}/{r['role']}/", out)
    return out


def compare(pinned: dict, got: dict, rtol: float = 1e-9) -> list[str]:
    """Differences, one line each: a pinned key missing or changed (keys only in `got` are new, allowed)."""
    bad = []
    for key, want in pinned.items():
        if key not in got:
            bad.append(f"{key}: missing (pinned {want!r})")
            continue
        have = got[key]
        if isinstance(want, float) and isinstance(have, (int, float)) and not isinstance(have, bool):
            if not math.isclose(want, float(have), rel_tol=rtol, abs_tol=1e-12):
                bad.append(f"{key}: {have!r} != pinned {want!r}")
        elif isinstance(want, list) and isinstance(have, list) and len(want) == len(have):
            if not all(math.isclose(a, float(b), rel_tol=rtol) for a, b in zip(want, have)):
                bad.append(f"{key}: {have!r} != pinned {want!r}")
        elif have != want:
            bad.append(f"{key}: {have!r} != pinned {want!r}")
    return bad


if __name__ == "__main__":
    analyze, slice_, probe2, roofline, diff = (json.loads(Path(p).read_text()) for p in sys.argv[1:6])
    pins = {"made_with": "commit aeb056a; see tests/data/pinned/pins.py",
            "analyze_example": analysis_numbers(analyze), "analyze_slice": analysis_numbers(slice_),
            "analyze_probe2": analysis_numbers(probe2), "roofline_default": roofline_numbers(roofline),
            "diff_example_vs_slice": diff_numbers(diff)}
    with gzip.open(HERE / "aeb056a.json.gz", "wt") as fh:
        fh.write(json.dumps(pins, indent=0, sort_keys=True, separators=(",", ":")) + "\n")
    print("wrote", HERE / "aeb056a.json.gz", {k: len(v) for k, v in pins.items() if isinstance(v, dict)})
