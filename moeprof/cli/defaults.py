"""Every default a command shows, in one place: the library's own where it has one (a sweep's model,
formats and batches from the capture contract), else stated here.

Nothing here imports pandas (so `moeprof --help` stays fast); tests/test_cli_conventions.py checks the
literals against the library's defaults they mirror (roofline batches, diff thresholds).
"""

from __future__ import annotations

from moeprof.capture_folder import DEFAULT_SWEEP_BATCHES, DEFAULT_SWEEP_FORMATS, DEFAULT_SWEEP_MODEL

MODEL = DEFAULT_SWEEP_MODEL            # MoE preset (capture sweeps and the roofline)
GPU = "h200"                           # roofline: GPU spec (alias of h200-sxm)
FORMATS = ",".join(DEFAULT_SWEEP_FORMATS)
ROOFLINE_BATCHES = "1..16384"          # moeprof.roofline.bound.DEFAULT_BATCHES (doubling)
CAPTURE_BATCHES = ",".join(map(str, DEFAULT_SWEEP_BATCHES))  # tokens per layer call of a capture sweep
TP = 1
EP = 1
ROUTING = "uniform"

# capture
COLLECT = "nsys,ncu,torch"
REPEATS = 20
WARMUP = 3
NCU_REPEATS = 1
NCU_LAUNCH_COUNT = 200
CLOCK_CONTROL = "none"
CACHE_CONTROL = "all"
TIMEOUT_S = 3600.0

# diff (moeprof.analysis.diff.DiffOptions)
ALPHA = 0.05
MIN_EFFECT = 0.03
NOISE_FLOOR = 0.05
MIN_ABS_US = 0.5

# analyze / diff output
OUTPUT_FORMAT = "table"
OUTPUT_FORMATS = ("table", "markdown", "json", "csv")  # the keys of moeprof.reports.outputs.RENDERERS
