"""Capture orchestration on CPU: children are faked, folder/manifest/resume/failure logic is real."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moeprof import capture_folder as schema
from moeprof.cli import main
from moeprof.errors import MoeprofError
from moeprof.profiler import capture as cap


def _kernels(folder: Path) -> pd.DataFrame:
    """The capture's kernel table in whichever form it was written (Parquet or CSV)."""
    from moeprof.profiler.capture import CaptureFolder

    return CaptureFolder(folder, {}).read_kernels()

FIX = Path(__file__).parent / "fixtures"
SHAPE = dict(hidden_size=64, intermediate_size=32, num_experts=4, top_k=2)


@pytest.fixture
def fake_gpu(monkeypatch):
    """A machine with a GPU and torch, whose children succeed except where `fail` says."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "torch" else real(n, *a))
    monkeypatch.setattr(cap, "describe_machine", lambda timeout=300: {
        "gpu": {"name": "NVIDIA H200", "compute_capability": "9.0", "sm_count": 132},
        "software": {"torch": "2.11.0"}, "cuda_available": True})
    state = {"fail": set(), "calls": [], "interrupt_after": None}

    def run(cmd, log, env, timeout):
        spec = json.loads(Path(cmd[-1]).read_text())
        state["calls"].append((spec["mode"], spec["format"], tuple(spec["batches"])))
        if state["interrupt_after"] is not None and len(state["calls"]) > state["interrupt_after"]:
            raise KeyboardInterrupt
        with open(spec["status"], "a") as f:
            for b in spec["batches"]:
                if (spec["format"], b) in state["fail"]:
                    f.write(json.dumps({"format": spec["format"], "batch": b, "status": "failed",
                                        "reason": "OutOfMemoryError: CUDA out of memory"}) + "\n")
                else:
                    times = state["time_ns"](spec["format"], b) if "time_ns" in state else [1e5, 1.1e5]
                    f.write(json.dumps({"format": spec["format"], "batch": b, "status": "ok", "kernel": "k",
                                        "layer_time_ns": times, "experts_touched": 3}) + "\n")
        log.write_text("done\n")
        return 0, "done\n"

    monkeypatch.setattr(cap, "_run_logged", run)
    return state


def _cfg(out, **kw):
    base = dict(out=out, formats=["bf16", "fp8"], batches=[1, 8], shape=dict(SHAPE), collect=[], repeats=2, quiet=True)
    base.update(kw)
    return cap.CaptureConfig(**base)


def test_sweep_writes_folder(fake_gpu, tmp_path):
    m = cap.capture(_cfg(tmp_path / "c"))
    assert m["status"] == "complete" and m["manifest_version"] == schema.MANIFEST_VERSION
    assert m["points_done"] == [["bf16", 1], ["bf16", 8], ["fp8", 1], ["fp8", 8]]
    assert m["workload"]["model"] == "custom" and m["workload"]["hidden_size"] == 64
    assert m["collectors"]["nsys"]["status"] == "skipped"
    on_disk = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(m, default=str))
    # written in the contract's current form: the layer shape under its one name
    assert on_disk["workload"]["expert_intermediate_size"] == 32 and "intermediate_size" not in on_disk["workload"]
    assert schema.read_manifest(tmp_path / "c").workload.shape == schema.LayerShape(64, 32, 4, 2)
    p = pd.read_csv(tmp_path / "c" / "points.csv")
    assert list(p.columns) == list(schema.POINT_COLUMNS) and len(p) == 8
    k = _kernels(tmp_path / "c")
    assert len(k) == 0 and list(k.columns)[:3] == ["collector", "format", "batch"]
    # one child per format, not per point
    assert fake_gpu["calls"] == [("events", "bf16", (1, 8)), ("events", "fp8", (1, 8))]
    assert not list((tmp_path / "c").glob("*.tmp"))


def test_failed_point_is_isolated_and_resumed(fake_gpu, tmp_path):
    fake_gpu["fail"] = {("fp8", 8)}
    m = cap.capture(_cfg(tmp_path / "c"))
    assert m["status"] == "partial"
    assert m["points_failed"] == [["fp8", 8, "OutOfMemoryError: CUDA out of memory"]]
    assert ["fp8", 8] not in m["points_done"] and len(m["points_done"]) == 3
    with pytest.raises(MoeprofError, match="already holds a capture"):
        cap.capture(_cfg(tmp_path / "c"))
    fake_gpu["fail"], fake_gpu["calls"] = set(), []
    m = cap.capture(_cfg(tmp_path / "c", resume=True, formats=["ignored"], batches=[99]))
    assert m["status"] == "complete" and m["points_failed"] == []
    assert fake_gpu["calls"] == [("events", "fp8", (8,))]  # only the unfinished point ran again
    p = pd.read_csv(tmp_path / "c" / "points.csv")
    assert sorted(set(zip(p["format"], p["batch"]))) == [("bf16", 1), ("bf16", 8), ("fp8", 1), ("fp8", 8)]
    assert len(p) == 8  # no duplicated rows
    assert m["resumed_utc"]


def test_interrupted_sweep_keeps_finished_points(fake_gpu, tmp_path):
    fake_gpu["interrupt_after"] = 1
    with pytest.raises(KeyboardInterrupt):
        cap.capture(_cfg(tmp_path / "c"))
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert m["status"] == "running" and m["points_done"] == [["bf16", 1], ["bf16", 8]]
    fake_gpu["interrupt_after"], fake_gpu["calls"] = None, []
    m = cap.capture(_cfg(tmp_path / "c", resume=True))
    assert m["status"] == "complete" and fake_gpu["calls"] == [("events", "fp8", (1, 8))]


def test_missing_tools_recorded(fake_gpu, tmp_path, monkeypatch):
    monkeypatch.setattr(cap.tools, "find_nsys", lambda: None)
    monkeypatch.setattr(cap.tools, "find_ncu", lambda: None)
    m = cap.capture(_cfg(tmp_path / "c", collect=["nsys", "ncu", "torch"]))
    assert m["collectors"]["nsys"]["status"] == "failed" and "nsys not found" in m["collectors"]["nsys"]["reason"]
    assert m["collectors"]["ncu"]["status"] == "failed"
    # the torch fallback ran; the fake child writes no trace, so it is recorded as failed with the log's word
    assert m["collectors"]["torch"]["status"] == "failed" and m["collectors"]["torch"]["reason"] == "no trace: done"
    assert ("torch", "bf16", (1, 8)) in fake_gpu["calls"]
    assert m["status"] == "complete"  # events timing still covers every point


def test_nsys_unit_reads_real_export(fake_gpu, tmp_path, monkeypatch):
    """The nsys unit end to end with the real fixture export standing in for the profiler's output."""
    monkeypatch.setattr(cap.tools, "find_nsys", lambda: "/fake/nsys")
    monkeypatch.setattr(cap.tools, "tool_version", lambda path, env=None: "2025.3.1.0")
    run0 = cap._run_logged

    def run(cmd, log, env, timeout):
        if cmd[0] == "/fake/nsys":
            out = Path(cmd[cmd.index("-o") + 1])
            out.with_suffix(".nsys-rep").write_bytes(b"rep")
            return run0(cmd[cmd.index("--force-overwrite=true") + 1:], log, env, timeout)
        return run0(cmd, log, env, timeout)

    def export(nsys, rep, env=None, timeout=0):
        dst = rep.with_suffix(".sqlite")
        shutil.copy(FIX / "nsys_nested.sqlite", dst)
        return dst

    monkeypatch.setattr(cap, "_run_logged", run)
    monkeypatch.setattr(cap.nsys_mod, "export_sqlite", export)
    m = cap.capture(_cfg(tmp_path / "c", formats=["bf16"], batches=[256], collect=["nsys"]))
    assert m["collectors"]["nsys"]["status"] == "ok"
    assert m["collectors"]["nsys"]["files"] == ["raw/nsys/bf16_b256.nsys-rep", "raw/nsys/bf16_b256.sqlite"]
    k = _kernels(tmp_path / "c")
    assert len(k) == 18 and set(k["format"]) == {"bf16"}  # setup kernels and the fp8 calls are not this point's
    assert set(k["repeat"]) == {0, 1}


