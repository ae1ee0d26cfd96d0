"""The capture folder contract (moeprof.capture_folder): version-1 captures load, the current version
round-trips, the layer shape has one name, and the tables have one dtype coercion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moeprof import capture_folder as cf
from moeprof.analysis.load import load_capture
from moeprof.analysis.pipeline import analyze
from moeprof.errors import MoeprofError
from moeprof.profiler.collectors import table

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "moeprof" / "data" / "example_capture_h100"
SLICE = ROOT / "tests" / "data" / "example_slice"


def _raw(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_version_1_capture_loads_with_the_contract_names():
    raw = _raw(EXAMPLE)
    assert raw["manifest_version"] == 1 and "expert_intermediate_size" not in raw["workload"]
    m = load_capture(EXAMPLE).manifest
    assert m.manifest_version == 1
    assert m.workload.shape == cf.LayerShape(hidden_size=2880, expert_intermediate_size=raw["workload"]["intermediate_size"],
                                             num_experts=128, top_k=4)
    assert m.gpu.name == raw["gpu"]["name"] and m.gpu.sm_count == raw["gpu"]["sm_count"]
    assert m.collector("ncu").status == "ok" and m.collector("torch").reason == "not in --collect"
    assert m.collector("absent").status is None
    assert m.workload.batches == tuple(raw["workload"]["batches"])
    assert m.extra["shipped"] == raw["shipped"]  # keys the contract does not name are kept


def test_version_2_round_trip_keeps_everything():
    raw = _raw(EXAMPLE)
    v2 = cf.Manifest.from_json(raw).to_json()
    assert v2["manifest_version"] == cf.MANIFEST_VERSION == 2
    assert v2["workload"]["expert_intermediate_size"] == raw["workload"]["intermediate_size"]
    assert "intermediate_size" not in v2["workload"]
    # apart from the version and the shape key, the written form is the version-1 file, key for key
    back = {**v2, "manifest_version": 1,
            "workload": {("intermediate_size" if k == "expert_intermediate_size" else k): v
                         for k, v in v2["workload"].items()}}
    assert back == raw
    assert cf.Manifest.from_json(v2).to_json() == v2


def test_optional_workload_fields_for_foreign_programs():
    w = cf.Workload(mode="external", command=("python3", "serve.py"), labels={"engine": "sglang"},
                    nvtx_pattern=r"layer(?P<batch>\d+)")
    d = w.to_json()
    assert d["labels"] == {"engine": "sglang"} and d["nvtx_pattern"] == r"layer(?P<batch>\d+)"
    assert cf.Workload.from_json(d) == w
    assert "labels" not in cf.Workload().to_json()  # absent unless set


def test_version_2_copy_analyzes_to_the_same_numbers(tmp_path):
    v2 = tmp_path / "slice_v2"
    shutil.copytree(SLICE, v2, ignore=shutil.ignore_patterns("build.py"))
    (v2 / "manifest.json").write_text(cf.manifest_text(cf.Manifest.from_json(_raw(SLICE))))
    assert _raw(v2)["manifest_version"] == 2
    a, b = analyze(load_capture(SLICE)), analyze(load_capture(v2))
    pd.testing.assert_frame_equal(a.layer, b.layer)
    pd.testing.assert_frame_equal(a.memory, b.memory)
    assert a.summary == b.summary


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.update(manifest_version=3), "manifest version 3 is not supported"),
    (lambda m: m.update(schema="other.tool"), "not a moeprof capture manifest"),
    (lambda m: m["workload"].update(tp=0), "workload tp must be a positive integer"),
    (lambda m: m.update(collectors=[1]), "'collectors' must be a JSON object"),
    (lambda m: m["collectors"].update(ncu="ok"), "collector 'ncu' must be a JSON object"),
])
def test_bad_manifests_are_refused_in_one_line(tmp_path, edit, message):
    folder = tmp_path / "cap"
    shutil.copytree(SLICE, folder, ignore=shutil.ignore_patterns("build.py"))
    m = _raw(folder)
    edit(m)
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(MoeprofError) as exc:
        load_capture(folder)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_layer_shape_names():
    assert cf.LayerShape.from_json({"hidden_size": 8, "intermediate_size": 4, "num_experts": 2, "top_k": 1}) == \
        cf.LayerShape.from_json({"hidden_size": 8, "expert_intermediate_size": 4, "num_experts": 2, "top_k": 1})
    assert cf.LayerShape.from_json({"hidden_size": 8, "num_experts": 2, "top_k": 1}) is None
    assert cf.LayerShape.from_json({"hidden_size": 8, "expert_intermediate_size": True, "num_experts": 2,
                                    "top_k": 1}) is None
    shape = cf.LayerShape(8, 4, 2, 1)
    assert shape.layer_kwargs() == {"hidden_size": 8, "intermediate_size": 4, "num_experts": 2, "top_k": 1}


def test_one_coercion_for_writer_and_reader():
    raw = pd.DataFrame({"collector": ["nsys", None], "batch": ["4", 7.6], "duration_ns": ["12.5", "x"],
                        "dram_read_bytes": [1, None], "extra_col": [1, 2]})
    k = table.normalize(raw)
    assert list(k.columns) == list(cf.KERNEL_TABLE_COLUMNS)  # schema order; unknown columns dropped
    assert k["collector"].tolist() == ["nsys", ""]
    assert k["batch"].tolist() == [4, 8] and str(k["batch"].dtype) == "Int64"
    assert k["duration_ns"].iloc[0] == 12.5 and np.isnan(k["duration_ns"].iloc[1])
    assert k["format"].tolist() == ["", ""] and k["repeat"].isna().all() and k["gpu_time_ns"].isna().all()
    kept = cf.coerce_columns(raw, cf.KERNEL_TABLE_COLUMNS, keep_other=True)
    assert list(kept.columns) == [*cf.KERNEL_TABLE_COLUMNS, "extra_col"]
    # the loader reads the shipped table into exactly the writer's dtypes
    loaded = load_capture(SLICE).kernels
    written = table.normalize(loaded)
    assert {c: str(loaded[c].dtype) for c in written} == {c: str(written[c].dtype) for c in written}
    pts = cf.empty_table(cf.POINT_COLUMNS)
    assert list(pts.columns) == list(cf.POINT_COLUMNS) and str(pts["batch"].dtype) == "Int64"


def test_default_sweep_is_one_constant():
    from moeprof.profiler.capture import CaptureConfig

    assert CaptureConfig(out=Path("x")).batches == list(cf.DEFAULT_SWEEP_BATCHES)
    assert CaptureConfig(out=Path("x")).formats == list(cf.DEFAULT_SWEEP_FORMATS)


def test_one_analyze_resolves_the_gpu_and_the_model_once(monkeypatch):
    # The expectations (GPU spec, model, costs, memory, the model's crossover) are resolved from the
    # manifest once, before the metrics; nothing after looks a name up again.
    from moeprof.roofline import gpus, shapes

    looked_up: list[str] = []
    real_gpu, real_model = gpus.get_gpu, shapes.get_model

    def gpu(name):
        if isinstance(name, str):
            looked_up.append(f"gpu {name}")
        return real_gpu(name)

    def model(name):
        if isinstance(name, str):
            looked_up.append(f"model {name}")
        return real_model(name)

    for mod in ("moeprof.roofline.gpus", "moeprof.roofline.cost", "moeprof.roofline.bound"):
        monkeypatch.setattr(f"{mod}.get_gpu", gpu)
    for mod in ("moeprof.roofline.shapes", "moeprof.roofline.cost", "moeprof.roofline.bound"):
        monkeypatch.setattr(f"{mod}.get_model", model)
    result = analyze(load_capture(EXAMPLE))
    assert looked_up == ["gpu h100-sxm", "model gpt-oss-120b"]
    assert result.expectations.gpu.name == "h100-sxm" and result.expectations.model.name == "gpt-oss-120b"
    assert result.summary["predicted_crossover"]["estimate"] == result.summary["predicted_crossover_batch"]
