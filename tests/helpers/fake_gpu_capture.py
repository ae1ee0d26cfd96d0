"""`moeprof` CLI on a machine without a GPU, for process-level capture tests (signals, resume).

The GPU description and the point-runner child are replaced; everything else (sweep, child process
groups, signal handling, folder writing, exit codes) is moeprof's own code. The fake child
(fake_point_child.py) sleeps $FAKE_POINT_S per batch, writes the runner's per-batch status lines,
logs each batch it ran to $FAKE_CALLS and leaves a grandchild running to check that stops reach it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from moeprof.cli import main
from moeprof.profiler import capture as cap

_real_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda n, *a: object() if n == "torch" else _real_find_spec(n, *a)
cap.describe_machine = lambda timeout=300: {
    "gpu": {"name": "NVIDIA H200", "compute_capability": "9.0", "sm_count": 132},
    "software": {"torch": "2.11.0"}, "cuda_available": True}
CHILD = str(Path(__file__).with_name("fake_point_child.py"))
cap._runner = lambda spec: [sys.executable, CHILD, str(spec)]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
