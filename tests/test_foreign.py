"""Programs moeprof did not write: labels, NVTX patterns, moeprof.mark, the per-kernel report, merged
runs and their bad inputs. Real fixtures: tests/data/grouped_mm_h200 (README there: command, card, date)."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moeprof.capture_folder import labels
from moeprof.analysis import classify, merge
from moeprof.analysis.foreign import kernel_report
from moeprof.analysis.load import load_capture
from moeprof.cli import main
from moeprof.errors import MoeprofError

DATA = Path(__file__).parent / "data" / "grouped_mm_h200"
A, B_FP8, B_BF16 = DATA / "A_fp8_nolabels", DATA / "B_fp8", DATA / "B_bf16"
GROUPED_GEMM = "GroupProblemShape"  # CUTLASS grouped GEMM behind torch._scaled_grouped_mm / torch._grouped_mm
CALLS_PER_BATCH_B = 5  # examples/grouped_mm_gptoss.py --repeats default, as run for the B captures


def _raw(folder: Path) -> pd.DataFrame:
    with gzip.open(folder / "kernels.csv.gz", "rt") as f:
        return pd.read_csv(f, keep_default_na=False, na_values=[""])


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def _one_line_error(capsys, rc: int, needle: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("moeprof: error: ") and err.count("\n") == 1, err
    assert needle in err, err
    return err


# ---- labels: parsing and bad input ------------------------------------------------------------------

def test_parse_labels():
    assert labels.parse_labels(["format=MXFP4", "batch=064"]) == {"format": "mxfp4", "batch": "64"}


@pytest.mark.parametrize("argv, needle", [
    (["--label", "formatfp8"], "expected key=value"),
    (["--label", "=fp8"], "expected key=value"),
    (["--label", "batch=0"], "batch must be a positive integer"),
    (["--label", "batch=-3"], "batch must be a positive integer"),
    (["--label", "batch=1.5"], "batch must be a positive integer"),
    (["--label", "batch=x"], "batch must be a positive integer"),
    (["--label", "format=fp8", "--label", "format=bf16"], "given twice"),
    (["--nvtx-pattern", r"tokens=(\d+)"], "name at least one group"),
    (["--nvtx-pattern", "("], "not a regular expression"),
    (["--ncu-kernel", "("], "not a regular expression"),
])
def test_capture_label_errors(argv, needle, tmp_path, capsys):
    out = tmp_path / "c"
    rc = main(["capture", "-q", *argv, "-o", str(out), "--", "python3", "prog.py"])
    _one_line_error(capsys, rc, needle)
    assert not out.exists()


def test_capture_labels_only_for_programs(tmp_path, capsys):
    rc = main(["capture", "-q", "--label", "format=fp8", "-o", str(tmp_path / "c")])
    _one_line_error(capsys, rc, "apply to `-- CMD`")


def test_external_workload_records_labels_and_pattern(tmp_path):
    from moeprof.profiler.capture import Capture, CaptureConfig

    w = Capture(CaptureConfig(out=tmp_path, command=["python3", "x.py"], labels={"format": "fp8", "batch": "64"},
                              nvtx_pattern=r"tokens=(?P<batch>\d+)"))._workload()
    assert w.labels == {"format": "fp8", "batch": "64"} and w.nvtx_pattern == r"tokens=(?P<batch>\d+)"
    assert w.to_json()["labels"] == w.labels and w.to_json()["nvtx_pattern"] == w.nvtx_pattern


def test_ncu_command_filters_kernels_and_skips_launches():
    from moeprof.profiler.collectors import ncu

    cmd = ncu.profile_command("ncu", Path("o"), ["python3", "x.py"], ["dram__bytes_read.sum"],
                              kernel_regex="cutlass|nvjet", launch_skip=7, launch_count=20)
    joined = " ".join(cmd)
    assert "--kernel-name-base demangled --kernel-name regex:cutlass|nvjet" in joined
    assert "--launch-skip 7 --launch-count 20" in joined and cmd[-2:] == ["python3", "x.py"]
    assert "--launch-skip" not in ncu.profile_command("ncu", Path("o"), ["p"], ["m"])


# ---- moeprof.mark ------------------------------------------------------------------------------------

def test_import_moeprof_is_light():
    code = "import sys, moeprof; assert callable(moeprof.mark); print(sorted({'torch','pandas','numpy','nvtx'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("kw, needle", [
    ({"format": "fp8", "batch": 0}, "batch must be a positive integer"),
    ({"format": "fp8", "batch": True}, "batch must be a positive integer"),
    ({"format": "fp 8", "batch": 1}, "format must be a word"),
    ({"format": "fp8", "batch": 4, "phase": "a/b"}, "phase must be a word"),
])
def test_mark_rejects_bad_values(kw, needle):
    import moeprof

    with pytest.raises(ValueError, match=needle):
        with moeprof.mark(**kw):
            pass


def test_mark_falls_back_to_torch_nvtx(monkeypatch):
    import torch

    from moeprof.profiler import marks

    calls: list[tuple[str, str | None]] = []
    monkeypatch.setitem(sys.modules, "nvtx", None)  # the nvtx package missing
    monkeypatch.setattr(marks, "_backend", None)
    monkeypatch.setattr(torch.cuda.nvtx, "range_push", lambda name: calls.append(("push", name)))
    monkeypatch.setattr(torch.cuda.nvtx, "range_pop", lambda: calls.append(("pop", None)))
    with marks.mark(format="FP8", batch=64, phase="gemm1"):
        calls.append(("body", None))
    assert calls == [("push", "moe"), ("push", "fp8"), ("push", "64"), ("push", "gemm1"), ("body", None),
                     ("pop", None), ("pop", None), ("pop", None), ("pop", None)]


def test_mark_paths_parse_as_moeprof_layer_paths():
    from moeprof.profiler.marks import check_label
    from moeprof.capture_folder.labels import split_path

    parts = split_path(pd.Series(["/".join(check_label("mxfp4", 256, "gemm2"))]))
    assert (parts["format"][0], int(parts["batch"][0]), parts["phase"][0]) == ("mxfp4", 256, "gemm2")


def test_example_runs_on_cpu_with_marks():
    root = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, str(root / "examples" / "grouped_mm_gptoss.py"), "--format", "bf16",
                        "--device", "cpu", "--shape", "64,32,8,2", "--batches", "1,16", "--repeats", "2",
                        "--warmup", "1", "--marks", "moeprof"], capture_output=True, text=True,
                       env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "batch    16: ran 2 calls" in p.stdout


# ---- roles ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, role", [
    ("at::cuda::detail::prepare_grouped_gemm_data<cutlass::float_e4m3_t, float>", "sort"),
    ("ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096>)", "communication"),
    ("cutlass::device_kernel<cutlass::gemm::kernel::GemmUniversal<cutlass::gemm::GroupProblemShape<int>>>", "gemm"),
])
def test_role_from_name(name, role):
    assert classify.role_from_name(name) == role


def test_roles_of_the_real_grouped_gemm_program():
    """Each layer call of the program launches the router GEMM (cuBLAS nvjet), top-k, sort, then the
    CUTLASS grouped GEMM twice: gate/up first, down second (see examples/grouped_mm_gptoss.py)."""
    raw = _raw(A)
    nsys = raw[raw["collector"] == "nsys"].sort_values("start_ns")
    grouped = nsys[nsys["kernel_name"].str.contains(GROUPED_GEMM)]
    calls = 4 * (3 + 1)  # 4 batches x (3 timed + 1 warm-up calls), as captured
    assert len(grouped) == 2 * calls
    k = classify.classify(load_capture(A).kernels)
    roles = k.loc[grouped.index, "role"].astype(str).tolist()
    assert roles == ["gemm1", "gemm2"] * calls
    router = nsys[nsys["kernel_name"].str.startswith("nvjet_")]
    assert len(router) == calls and set(k.loc[router.index, "role"].astype(str)) == {"route"}
    prepare = nsys[nsys["kernel_name"].str.contains("prepare_grouped_gemm_data")]
    assert set(k.loc[prepare.index, "role"].astype(str)) == {"sort"}


def test_kernel_report_joins_ncu_counters_to_the_gemm_roles():
    report = kernel_report(load_capture(A))
    t = report.table
    gemm = t[t["kernel_name"].str.contains(GROUPED_GEMM)].set_index(t["role"].astype(str)[t["kernel_name"].str.contains(GROUPED_GEMM)])
    assert sorted(gemm.index) == ["gemm1", "gemm2"] and (gemm["calls"] == 16).all()
    assert (gemm["tensor_path"] == "fp8").all()  # torch._scaled_grouped_mm ran FP8 MMAs
    assert any("48 of 48 matched" in n for n in report.notes)
    # Independent derivation from the raw ncu rows: the grouped GEMM's ncu launches alternate gate/up, down.
    raw = _raw(A)
    ncu = raw[(raw["collector"] == "ncu") & raw["kernel_name"].str.contains(GROUPED_GEMM)].reset_index(drop=True)
    for role, rows in (("gemm1", ncu.iloc[0::2]), ("gemm2", ncu.iloc[1::2])):
        bw = (rows["dram_read_bytes"] + rows["dram_write_bytes"]).sum() / rows["gpu_time_ns"].sum() * 1e9
        assert gemm.loc[role, "dram_bw_bytes_per_s"] == pytest.approx(bw, rel=1e-9)
        assert gemm.loc[role, "ncu_launches"] == len(rows)
        assert rows["tensor_ops_fp8"].gt(0).all() and rows["tensor_ops_bf16_hgmma"].fillna(0).eq(0).all()
    total = raw.loc[raw["collector"] == "nsys", "duration_ns"].sum()
    assert report.total_time_ns == pytest.approx(total)
    assert t["share_pct"].sum() == pytest.approx(100.0)


def test_analyze_unlabelled_program_prints_kernels_and_how_to_label(capsys):
    before = _snapshot(A)
    assert main(["analyze", str(A), "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    roles = {r["role"] for r in d["kernels"]}
    assert {"route", "sort", "quant", "gemm1", "gemm2"} <= roles
    assert any("--label format=fp8 --label batch=64" in h for h in d["hints"])
    assert any("moeprof.mark" in h for h in d["hints"])
    assert main(["analyze", str(A)]) == 0
    out = capsys.readouterr().out
    assert "gemm1" in out and "--nvtx-pattern" in out
    assert _snapshot(A) == before


# ---- labels applied at analyze time -----------------------------------------------------------------

def test_analyze_time_pattern_reproduces_capture_time_labels():
    cap = load_capture(B_FP8)
    blank = cap.kernels.assign(format="", batch=pd.NA, repeat=pd.NA)
    relabelled, _ = labels.relabel(blank, {"format": "fp8"}, labels.compile_pattern(r"tokens=(?P<batch>\d+)"))
    for col in ("format", "batch", "repeat"):
        pd.testing.assert_series_equal(relabelled[col], cap.kernels[col], check_names=False)
    # and independently: the batch is the number in the program's own range name
    want = cap.kernels["nvtx_path"].str.extract(r"tokens=(\d+)")[0].astype("Int64")
    pd.testing.assert_series_equal(relabelled["batch"], want, check_names=False)
    per_batch = relabelled.dropna(subset=["batch"]).groupby("batch")["repeat"].nunique()
    assert (per_batch == CALLS_PER_BATCH_B).all()


def test_pattern_matching_nothing_is_one_line(capsys):
    before = _snapshot(B_FP8)
    rc = main(["analyze", str(B_FP8), "--nvtx-pattern", r"decode_bs=(?P<batch>\d+)"])
    _one_line_error(capsys, rc, "matches none of the")
    assert _snapshot(B_FP8) == before


def test_verdict_from_labelled_runs_matches_plain_pandas(capsys):
    assert main(["analyze", str(B_FP8), str(B_BF16), "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    got = {v["batch"]: v for v in d["verdicts"]}
    # Plain pandas: the batch of each launch from its NVTX path, mean GPU time per layer call.
    mean_ns = {}
    for fmt, folder, rx in (("fp8", B_FP8, r"tokens=(\d+)"), ("bf16", B_BF16, r"^moe/bf16/(\d+)")):
        raw = _raw(folder)
        raw = raw[raw["collector"] == "nsys"]
        batch = raw["nvtx_path"].str.extract(rx)[0].dropna().astype(int)
        per_batch = raw.loc[batch.index, "duration_ns"].groupby(batch).sum() / CALLS_PER_BATCH_B
        mean_ns[fmt] = per_batch
    assert sorted(got) == sorted(mean_ns["fp8"].index) == [1, 16, 256, 4096]
    for b, v in got.items():
        winner = min(("fp8", "bf16"), key=lambda f: mean_ns[f][b])
        assert v["winner"] == winner
        for f in ("fp8", "bf16"):
            assert v["times_ns"][f] == pytest.approx(mean_ns[f][b], rel=0.03)  # median vs mean of 5 tight calls


# ---- merging runs: bad input ------------------------------------------------------------------------

def _copy(src: Path, dst: Path, edit=None) -> Path:
    shutil.copytree(src, dst)
    if edit:
        m = json.loads((dst / "manifest.json").read_text())
        edit(m)
        (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_different_cards_refused_unless_forced(tmp_path, capsys):
    other = _copy(B_BF16, tmp_path / "h100", lambda m: m["gpu"].update(name="NVIDIA H100 80GB HBM3", spec="h100-sxm"))
    before = _snapshot(other), _snapshot(B_FP8)
    _one_line_error(capsys, main(["analyze", str(B_FP8), str(other)]), "different GPUs")
    assert main(["analyze", str(B_FP8), str(other), "--force", "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert any("different GPUs" in n for n in d["notes"])
    assert (_snapshot(other), _snapshot(B_FP8)) == before


def test_different_program_refused(tmp_path, capsys):
    other = _copy(B_BF16, tmp_path / "p", lambda m: m["workload"].update(command=["python3", "serve.py"]))
    _one_line_error(capsys, main(["analyze", str(B_FP8), str(other)]), "different programs")


def test_same_point_twice_refused(tmp_path, capsys):
    twin = _copy(B_FP8, tmp_path / "twin")
    _one_line_error(capsys, main(["analyze", str(B_FP8), str(twin)]), "the same point twice")


def test_unlabelled_run_is_not_merged(capsys):
    _one_line_error(capsys, main(["analyze", str(A), str(B_BF16)]), "no format/batch labels to merge")


def test_capture_without_kernels_is_one_line(tmp_path, capsys):
    empty = _copy(A, tmp_path / "empty")
    (empty / "kernels.csv.gz").unlink()
    header = _raw(A).columns
    (empty / "kernels.csv").write_text(",".join(header) + "\n")
    before = _snapshot(empty)
    _one_line_error(capsys, main(["analyze", str(empty)]), "no GPU kernels")
    assert _snapshot(empty) == before


def test_program_of():
    assert merge.program_of(["python3", "examples/grouped_mm_gptoss.py", "--format", "fp8"]) == "grouped_mm_gptoss.py"
    assert merge.program_of(["python", "-u", "-m", "sglang.bench_one_batch", "--x"]) == "sglang.bench_one_batch"
    assert merge.program_of(["./serve", "--port", "1"]) == "serve"


def test_model_override_sets_the_roofline(capsys):
    assert main(["analyze", str(B_FP8), str(B_BF16), "--model", "gpt-oss-20b", "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["workload"]["model"] == "gpt-oss-20b" and d["workload"]["num_experts"] == 32


def test_ncu_timing_keeps_its_own_counters():
    report = kernel_report(load_capture(A), timing="ncu")
    gemm = report.table[report.table["kernel_name"].str.contains(GROUPED_GEMM)]
    raw = _raw(A)
    profiled = ((raw["collector"] == "ncu") & raw["kernel_name"].str.contains(GROUPED_GEMM)).sum()
    assert gemm["calls"].sum() == profiled and (gemm["tensor_path"] == "fp8").all()
    assert any("ncu replay" in n for n in report.notes)


def test_duplicated_launches_are_dropped_and_said(tmp_path):
    dup = _copy(A, tmp_path / "dup")
    raw = _raw(A)
    nsys = raw[raw["collector"] == "nsys"]
    pd.concat([raw, nsys.iloc[:3]]).to_csv(dup / "kernels.csv.gz", index=False)
    report = kernel_report(load_capture(dup))
    assert any("kernels.csv: 3 rows dropped: duplicated launches" in n for n in report.notes)  # at load
    assert report.total_time_ns == pytest.approx(nsys["duration_ns"].sum())


def test_capture_whose_pattern_labelled_nothing_is_still_analyzed(tmp_path, capsys):
    def record_failed_pattern(m):
        m["workload"]["labels"] = {}
        m["workload"]["nvtx_pattern"] = r"decode_bs=(?P<batch>\d+)"
        m["label_errors"] = ["--nvtx-pattern 'decode_bs=(?P<batch>\\d+)' matches none of the launches"]

    failed = _copy(A, tmp_path / "failed", record_failed_pattern)
    assert main(["analyze", str(failed), "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert any("labelled nothing at capture time" in n for n in d["notes"]) and d["hints"]
