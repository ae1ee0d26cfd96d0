"""`moeprof capture -o FOLDER --refine-crossover A,B`: locate the A/B crossover of an existing capture.

The measured batches only place a crossover between the two batches that bracket it. Refinement
measures the geometric midpoint of that bracket (for formats A and B, CUDA-event timing, added to
the same folder through the resume machinery as `workload.refined_points`) and repeats on the half
that still brackets it, until the bracket is within REL_WIDTH (hi / lo <= 1.10) or no integer batch
is left between its ends.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from moeprof import capture_folder as schema
from moeprof.errors import MoeprofError
from moeprof.roofline import crossover
from moeprof.roofline.crossover import Crossover

REL_WIDTH = 0.10
MAX_STEPS = 12


def bracket(times: pd.DataFrame, a: str, b: str) -> Crossover | None:
    """The first A/B crossover along the measured batches (moeprof.roofline.crossover: the bracketing
    batches lo, hi and a log-log estimate). times: batch -> median time of a and of b (columns a, b);
    batches where either is missing or not a finite positive number are skipped."""
    t = times[[a, b]].apply(pd.to_numeric, errors="coerce").sort_index()
    t = t[np.isfinite(t[a]) & np.isfinite(t[b]) & (t[a] > 0) & (t[b] > 0)]
    found = crossover.find([int(x) for x in t.index], t[a].tolist(), t[b].tolist(), a, b)
    return found[0] if found else None


def located(c: Crossover) -> bool:
    """Within REL_WIDTH (hi <= 1.1 lo), or no integer batch left between the bracketing batches."""
    return c.hi <= c.lo * (1 + REL_WIDTH) or next_batch(c.lo, c.hi) is None


def next_batch(lo: int, hi: int) -> int | None:
    """The geometric midpoint of (lo, hi) rounded to an integer strictly inside, or None if none is."""
    if hi - lo < 2:
        return None
    mid = int(round(math.sqrt(lo * hi)))
    return min(max(mid, lo + 1), hi - 1)


def median_times(folder: Path, formats: list[str]) -> pd.DataFrame:
    """batch x format median layer time (ns) of the finished points (manifest points_done) in points.csv;
    times that are not finite positive numbers are left out."""
    try:
        manifest = json.loads((folder / schema.MANIFEST_FILE).read_text())
        p = pd.read_csv(folder / schema.POINTS_FILE, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise MoeprofError(f"{folder}: cannot read the capture's points ({str(exc).splitlines()[0][:160]})") from None
    p = schema.coerce_columns(p, schema.POINT_COLUMNS)
    done = {(str(f), int(b)) for f, b in manifest.get("points_done", [])}
    p = p[p["format"].isin(formats) & p["batch"].notna()]
    p = p[[(f, int(b)) in done for f, b in zip(p["format"], p["batch"])]] if len(p) else p
    p = p[np.isfinite(p["layer_time_ns"]) & (p["layer_time_ns"] > 0)]
    if p.empty:
        return pd.DataFrame(columns=formats)
    return p.groupby(["batch", "format"])["layer_time_ns"].median().unstack("format").reindex(columns=formats)


def refine_crossover(folder: Path, a: str, b: str, *, timeout_s: float = 3600, quiet: bool = True,
                     echo: Callable[[str], None] = print, run: Callable | None = None) -> Crossover | None:
    """Measure batches inside the A/B bracket until it is located (see module doc). Returns the last bracket."""
    from moeprof.profiler import capture as cap_mod

    mpath = folder / schema.MANIFEST_FILE
    try:
        m = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise MoeprofError(f"{mpath}: cannot read the capture manifest ({exc})") from None
    w = m.get("workload") if isinstance(m, dict) else None
    if not isinstance(w, dict) or w.get("mode") != "moe":
        raise MoeprofError(f"{folder}: --refine-crossover needs a moeprof sweep capture (not an external program)")
    cap_mod._check_stored_sweep(w, folder)
    for f in (a, b):
        if f not in w["formats"]:
            raise MoeprofError(f"{folder}: format {f!r} is not in this capture ({', '.join(w['formats'])})")
    if m.get("status") not in ("complete", "partial"):
        raise MoeprofError(f"{folder}: capture status is {m.get('status')!r}; finish it with --resume first")
    run = run or cap_mod.capture
    br = None
    for step in range(MAX_STEPS + 1):
        br = bracket(median_times(folder, [a, b]), a, b)
        if br is None:
            echo(f"refine {a}/{b}: no crossover between the measured batches; nothing to refine")
            return None
        where = f"crossover {br.describe()}"
        if located(br) or step == MAX_STEPS:
            state = "located within 10%" if located(br) else f"not located after {MAX_STEPS} steps"
            echo(f"refine {a}/{b}: {where}: {br.method_detail}; {state}")
            return br
        mid = next_batch(br.lo, br.hi)
        echo(f"refine {a}/{b}: {where}; measuring batch {mid}")
        m = json.loads(mpath.read_text())
        m["workload"].setdefault("refined_points", []).extend([[a, mid], [b, mid]])
        cap_mod.write_atomic(mpath, json.dumps(m, indent=2, default=str) + "\n")
        res = run(cap_mod.CaptureConfig(out=folder, resume=True, events_only=True, timeout_s=timeout_s, quiet=quiet,
                                        command_line=["moeprof", "capture", "-o", str(folder),
                                                      "--refine-crossover", f"{a},{b}"]))
        if not any(list(p) == [a, mid] for p in res["points_done"]) or \
                not any(list(p) == [b, mid] for p in res["points_done"]):
            raise MoeprofError(f"refine {a}/{b}: batch {mid} did not finish; see {folder}/manifest.json points_failed")
    return br
