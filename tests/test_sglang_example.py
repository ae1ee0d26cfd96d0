"""SGLang's Triton fused MoE as a foreign program: its capture classified, its stand-ins, its trimmed package.

The fixtures (tests/data/sglang_slice/{fp8,bf16}, see its build.py) are slices of real nsys
captures of examples/sglang_fused_moe.py --format fp8 / bf16 on an H200. Tests that run SGLang's own code need the
trimmed package made by examples/sglang/prepare.py from the sglang 0.5.23 wheel (not part of this
repository); they skip without it ($SGLANG_TRIM or .sglang-trim at the repository root).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from moeprof.analysis.classify import classify
from moeprof.analysis.load import load_capture
from moeprof.analysis.pipeline import analyze

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "data" / "sglang_slice" / "fp8"
FIXTURE_BF16 = Path(__file__).parent / "data" / "sglang_slice" / "bf16"
STANDINS = ROOT / "examples" / "sglang" / "standins"
TRIM = Path(os.environ.get("SGLANG_TRIM") or ROOT / ".sglang-trim")
needs_trim = pytest.mark.skipif(not (TRIM / "sglang" / "srt").is_dir(),
                                reason="no trimmed SGLang package (examples/sglang/prepare.py)")

# What each kernel of SGLang's fused_experts_impl path does, from SGLang's code and our stand-ins
# (examples/sglang/standins/README.md); fused_moe_kernel is resolved by launch order below.
ROLE_OF_KERNEL = {
    "_moe_align_small_numel_kernel": "sort",   # SGLang's single-launch align (<= 64 expert ids)
    "moe_align_block_size_stage1": "sort",     # SGLang's Triton align reference (stand-in for sgl_kernel's)
    "moe_align_block_size_stage2": "sort",
    "moe_align_block_size_stage3": "sort",
    "moe_align_block_size_stage4": "sort",
    "scaled_fp8_quant_absmax_kernel": "quant",
    "scaled_fp8_quant_kernel": "quant",
    "silu_and_mul_kernel": "act",
    "_moe_sum_reduce_kernel": "combine",
}


@pytest.fixture(scope="module")
def classified() -> pd.DataFrame:
    return classify(load_capture(FIXTURE).kernels)


def test_slice_is_sglang_fp8_on_h200():
    cap = load_capture(FIXTURE)
    assert cap.workload["mode"] == "external"
    assert "examples/sglang_fused_moe.py" in cap.workload["command"]
    assert cap.gpu_name == "NVIDIA H200"
    assert set(cap.kernels["format"]) == {"fp8"}
    assert sorted(cap.kernels["batch"].dropna().astype(int).unique()) == [1, 16, 64, 4096]


def test_fused_moe_kernel_is_gemm1_then_gemm2_by_launch_order(classified):
    k = classified
    gemms = k[k["kernel_name"] == "fused_moe_kernel"].sort_values(["batch", "repeat", "start_ns"])
    # Independent of the classifier: the n-th fused_moe_kernel launch of a layer call (NVTX range
    # moe/fp8/<batch>, numbered by repeat) is the gate_up GEMM when n is even, the down GEMM otherwise.
    nth = gemms.groupby(["batch", "repeat"]).cumcount()
    assert (gemms.groupby(["batch", "repeat"]).size() == 2).all()
    expected = nth.map({0: "gemm1", 1: "gemm2"})
    assert (gemms["role"].astype(str) == expected).all()
    # gate_up (N = 5760) has twice the output tiles of down (N = 2880): its grid is larger.
    g = gemms.assign(nth=nth).pivot_table(index=["batch", "repeat"], columns="nth", values="grid_x")
    assert (g[0] > g[1]).all()


def test_align_quant_act_and_sum_reduce_roles(classified):
    k = classified
    named = k[k["kernel_name"].isin(ROLE_OF_KERNEL)]
    assert set(named["kernel_name"]) == set(ROLE_OF_KERNEL)  # every kind of launch is in the slice
    assert (named["role"].astype(str) == named["kernel_name"].map(ROLE_OF_KERNEL)).all()
    rest = k[~k["kernel_name"].isin(ROLE_OF_KERNEL) & (k["kernel_name"] != "fused_moe_kernel")]
    # What is left are torch fills (scale buffers zeroed, align buffers padded): not MoE roles.
    assert rest["kernel_name"].str.contains("FillFunctor").all()
    assert (rest["role"].astype(str) == "other").all()


def test_analysis_gemm_times_match_the_launches():
    a = analyze(load_capture(FIXTURE))
    k = load_capture(FIXTURE).kernels
    g = k[k["kernel_name"] == "fused_moe_kernel"].sort_values(["batch", "repeat", "start_ns"])
    g = g.assign(nth=g.groupby(["batch", "repeat"]).cumcount())
    for nth, role in ((0, "gemm1"), (1, "gemm2")):
        want = g[g["nth"] == nth].groupby("batch")["duration_ns"].median()
        got = a.roles[a.roles["role"] == role].set_index("batch")["time_median_ns"]
        assert got.sort_index().tolist() == pytest.approx(want.sort_index().tolist())


def test_fp8_and_bf16_runs_merged_give_a_format_verdict():
    from moeprof.analysis import merge

    merged, warnings = merge.merge([load_capture(FIXTURE), load_capture(FIXTURE_BF16)])
    assert warnings == []
    a = analyze(merged)
    # Independently: per layer call, the sum of its kernels' durations (the runs have no CUDA-event
    # times), median per batch; the slower format's median over the faster one's.
    med = {}
    for fmt, path in (("fp8", FIXTURE), ("bf16", FIXTURE_BF16)):
        k = load_capture(path).kernels
        med[fmt] = k.groupby(["batch", "repeat"])["duration_ns"].sum().groupby("batch").median()
    by_batch = {v.batch: v for v in a.verdicts}
    assert sorted(by_batch) == [1, 16, 64, 4096]
    for b, v in by_batch.items():
        assert v.winner == "fp8" and v.runner_up == "bf16"
        assert v.speedup == pytest.approx(med["bf16"][b] / med["fp8"][b], rel=1e-9)


def _load_standin(relpath: str, name: str):
    spec = importlib.util.spec_from_file_location(name, STANDINS / relpath)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_silu_and_mul_standin_matches_torch():
    import torch

    act = _load_standin("sglang/kernels/ops/activation/activation.py", "standin_activation")
    x = torch.randn(5, 2 * 1100, dtype=torch.float32)  # d = 1100: two column blocks, the second partial
    out = act.silu_and_mul(x)
    ref = torch.nn.functional.silu(x[:, :1100]) * x[:, 1100:]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_fp8_quant_standin_scale_is_absmax_over_448():
    import torch

    q = _load_standin("sglang/kernels/ops/quantization/fp8_kernel.py", "standin_fp8")
    x = torch.randn(7, 300, dtype=torch.float32) * 3
    out, scale = q.scaled_fp8_quant(x)
    assert out.dtype == torch.float8_e4m3fn and out.shape == x.shape
    assert float(scale) == pytest.approx(float(x.abs().max()) / 448.0, rel=1e-6)
    assert float(out.float().abs().max()) == pytest.approx(448.0)  # the largest value maps to e4m3's max
    static = torch.tensor([0.5])
    out2, s2 = q.scaled_fp8_quant(x, static)
    assert s2 is static
    with pytest.raises(NotImplementedError):
        q.scaled_fp8_quant(x, use_per_token_if_dynamic=True)


def test_prepare_refuses_a_wheel_without_the_fused_moe_files(tmp_path):
    wheel = tmp_path / "sglang-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("sglang/__init__.py", "")
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "sglang" / "prepare.py"), str(wheel),
                        str(tmp_path / "trim")], capture_output=True, text=True)
    assert r.returncode != 0
    assert "prepare: error:" in r.stderr and "triton_utils/fused_moe.py," in r.stderr


_RUN_SGLANG = r"""
import sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
import torch
import sglang.srt.utils as su
# Take SGLang's CUDA branch (our stand-ins) on the CPU: the Triton interpreter runs every kernel.
su.is_cuda = lambda: True
su.is_sm90_supported = lambda: False
from sglang.srt.layers.moe.moe_runner.triton_utils.fused_moe import fused_experts_impl
import sglang_fused_moe as ex
torch.manual_seed(0)
E, H, I, K = 8, 64, 32, 2
w1 = torch.randn(E, 2 * I, H, dtype=torch.float16) * H ** -0.5
w2 = torch.randn(E, H, I, dtype=torch.float16) * I ** -0.5
for T in (3, 40):  # 6 expert ids: SGLang's single-launch align; 80: the align stand-in
    x = torch.randn(T, H, dtype=torch.float16)
    vals, ids = torch.rand(T, E).topk(K, dim=1)
    tw = torch.softmax(vals, 1).float().contiguous()
    ids = ids.to(torch.int32).contiguous()
    out = fused_experts_impl(x, w1, w2, tw, ids, inplace=False, activation="silu")
    print(T, ex.rel_err(out, ex.reference(x, tw, ids, w1, w2, None, None)))
"""


@needs_trim
def test_sglang_fused_experts_on_the_interpreter_matches_float32(tmp_path):
    # fp16: the CPU interpreter mis-rounds bf16 and fp8 conversions; the GPU run checks those formats.
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", _RUN_SGLANG, str(TRIM), str(ROOT / "examples")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    errs = {int(t): float(e) for t, e in (line.split() for line in r.stdout.strip().splitlines())}
    assert set(errs) == {3, 40}
    assert all(e < 2e-3 for e in errs.values()), errs


@pytest.mark.parametrize("args, message", [
    (["--batches", "0,4"], "batches must be positive integers"),
    (["--batches", "1,x"], "batches must be positive integers"),
    (["--repeats", "0"], "--repeats and --tune-repeats must be at least 1"),
    (["--config", "6"], "--config takes 0..5, got 6"),
    (["--config", "0", "--tune"], "--config and --tune exclude each other"),
    (["--sglang-trim", "/nonexistent"], "no trimmed SGLang package in /nonexistent"),
])
def test_example_refuses_bad_options_in_one_line(args, message):
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "sglang_fused_moe.py"), "--format", "fp8", *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sglang_fused_moe: error: ") and message in lines[0]
