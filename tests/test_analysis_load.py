"""Loading capture folders: the real H200 probe fixture, and one-line errors for broken folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from moeprof.analysis.load import EXAMPLE_ENV, load_capture
from moeprof.errors import MoeprofError

FIXTURE = Path(__file__).parent / "data" / "analysis_probe2"


@pytest.fixture
def cap_dir(tmp_path: Path) -> Path:
    dst = tmp_path / "cap"
    shutil.copytree(FIXTURE, dst, ignore=shutil.ignore_patterns("raw", "build.py"))
    return dst


def test_loads_real_capture():
    cap = load_capture(FIXTURE)
    assert cap.gpu_name == "NVIDIA H200"
    assert set(cap.kernels["collector"]) == {"nsys", "ncu"}
    assert len(cap.kernels) == 84
    assert str(cap.kernels["batch"].dtype) == "Int64"
    assert cap.kernels.loc[cap.kernels["collector"] == "ncu", "tensor_ops_fp8"].max() == 8682209280
    assert any("points.csv has no rows" in w for w in cap.warnings)


def _err(path) -> str:
    with pytest.raises(MoeprofError) as exc:
        load_capture(path)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_missing_folder(tmp_path):
    assert "no such capture folder" in _err(tmp_path / "nope")


def test_missing_manifest(cap_dir):
    (cap_dir / "manifest.json").unlink()
    assert "no manifest.json" in _err(cap_dir)


def test_truncated_manifest(cap_dir):
    text = (cap_dir / "manifest.json").read_text()
    (cap_dir / "manifest.json").write_text(text[: len(text) // 2])
    assert "not valid JSON" in _err(cap_dir)


def test_unknown_manifest_version(cap_dir):
    m = json.loads((cap_dir / "manifest.json").read_text())
    m["manifest_version"] = 99
    (cap_dir / "manifest.json").write_text(json.dumps(m))
    assert "manifest version 99 is not supported" in _err(cap_dir)


def test_missing_kernels_file(cap_dir):
    (cap_dir / "kernels.csv").unlink()
    assert "missing kernels.csv" in _err(cap_dir)


def test_truncated_kernels_file(cap_dir):
    data = (cap_dir / "kernels.csv").read_bytes()
    (cap_dir / "kernels.csv").write_bytes(data[: len(data) // 2])
    assert "truncated" in _err(cap_dir)


def test_empty_points_file(cap_dir):
    (cap_dir / "points.csv").write_text("")
    assert "empty file" in _err(cap_dir)


def test_missing_columns(cap_dir):
    import pandas as pd

    k = pd.read_csv(cap_dir / "kernels.csv")
    k.drop(columns=["duration_ns", "kernel_name"]).to_csv(cap_dir / "kernels.csv", index=False)
    msg = _err(cap_dir)
    assert "missing column(s)" in msg and "kernel_name" in msg and "duration_ns" in msg


def test_example_capture_path_configurable(monkeypatch, tmp_path):
    monkeypatch.setenv(EXAMPLE_ENV, str(FIXTURE))
    assert load_capture(None).gpu_name == "NVIDIA H200"
    monkeypatch.setenv(EXAMPLE_ENV, str(tmp_path / "missing"))
    assert "no example capture" in _err(None)
