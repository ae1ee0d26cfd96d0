"""One mxfp4 layer call at a given batch (default config), for `ncu -k regex:moe_gemm -c 1` (gemm1)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import torch  # noqa: E402

from moeprof.profiler.workload import build_layer_for_model  # noqa: E402

fmt = sys.argv[1] if len(sys.argv) > 1 else "mxfp4"
b = int(sys.argv[2]) if len(sys.argv) > 2 else 64
layer = build_layer_for_model("gpt-oss-120b", fmt, b)
print("cfg", layer.cfg1, layer.cfg2, flush=True)
layer()
torch.cuda.synchronize()