def test_no_gpu_is_one_line_error(monkeypatch, tmp_path, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "torch" else real(n, *a))
    monkeypatch.setattr(cap, "describe_machine", lambda timeout=300: {"gpu": {}, "software": {}, "cuda_available": False})
    rc = main(["capture", "-q", "--shape", "64,32,4,2", "-o", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("moeprof: error: no CUDA GPU") and err.count("\n") == 1
    assert not (tmp_path / "c").exists()


def test_no_torch_is_one_line_error(monkeypatch, tmp_path, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "torch" else real(n, *a))
    rc = main(["capture", "-q", "--shape", "64,32,4,2", "-o", str(tmp_path / "c")])
    assert rc == 2 and "PyTorch is not installed" in capsys.readouterr().err


def test_cli_argument_errors(tmp_path, capsys):
    assert main(["capture", "--batch", "1,x", "-o", str(tmp_path / "c")]) == 2
    assert "--batch" in capsys.readouterr().err
    assert main(["capture", "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err


def test_ncu_unit_reads_real_csv_and_flags_launch_bound(fake_gpu, tmp_path, monkeypatch):
    monkeypatch.setattr(cap.tools, "find_ncu", lambda: "/fake/ncu")
    monkeypatch.setattr(cap.tools, "tool_version", lambda path, env=None: "2025.3.1.0")
    monkeypatch.setattr(cap.tools, "import_ncu_report", lambda path=None: None)
    names = cap.ncu_mod.parse_query_metrics((FIX / "ncu_query_metrics_gh100_slice.txt").read_text())
    monkeypatch.setattr(cap.ncu_mod, "query_metrics", lambda ncu, chip, timeout=0: names)
    run0 = cap._run_logged

    def run(cmd, log, env, timeout):
        if cmd[0] == "/fake/ncu":
            assert "--nvtx-include" in cmd and cmd[cmd.index("--nvtx-include") + 1] == "moe/"
            Path(cmd[cmd.index("-o") + 1] + ".ncu-rep").write_bytes(b"rep")
            return run0(cmd[cmd.index("-f") + 1:], log, env, timeout)
        return run0(cmd, log, env, timeout)

    def export(ncu, rep, timeout=0):
        dst = rep.with_suffix(".csv")
        shutil.copy(FIX / "ncu_raw_base_slice.csv", dst)
        return dst

    monkeypatch.setattr(cap, "_run_logged", run)
    monkeypatch.setattr(cap.ncu_mod, "export_csv", export)
    m = cap.capture(_cfg(tmp_path / "c", formats=["bf16"], batches=[256], collect=["ncu"], ncu_launch_count=20))
    ent = m["collectors"]["ncu"]
    assert ent["status"] == "ok" and ent["options"]["reader"] == "csv"
    # The real CSV predates the fp16 / tensor-instruction counters: they are reported missing, not silently empty.
    assert ent["options"]["metrics_unknown_to_chip"] == []
    assert sorted(ent["options"]["metrics_missing"]) == ["sm__inst_executed_pipe_tensor.sum",
                                                          "sm__ops_path_tensor_src_fp16.sum"]
    assert ent["options"]["launch_count_reached"] == ["bf16_b256"]
    k = _kernels(tmp_path / "c")
    assert set(k["collector"]) == {"ncu"} and len(k) == 20 and k["dram_read_bytes"].notna().all()


def test_external_mode_records_a_named_model_for_the_roofline(tmp_path):
    from moeprof.profiler.capture import Capture, CaptureConfig

    cmd = ["python3", "serve.py", "--batch", "[64]"]
    named = Capture(CaptureConfig(out=tmp_path / "a", command=cmd, model="gpt-oss-20b"))._workload()
    assert named.mode == "external" and list(named.command) == cmd
    assert (named.model, named.shape.num_experts, named.shape.top_k, named.shape.hidden_size) == ("gpt-oss-20b", 32, 4, 2880)
    anonymous = Capture(CaptureConfig(out=tmp_path / "b", command=cmd))._workload()
    assert anonymous.model is None and anonymous.shape is None and "num_experts" not in anonymous.to_json()
    sweep = Capture(CaptureConfig(out=tmp_path / "c"))._workload()
    assert sweep.mode == "moe" and sweep.model == "gpt-oss-120b" and sweep.to_json()["num_experts"] == 128


def test_external_capture_labels_kernels_and_reports_a_pattern_matching_nothing(fake_gpu, tmp_path, monkeypatch, capsys):
    """External mode with the real nsys fixture export: whole-run labels fill the launches outside
    moeprof's moe/ ranges; a pattern that matches nothing keeps the table, is recorded and fails the command."""
    monkeypatch.setattr(cap.tools, "find_nsys", lambda: "/fake/nsys")
    monkeypatch.setattr(cap.tools, "tool_version", lambda path, env=None: "2025.3.1.0")

    def run(cmd, log, env, timeout):
        assert cmd[0] == "/fake/nsys" and cmd[-2:] == ["python3", "prog.py"]
        Path(cmd[cmd.index("-o") + 1]).with_suffix(".nsys-rep").write_bytes(b"rep")
        log.write_text("ok\n")
        return 0, "ok\n"

    def export(nsys, rep, env=None, timeout=0):
        dst = rep.with_suffix(".sqlite")
        shutil.copy(FIX / "nsys_nested.sqlite", dst)
        return dst

    monkeypatch.setattr(cap, "_run_logged", run)
    monkeypatch.setattr(cap.nsys_mod, "export_sqlite", export)
    out = tmp_path / "ext"
    rc = main(["capture", "-q", "--collect", "nsys", "--label", "format=fp8", "--label", "batch=32",
               "--nvtx-pattern", r"decode_bs=(?P<batch>\d+)", "-o", str(out), "--", "python3", "prog.py"])
    err = capsys.readouterr().err
    assert rc == 2 and "matches none of the" in err and "kept unlabelled" in err and err.count("moeprof: error") == 1
    m = json.loads((out / "manifest.json").read_text())
    assert m["workload"]["labels"] == {"format": "fp8", "batch": "32"} and len(m["label_errors"]) == 1
    k = _kernels(out)
    own = k["nvtx_path"].str.contains(r"(?:^|/)moe/[^/]+/\d+")
    assert set(k.loc[own, "format"]) == {"bf16", "fp8"}  # moeprof's own ranges keep their labels
    assert (k.loc[~own, "format"] == "fp8").all() and (k.loc[~own, "batch"] == 32).all()


@pytest.fixture
def external_capture(fake_gpu, tmp_path, monkeypatch):
    """An external-mode capture folder whose nsys run wrote no report; _run_logged records what would run."""
    monkeypatch.setattr(cap.tools, "find_nsys", lambda: "/fake/nsys")
    monkeypatch.setattr(cap.tools, "tool_version", lambda path, env=None: "2025.3.1.0")
    ran: list[list[str]] = []

    def run(cmd, log, env, timeout):
        ran.append(list(cmd))
        return 1, "no report\n"

    monkeypatch.setattr(cap, "_run_logged", run)
    out = tmp_path / "ext"
    m = cap.capture(_cfg(out, command=["python3", "stored_prog.py"], collect=["nsys"]))
    assert m["workload"]["command"] == ["python3", "stored_prog.py"] and ran[-1][-2:] == ["python3", "stored_prog.py"]
    ran.clear()
    return out, ran


def test_resume_never_runs_the_stored_command_unasked(external_capture, capsys):
    out, ran = external_capture
    before = (out / "manifest.json").read_text()
    rc = main(["capture", "-q", "-o", str(out), "--resume"])  # stdin is not a terminal here
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "python3 stored_prog.py" in err and "--yes" in err
    assert ran == [] and (out / "manifest.json").read_text() == before


def test_resume_asks_on_a_terminal(external_capture):
    out, ran = external_capture
    questions: list[str] = []

    def no(q: str) -> bool:
        questions.append(q)
        return False

    with pytest.raises(MoeprofError, match="not confirmed"):
        cap.capture(_cfg(out, resume=True, confirm=no))
    assert ran == [] and "python3 stored_prog.py" in questions[0]
    cap.capture(_cfg(out, resume=True, confirm=lambda q: True))
    assert ran[-1][-2:] == ["python3", "stored_prog.py"]


def test_resume_takes_the_command_line_or_yes(external_capture):
    out, ran = external_capture
    cap.capture(_cfg(out, resume=True, command=["python3", "typed.py"]))
    assert ran[-1][-2:] == ["python3", "typed.py"]
    cap.capture(_cfg(out, resume=True, assume_yes=True))
    assert ran[-1][-2:] == ["python3", "stored_prog.py"]


def test_resume_shows_stored_control_characters_escaped(external_capture):
    out, ran = external_capture
    m = json.loads((out / "manifest.json").read_text())
    m["workload"]["command"] = ["python3", "x.py\x1b[2J"]
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(MoeprofError) as exc:
        cap.capture(_cfg(out, resume=True))
    assert "\x1b" not in str(exc.value) and "\\x1b[2J" in str(exc.value) and ran == []


@pytest.mark.parametrize("key, value", [("formats", ["bf16", "$(touch pwned)"]), ("batches", [1, -4]),
                                        ("batches", [1, 4.6]), ("kernel", "os.system"), ("workload", "other"),
                                        ("top_k", 10**100), ("refined_points", [["fp8", 0]])])
def test_resume_refuses_a_tampered_sweep(fake_gpu, tmp_path, key, value):
    out = tmp_path / "c"
    fake_gpu["fail"] = {("fp8", 8)}
    cap.capture(_cfg(out))
    m = json.loads((out / "manifest.json").read_text())
    m["workload"][key] = value
    (out / "manifest.json").write_text(json.dumps(m))
    fake_gpu["calls"].clear()
    with pytest.raises(MoeprofError, match=f"workload: {key}|workload: .*{key}|{key} must"):
        cap.capture(_cfg(out, resume=True))
    assert fake_gpu["calls"] == []


def test_resume_of_a_sweep_takes_no_command(fake_gpu, tmp_path):
    out = tmp_path / "c"
    fake_gpu["fail"] = {("fp8", 8)}
    cap.capture(_cfg(out))
    with pytest.raises(MoeprofError, match="takes no command"):
        cap.capture(_cfg(out, resume=True, command=["sh", "-c", "echo"]))


def test_refine_crossover_locates_a_planted_crossing(fake_gpu, tmp_path):
    """Layer times a = 100 + b ns and b = 50 + 1.5 b ns cross at batch 100 (solve 100 + b = 50 + 1.5 b)."""
    from moeprof.profiler import refine

    fake_gpu["time_ns"] = lambda fmt, b: [100.0 + b, 100.0 + b + 0.5] if fmt == "bf16" else [50.0 + 1.5 * b] * 2
    out = tmp_path / "c"
    cap.capture(_cfg(out, batches=[1, 16, 256, 4096]))
    fake_gpu["calls"].clear()
    lines: list[str] = []
    br = refine.refine_crossover(out, "bf16", "fp8", echo=lines.append)
    assert br.lo <= 100 <= br.hi and br.hi <= 1.10 * br.lo
    assert (br.before, br.after) == ("fp8", "bf16") and abs(br.estimate - 100) < 2
    mids = [c[2][0] for c in fake_gpu["calls"] if c[1] == "bf16"]
    assert mids == [64, 128, 91, 108, 99]  # sqrt(16*256), sqrt(64*256), sqrt(64*128), ... rounded
    assert [c[:2] for c in fake_gpu["calls"]] == [("events", f) for _ in mids for f in ("bf16", "fp8")]
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "complete" and len(m["points_done"]) == 8 + 2 * len(mids)
    assert m["workload"]["batches"] == [1, 16, 256, 4096]
    p = pd.read_csv(out / "points.csv")
    assert not p.duplicated(["format", "batch", "repeat"]).any() and len(p) == 2 * (8 + 2 * len(mids))
    assert "located" in lines[-1]


def test_refine_bracket_and_midpoints():
    from moeprof.profiler.refine import bracket, next_batch

    t = pd.DataFrame({"a": [1.0, 2.0, 4.0, 8.0], "b": [2.0, 3.0, 3.0, 3.0]}, index=[1, 4, 16, 64])
    br = bracket(t, "a", "b")
    assert (br.lo, br.hi, br.before, br.after) == (4, 16, "a", "b")
    # log(2/3) at 4, log(4/3) at 16: zero at log 4 + log(1.5)/log(2) * log 4 = 4 * 4**0.585
    assert br.estimate == pytest.approx(4 * 4 ** (np.log(1.5) / np.log(2)))
    assert bracket(t.assign(b=[9.0] * 4), "a", "b") is None
    assert bracket(t.assign(a=[1.0, np.nan, 4.0, 8.0]), "a", "b").lo == 1  # NaN left out
    assert next_batch(256, 1024) == 512 and next_batch(99, 108) == 103 and next_batch(7, 8) is None
    assert next_batch(1, 3) == 2


def test_kernel_table_is_parquet_with_dictionary_names(fake_gpu, tmp_path, monkeypatch, capsys):
    """The real nsys fixture through the nsys unit: stored as Parquet, text dictionary-encoded, loaded
    back as the same table by analysis; a second kernel-table form beside it is refused."""
    pq = pytest.importorskip("pyarrow.parquet")
    from moeprof.analysis.load import load_capture

    monkeypatch.setattr(cap.tools, "find_nsys", lambda: "/fake/nsys")
    monkeypatch.setattr(cap.tools, "tool_version", lambda path, env=None: "2025.3.1.0")
    run0 = cap._run_logged

    def run(cmd, log, env, timeout):
        if cmd[0] == "/fake/nsys":
            Path(cmd[cmd.index("-o") + 1]).with_suffix(".nsys-rep").write_bytes(b"rep")
            return run0(cmd[cmd.index("--force-overwrite=true") + 1:], log, env, timeout)
        return run0(cmd, log, env, timeout)

    monkeypatch.setattr(cap, "_run_logged", run)
    monkeypatch.setattr(cap.nsys_mod, "export_sqlite",
                        lambda nsys, rep, env=None, timeout=0: Path(shutil.copy(FIX / "nsys_nested.sqlite", rep.with_suffix(".sqlite"))))
    out = tmp_path / "c"
    cap.capture(_cfg(out, formats=["bf16"], batches=[256], collect=["nsys"]))
    assert not (out / "kernels.csv").exists()
    meta = pq.ParquetFile(out / "kernels.parquet").metadata
    cols = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i).encodings
            for i in range(meta.num_columns)}
    for c in ("kernel_name", "nvtx_path", "format", "phase"):
        assert any("DICT" in e for e in cols[c]), (c, cols[c])
    direct = cap.nsys_mod.read_kernels(FIX / "nsys_nested.sqlite")
    direct = direct[direct["format"] == "bf16"].reset_index(drop=True)
    loaded = load_capture(out).kernels
    assert len(loaded) == len(direct) == 18
    for c in ("kernel_name", "nvtx_path", "phase", "start_ns", "duration_ns", "repeat", "grid_x"):
        assert loaded[c].astype(str).tolist() == direct[c].astype(str).tolist(), c
    (out / "kernels.csv").write_text("collector,format,batch,kernel_name,duration_ns\n")
    assert main(["analyze", str(out)]) == 2
    assert "holds both kernels.parquet and kernels.csv" in capsys.readouterr().err


def test_resume_on_another_card_is_refused(fake_gpu, tmp_path, monkeypatch):
    out = tmp_path / "c"
    fake_gpu["fail"] = {("fp8", 8)}
    cap.capture(_cfg(out))
    monkeypatch.setattr(cap, "describe_machine", lambda timeout=300: {
        "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}, "software": {}, "cuda_available": True})
    fake_gpu["calls"].clear()
    with pytest.raises(MoeprofError, match="captured on NVIDIA H200, this machine has NVIDIA H100"):
        cap.capture(_cfg(out, resume=True))
    assert fake_gpu["calls"] == []


def test_interrupt_inside_nsys_keeps_the_batches_its_report_finished(fake_gpu, tmp_path, monkeypatch):
    """A stop while nsys runs: nsys writes its report (here the real fixture export: bf16 and fp8 calls at
    batch 256), the child had finished batch 256 and not 1024; 256 is recorded from the report, 1024 is not."""
    import signal

    monkeypatch.setattr(cap.tools, "find_nsys", lambda: "/fake/nsys")
    monkeypatch.setattr(cap.tools, "tool_version", lambda path, env=None: "2025.3.1.0")
    run_events = cap._run_logged  # the fake_gpu child: every batch ok

    def run(cmd, log, env, timeout):
        if cmd[0] != "/fake/nsys":
            return run_events(cmd, log, env, timeout)
        spec = json.loads(Path(cmd[-1]).read_text())
        with open(spec["status"], "a") as f:  # the child's own record of the batch it finished
            f.write(json.dumps({"format": "bf16", "batch": 256, "status": "ok"}) + "\n")
        Path(cmd[cmd.index("-o") + 1]).with_suffix(".nsys-rep").write_bytes(b"rep")
        cap._Stop.signum = signal.SIGINT  # what the handler records when the signal arrives
        return 130, "interrupted\n"

    monkeypatch.setattr(cap, "_run_logged", run)
    monkeypatch.setattr(cap.nsys_mod, "export_sqlite", lambda nsys, rep, env=None, timeout=0:
                        Path(shutil.copy(FIX / "nsys_nested.sqlite", rep.with_suffix(".sqlite"))))
    out = tmp_path / "c"
    with pytest.raises(cap.CaptureInterrupted) as exc:
        cap.capture(_cfg(out, formats=["bf16"], batches=[256, 1024], collect=["nsys"]))
    assert exc.value.exit_code == 130 and "1 of 2 points done" in str(exc.value)
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "interrupted" and m["points_done"] == [["bf16", 256]]
    assert m["collectors"]["nsys"]["cut_by_interrupt"] == ["raw/nsys/bf16_b256-1024.nsys-rep"]
    k = _kernels(out)
    assert len(k) == 18 and set(zip(k["format"], k["batch"])) == {("bf16", 256)}
    p = pd.read_csv(out / "points.csv")
    assert set(p["batch"]) == {256}  # batch 1024's timing rows left with its unfinished point
    monkeypatch.setattr(cap, "_run_logged", run_events)
    fake_gpu["calls"].clear()
    m = cap.capture(_cfg(out, resume=True))
    assert ("events", "bf16", (1024,)) in fake_gpu["calls"] and ("events", "bf16", (256,)) not in fake_gpu["calls"]


def test_refine_crossover_cli_errors(fake_gpu, tmp_path, capsys):
    out = tmp_path / "c"
    cap.capture(_cfg(out))
    for arg, msg in (("bf16", "expected two formats"), ("bf16,bf16", "expected two formats"),
                     ("bf16,mxfp4", "format 'mxfp4' is not in this capture")):
        assert main(["capture", "-q", "-o", str(out), "--refine-crossover", arg]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
    assert main(["capture", "-q", "-o", str(tmp_path / "none"), "--refine-crossover", "bf16,fp8"]) == 2
    assert "existing capture folder" in capsys.readouterr().err
