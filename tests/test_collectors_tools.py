"""Tool discovery, nsys environment, kernel names."""

from __future__ import annotations

import os
import stat

from moeprof.profiler.collectors import table, tools


def _exe(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("#!/bin/sh\necho 'NVIDIA Nsight Systems version 2025.3.1.0'\n")
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return p


def test_env_override_and_globs(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    old = _exe(tmp_path / "opt" / "2024.1.0" / "nsys")
    new = _exe(tmp_path / "opt" / "2025.3.1" / "nsys")
    monkeypatch.delenv(tools.NSYS_ENV, raising=False)
    assert tools.find_tool("nsys", tools.NSYS_ENV, [str(tmp_path / "opt" / "*" / "nsys")]) == str(new)
    monkeypatch.setenv(tools.NSYS_ENV, str(old))
    assert tools.find_tool("nsys", tools.NSYS_ENV, []) == str(old)
    assert tools.tool_version(str(new)) == "2025.3.1.0"


def test_missing_tool(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(tools.NCU_ENV, raising=False)
    assert tools.find_tool("ncu", tools.NCU_ENV, [str(tmp_path / "none" / "ncu")]) is None


def test_nsys_libs_prepended(tmp_path, monkeypatch):
    (tmp_path / ".nsys-libs").mkdir()
    env = tools.nsys_env({"LD_LIBRARY_PATH": "/a"}, cwd=tmp_path)
    assert env["LD_LIBRARY_PATH"] == f"{tmp_path / '.nsys-libs'}:/a"
    other = tmp_path / "libs"
    other.mkdir()
    env = tools.nsys_env({tools.NSYS_LIBS_ENV: str(other)}, cwd=tmp_path / "nowhere")
    assert env["LD_LIBRARY_PATH"] == str(other)
    assert "LD_LIBRARY_PATH" not in tools.nsys_env({}, cwd=tmp_path / "nowhere")


def test_chip_for():
    assert tools.chip_for("9.0") == "gh100" and tools.chip_for(None) is None and tools.chip_for("x") is None


def test_short_kernel_name():
    f = table.short_kernel_name
    assert f("void at::native::foo<float, (int)4>(int, T1)") == "at::native::foo<float, (int)4>"
    assert f("nvjet_sm90_tst_96x128_64x7_4x2_h_bz_TNN") == "nvjet_sm90_tst_96x128_64x7_4x2_h_bz_TNN"
    assert f("_moe_gemm_kernel") == "_moe_gemm_kernel"
    assert f("void (anonymous namespace)::softmax<float>(float*)") == "(anonymous namespace)::softmax<float>"
    assert os.sep  # keep import used
