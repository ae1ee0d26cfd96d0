"""`moeprof build-kernels` and the library calls under it (moe_gemm.cuda_variants, mx_cuda.build_all), on
the CPU: which kernel shapes the defaults pick, and the build plumbing with a stand-in nvcc that writes
its output file. The expected shapes are derived here from the documented regimes (rows per expert, experts
with rows) and the shape constants, not from the enumeration under test."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from moeprof.cli import main
from moeprof.models.kernels import moe_gemm as mg
from moeprof.models.kernels import mx_cuda
from moeprof.models.layer import model_shapes

GPT_OSS_120B = model_shapes("gpt-oss-120b")   # 128 experts, top-4


def _v(**shape):
    return mx_cuda.Variant(**shape)


def test_batch_1_takes_the_few_expert_decode_shapes():
    # 4 slots over 128 experts: 1 row per expert (the layer's floor), 1 to 4 experts with rows, all <= 8:
    # one token group, gemm1 in the few-expert shape, the down GEMM in its own few-expert shape
    got = set(mg.cuda_variants([GPT_OSS_120B], [1]))
    assert got == {_v(**mg.MMA_SHAPE_FEW), _v(**mg.MMA_SHAPE_FEW_DOWN)}


def test_batch_4096_takes_the_prefill_shapes():
    # 128 rows per expert: the bf16 prefill kernel's wide tile for mxfp4; for mxfp4-w4a8 (128 <= its
    # prefill limit) the e4m3 kernel's shape for more than 64 rows
    assert 128 > mg.WG_MIN_ROWS_PER_EXPERT and 128 > mg.WG_FEW_ROWS_PER_EXPERT
    assert 128 <= mg.W4A8_WG_MAX_ROWS_PER_EXPERT and mg.W4A8_WG_KERNEL == "wg8"
    wide8 = next(sh for limit, sh in mg.W4A8_WG8_SHAPES if 128 <= limit)
    got = set(mg.cuda_variants([GPT_OSS_120B], [4096]))
    assert got == {mx_cuda.WgVariant(**mg.WG_SHAPE), mx_cuda.WgVariant(**wide8)}


def test_batch_64_covers_every_count_of_experts_with_rows():
    # 256 slots: 2 rows per expert, so one token group; 1 to 128 experts can have rows. <= 8: the
    # few-expert shapes; 9-16: the default gemm1 and the down GEMM's one-tile form; more: the defaults
    assert 2.0 <= mg.MMA_GROUPS[0][0]
    expected = {_v(**mg.MMA_SHAPE_FEW), _v(**mg.MMA_SHAPE_FEW_DOWN), _v(**mg.MMA_SHAPE),
                _v(**dict(mg.MMA_SHAPE, MT=1))}
    assert set(mg.cuda_variants([GPT_OSS_120B], [64], formats=("mxfp4",))) == expected


def test_without_a_gpu_the_defaults_stay_on_triton():
    # on this machine (no CUDA device) the detected default is a Triton tile, and asking for the CUDA
    # kernels explicitly gives one: the enumeration's switch does not leak into the default
    cfg = mg.default_config("mxfp4", 1.0, 2880, 2880, True, slots=4, experts=4, local_experts=128)
    assert "KERNEL" not in cfg
    cuda = mg.default_config("mxfp4", 1.0, 2880, 2880, True, slots=4, experts=4, local_experts=128,
                             cuda_kernels=True)
    assert cuda["KERNEL"] == "mma"


def _fake_nvcc(tmp_path: Path, fail_on: str = "") -> Path:
    """A stand-in compiler: writes 'cubin <flags>' to the -o path; exits 1 when a flag contains fail_on."""
    script = tmp_path / "nvcc"
    script.write_text(
        "#!/bin/sh\n"
        "out=''; all=\"$*\"\n"
        + (f"case \"$all\" in *{fail_on}*) echo 'error: stand-in failure' >&2; exit 1;; esac\n" if fail_on else "")
        + "while [ $# -gt 0 ]; do if [ \"$1\" = -o ]; then out=$2; fi; shift; done\n"
        "echo \"cubin $all\" > \"$out\"\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_build_all_builds_each_once_then_finds_them(tmp_path, monkeypatch):
    monkeypatch.setenv("MOEPROF_CACHE_DIR", str(tmp_path / "cache"))
    nvcc = _fake_nvcc(tmp_path)
    variants = mg.cuda_variants([GPT_OSS_120B], [1, 4096])
    first = mx_cuda.build_all(variants, jobs=3, nvcc=str(nvcc))
    assert [r.variant for r in first] == variants and all(r.cubin is not None and not r.cached for r in first)
    for r in first:
        assert r.cubin == mx_cuda.cubin_path(r.variant) and r.cubin.parent == tmp_path / "cache" / "kernels"
        text = r.cubin.read_text()   # each file was compiled with its own variant's defines
        assert all(d in text for d in r.variant.defines()) and f"-arch={r.variant.arch}" in text
    assert not list((tmp_path / "cache" / "kernels").glob("*.tmp"))
    again = mx_cuda.build_all(variants, jobs=2, nvcc=str(nvcc))
    assert all(r.cached and r.cubin == f.cubin for r, f in zip(again, first))


def test_cli_builds_lists_and_reports_failures(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MOEPROF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MOEPROF_NVCC", str(_fake_nvcc(tmp_path)))
    n = len(mg.cuda_variants([GPT_OSS_120B], [1, 4096]))
    assert main(["build-kernels", "-b", "1,4096", "--list"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith(f"{n} kernel shapes for gpt-oss-120b at batch 1..4096")
    assert not (tmp_path / "cache").exists()              # --list builds nothing

    assert main(["build-kernels", "-b", "1,4096", "-j", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("\nbuilt ") + out.startswith("built ") == n
    assert f"{n} kernel shapes in {tmp_path / 'cache' / 'kernels'}: {n} built, 0 already there, 0 failed" in out
    assert len(list((tmp_path / "cache" / "kernels").glob("*.cubin"))) == n

    # a compiler that fails on the prefill source: those lines say FAILED, the rest are found, exit 2
    monkeypatch.setenv("MOEPROF_CACHE_DIR", str(tmp_path / "other"))
    (tmp_path / "bad").mkdir()
    monkeypatch.setenv("MOEPROF_NVCC", str(_fake_nvcc(tmp_path / "bad", fail_on="sm_90a")))
    wg = sum(1 for v in mg.cuda_variants([GPT_OSS_120B], [1, 4096]) if v.arch == "sm_90a")
    assert 0 < wg < n
    rc = main(["build-kernels", "-b", "1,4096"])
    out, err = capsys.readouterr()
    assert rc == 2 and out.count("FAILED ") == wg and "stand-in failure" in out
    assert err.strip() == f"moeprof: error: {wg} of {n} kernel shapes failed to build (FAILED lines above)"


def test_cli_without_nvcc_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MOEPROF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MOEPROF_NVCC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))              # no nvcc on it
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "no-cuda"))
    rc = main(["build-kernels", "-b", "1"])
    out, err = capsys.readouterr()
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("moeprof: error: nvcc not found") and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("argv, message", [
    (["-j", "0"], "--jobs must be a positive integer"),
    (["-b", "0"], "batch sizes must be >= 1"),
    (["-m", "no-such-model"], "no-such-model"),
])
def test_cli_bad_arguments_are_one_line(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MOEPROF_CACHE_DIR", str(tmp_path / "cache"))
    rc = main(["build-kernels", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "cache")
