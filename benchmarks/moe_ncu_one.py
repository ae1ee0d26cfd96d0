"""One layer call at a given batch, for `ncu -k regex:moe_gemm` (gemm1 is the first moe_gemm launch).

    python3 benchmarks/moe_ncu_one.py FMT BATCH ['{"BM":16,...}' ['{gemm2 cfg}']]
    python3 benchmarks/moe_ncu_one.py FMT BATCH --torch-gemms

Without configs the layer's defaults run; a JSON config (gemm1, optionally gemm2) overrides them.
--torch-gemms: the torch peer's two grouped GEMMs alone (models/peers.grouped_gemms_only: one set-up
launch of gemm1, then two runs of both GEMMs; `ncu --launch-skip 3 --launch-count 2` takes the second run).
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import torch  # noqa: E402

from moeprof.models.layer import build_layer_for_model  # noqa: E402

fmt = sys.argv[1] if len(sys.argv) > 1 else "mxfp4"
b = int(sys.argv[2]) if len(sys.argv) > 2 else 64
if len(sys.argv) > 3 and sys.argv[3] == "--torch-gemms":
    from moeprof.models import peers

    run = peers.grouped_gemms_only(build_layer_for_model("gpt-oss-120b", fmt, b, seed=23, kernel="torch-grouped"))
    for _ in range(2):
        run()
        torch.cuda.synchronize()
    print("torch grouped GEMMs", fmt, b, flush=True)
    sys.exit(0)
cfg = None
if len(sys.argv) > 3:
    c1 = json.loads(sys.argv[3])
    cfg = (c1, json.loads(sys.argv[4]) if len(sys.argv) > 4 else dict(c1))
layer = build_layer_for_model("gpt-oss-120b", fmt, b, cfg=cfg)
print("cfg", layer.cfg1, layer.cfg2, flush=True)
layer()
torch.cuda.synchronize()
