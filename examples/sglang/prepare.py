"""Build a trimmed, importable copy of SGLang's Triton fused-MoE path from the sglang wheel.

    python3 -m pip download --no-deps sglang==0.5.23 -d .whl
    python3 examples/sglang/prepare.py .whl/sglang-0.5.23-*.whl .sglang-trim

Installing sglang normally pulls 39 wheels (and fails at torchvision on the GPU machine), and its
CUDA kernels live in `sgl_kernel`, a 373 MB wheel pinned to another torch build. The fused-MoE
path (`fused_experts_impl`: align, `fused_moe_kernel` for both expert GEMMs, activation,
sum-reduce) is plain Python + Triton, so this script extracts only those modules from the wheel
(listed in WHEEL_FILES, plus the tuned-config JSONs) and adds our stand-ins
(examples/sglang/standins/, described in its README.md) for the server-side modules and the
compiled ops that path imports. The output folder goes first on PYTHONPATH; nothing else is
installed. SGLang's files are not part of this repository: this script recreates them.

The folder also gets TRIM.json: the wheel's name and sha256, and every file with its origin.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
STANDINS = os.path.join(HERE, "standins")

# SGLang's own modules on the Triton fused-MoE path, as they are in the wheel.
WHEEL_FILES = [
    "sglang/srt/layers/moe/moe_runner/triton_utils/__init__.py",
    "sglang/srt/layers/moe/moe_runner/triton_utils/fused_moe.py",
    "sglang/srt/layers/moe/moe_runner/triton_utils/fused_moe_triton_config.py",
    "sglang/srt/layers/moe/moe_runner/triton_utils/moe_align_block_size.py",
    "sglang/kernels/ops/moe/fused_moe_triton_kernels.py",  # fused_moe_kernel, act_and_mul, moe_sum_reduce_triton
    "sglang/kernels/ops/moe/moe_align_small_numel.py",  # single-launch align for <= 64 expert ids
    "sglang/test/kernels/moe_align.py",  # Triton align reference, used by the align stand-in
]
# Tuned tile configurations (per Triton version, E, N, card, dtype) read by fused_moe_triton_config.
CONFIG_DIR = "sglang/srt/layers/moe/moe_runner/triton_utils/configs/"


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare(wheel: str, out: str) -> dict:
    if not os.path.isfile(wheel):
        raise SystemExit(f"prepare: error: no wheel at {wheel}")
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    origins: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        missing = [f for f in WHEEL_FILES if f not in names]
        if missing:
            raise SystemExit(f"prepare: error: {os.path.basename(wheel)} lacks {', '.join(missing)}")
        configs = sorted(n for n in names if n.startswith(CONFIG_DIR) and not n.endswith("/"))
        licenses = sorted(n for n in names if ".dist-info/" in n and os.path.basename(n) in ("LICENSE", "METADATA"))
        for name in WHEEL_FILES + configs + licenses:
            dest = os.path.join(out, name)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with zf.open(name) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)
            origins[name] = "wheel"
    for root, _dirs, files in os.walk(STANDINS):
        for fname in files:
            if fname == "README.md" and root == STANDINS:
                continue
            src = os.path.join(root, fname)
            rel = os.path.relpath(src, STANDINS).replace(os.sep, "/")
            if rel in origins:
                raise SystemExit(f"prepare: error: stand-in {rel} would replace a file taken from the wheel")
            dest = os.path.join(out, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(src, dest)
            origins[rel] = "standin"
    record = dict(wheel=os.path.basename(wheel), wheel_sha256=sha256(wheel),
                  files_from_wheel=sum(v == "wheel" for v in origins.values()),
                  standins=sorted(k for k, v in origins.items() if v == "standin"),
                  wheel_files=sorted(k for k, v in origins.items() if v == "wheel" and not k.startswith(CONFIG_DIR)))
    with open(os.path.join(out, "TRIM.json"), "w") as fh:
        json.dump(record, fh, indent=1)
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheel", help="path of the sglang wheel (e.g. sglang-0.5.23-*.whl)")
    ap.add_argument("out", help="output folder (replaced); put it first on PYTHONPATH")
    args = ap.parse_args(argv)
    rec = prepare(args.wheel, args.out)
    print(f"{args.out}: {rec['files_from_wheel']} files from {rec['wheel']}, {len(rec['standins'])} stand-ins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
