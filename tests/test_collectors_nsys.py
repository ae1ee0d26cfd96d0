"""nsys sqlite reader on a real export slice (tests/fixtures/nsys_nested.sqlite, see fixtures/README.md)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from moeprof.errors import MoeprofError
from moeprof.profiler.collectors import nsys
from moeprof.profiler.collectors.table import kernel_columns

FIX = Path(__file__).parent / "fixtures" / "nsys_nested.sqlite"


@pytest.fixture(scope="module")
def kernels():
    return nsys.read_kernels(FIX)


def test_columns_and_count(kernels):
    assert list(kernels.columns) == kernel_columns()
    assert len(kernels) == 42
    assert set(kernels["collector"]) == {"nsys"}


def test_setup_kernels_are_outside_ranges(kernels):
    # randn + fp8 casts + fills before the first layer call: no NVTX range open
    first = kernels.sort_values("start_ns").head(6)
    assert (first["nvtx_path"] == "").all() and (first["format"] == "").all()
    assert first["batch"].isna().all()


def test_nested_paths_phases_and_repeats(kernels):
    inside = kernels[kernels["nvtx_path"] != ""]
    assert len(inside) == 36
    assert set(inside["nvtx_path"]) == {f"moe/{f}/256/{p}" for f in ("bf16", "fp8") for p in ("route", "gemm1", "act")}
    assert (inside["batch"] == 256).all()
    # prog.py calls layer('bf16'), layer('fp8') twice: 9 kernels per call, repeats 0 and 1
    counts = inside.groupby(["format", "repeat"]).size().to_dict()
    assert counts == {("bf16", 0): 9, ("bf16", 1): 9, ("fp8", 0): 9, ("fp8", 1): 9}
    g1 = inside[inside["phase"] == "gemm1"]
    assert g1[g1["format"] == "bf16"]["kernel_name"].str.startswith("nvjet_sm90_tst").all()
    assert g1[g1["format"] == "fp8"]["kernel_name"].str.startswith("nvjet_sm90_qqtst").all()


def test_launch_geometry_and_duration(kernels):
    g1 = kernels[(kernels["phase"] == "gemm1") & (kernels["format"] == "fp8")].iloc[0]
    assert (g1["grid_x"], g1["block_x"]) == (1, 384)
    assert g1["duration_ns"] == 12288.0 or g1["duration_ns"] > 0
    assert (kernels["duration_ns"] > 0).all()
    assert kernels["registers_per_thread"].notna().all()


def test_argument_list_stripped(kernels):
    assert not kernels["kernel_name"].str.endswith(")").any()
    assert not kernels["kernel_name"].str.startswith("void ").any()


def _copy(tmp_path: Path) -> Path:
    p = tmp_path / "x.sqlite"
    shutil.copy(FIX, p)
    return p


def test_missing_table_is_one_line_error(tmp_path):
    p = _copy(tmp_path)
    with sqlite3.connect(p) as con:
        con.execute("DROP TABLE CUPTI_ACTIVITY_KIND_RUNTIME")
    with pytest.raises(MoeprofError) as e:
        nsys.read_kernels(p)
    msg = str(e.value)
    assert "CUPTI_ACTIVITY_KIND_RUNTIME" in msg and "3.20.3" in msg and "\n" not in msg


def test_missing_column_is_one_line_error(tmp_path):
    p = _copy(tmp_path)
    with sqlite3.connect(p) as con:
        con.execute("ALTER TABLE CUPTI_ACTIVITY_KIND_KERNEL RENAME COLUMN demangledName TO nameId")
    with pytest.raises(MoeprofError, match="lacks columns demangledName"):
        nsys.read_kernels(p)


def test_no_nvtx_table_means_empty_paths(tmp_path):
    p = _copy(tmp_path)
    with sqlite3.connect(p) as con:
        con.execute("DROP TABLE NVTX_EVENTS")
    k = nsys.read_kernels(p)
    assert len(k) == 42 and (k["nvtx_path"] == "").all()


def test_not_an_export(tmp_path):
    p = tmp_path / "empty.sqlite"
    sqlite3.connect(p).close()
    with pytest.raises(MoeprofError, match="not an nsys sqlite export"):
        nsys.read_kernels(p)


def test_profile_command():
    cmd = nsys.profile_command("/x/nsys", Path("/o/bf16"), ["python", "-m", "m"])
    assert cmd[:2] == ["/x/nsys", "profile"] and "--trace=cuda,nvtx" in cmd and "--sample=none" in cmd
    assert cmd[-3:] == ["python", "-m", "m"] and "/o/bf16" in cmd
