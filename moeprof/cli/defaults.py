"""Every default a command shows, in one place.

Plain literals so that `moeprof --help` does not import pandas; tests/test_cli_conventions.py checks
that they agree with the library's own defaults (formats, batches, diff thresholds).
"""

from __future__ import annotations

MODEL = "gpt-oss-120b"                 # MoE preset
GPU = "h200"                           # roofline: GPU spec (alias of h200-sxm)
FORMATS = "bf16,fp8,mxfp4"             # moeprof.roofline.formats.DEFAULT_FORMATS
ROOFLINE_BATCHES = "1..16384"          # moeprof.roofline.bound.DEFAULT_BATCHES (doubling)
CAPTURE_BATCHES = "1,8,32,128,512"     # tokens per layer call of a capture sweep
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
