"""Stand-in for moeprof.profiler._point_runner on a machine without a GPU (see fake_gpu_capture.py)."""

import json
import os
import subprocess
import sys
import time

spec = json.loads(open(sys.argv[1]).read())
# a grandchild, as a profiler's target or a compiler worker would be; it must not outlive a stop
sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
if os.environ.get("FAKE_PIDS"):
    with open(os.environ["FAKE_PIDS"], "a") as f:
        f.write(f"{sleeper.pid}\n")
for b in spec["batches"]:
    time.sleep(float(os.environ.get("FAKE_POINT_S", "0.05")))
    with open(os.environ["FAKE_CALLS"], "a") as f:
        f.write(f"{spec['mode']} {spec['format']} {b}\n")
    with open(spec["status"], "a") as f:
        f.write(json.dumps({"format": spec["format"], "batch": b, "status": "ok", "kernel": "fake",
                            "timing": "fake", "layer_time_ns": [1000.0 * b + r for r in range(spec["repeats"])],
                            "experts_touched": 1}) + "\n")
sleeper.kill()
