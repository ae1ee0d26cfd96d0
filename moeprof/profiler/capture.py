"""`moeprof capture`: run the MoE sweep (or any command) under the profilers into one capture folder.

Granularity: one child process per (collector, format) for events/nsys/torch -- it runs every
pending batch of that format, so process start, CUDA init and Triton compilation are paid once
per format, not per point -- and one child per point under ncu, where kernel replay dominates the
cost anyway and a per-point report gives resume and failure isolation for the slowest collector.
A point enters manifest.points_done once all its collectors finished; --resume drops the rows of
unfinished points from the tables and runs only those.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

import moeprof
from moeprof import capture_folder as schema
from moeprof.errors import MoeprofError
from moeprof.profiler.collectors import ncu as ncu_mod
from moeprof.profiler.collectors import nsys as nsys_mod
from moeprof.profiler.collectors import table, tools
from moeprof.profiler.collectors import torch_trace

COLLECTORS = ("nsys", "ncu", "torch")
_PKG_ROOT = str(Path(moeprof.__file__).resolve().parent.parent)


@dataclass
class CaptureConfig:
    out: Path
    formats: list[str] = field(default_factory=lambda: list(schema.DEFAULT_SWEEP_FORMATS))
    batches: list[int] = field(default_factory=lambda: list(schema.DEFAULT_SWEEP_BATCHES))
    model: str | None = None           # preset name; sweeps default to gpt-oss-120b, external mode to none
    shape: dict | None = None          # layer shape (capture_folder.LayerShape keys; else from model)
    tp: int = 1
    ep: int = 1
    routing: str = "uniform"
    seed: int = 0
    repeats: int = 20
    warmup: int = 3
    kernel: str = "triton"
    workload: str = "moeprof"          # moeprof | toy (self-test layer in _point_runner)
    collect: list[str] = field(default_factory=lambda: list(COLLECTORS))
    ncu_repeats: int = 1
    ncu_launch_count: int | None = 200
    ncu_nvtx_include: list[str] | None = None  # default: ['moe/'] for the sweep, none for external
    ncu_kernel_regex: str | None = None        # external mode: profile only kernels whose name matches
    ncu_launch_skip: int = 0                   # matching launches to skip before profiling (warm-up)
    labels: dict[str, str] = field(default_factory=dict)  # whole-run labels (external mode)
    nvtx_pattern: str | None = None            # regex with named groups format, batch, phase, layer
    clock_control: str = "none"
    cache_control: str = "all"
    command: list[str] | None = None   # external mode
    ranks: int = 1                     # external mode: processes the command starts (torchrun)
    ncu_rank: int = 0                  # several ranks: the one ncu profiles
    resume: bool = False
    timeout_s: float = 3600
    command_line: list[str] = field(default_factory=lambda: list(sys.argv))
    quiet: bool = False


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_csv_atomic(path: Path, df: pd.DataFrame) -> None:
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def empty_points() -> pd.DataFrame:
    return schema.empty_table(schema.POINT_COLUMNS)


class CaptureFolder:
    """The folder on disk: manifest (rewritten atomically after every unit), kernels.csv, points.csv, raw/."""

    def __init__(self, root: Path, manifest: dict) -> None:
        self.root = root
        self.manifest = manifest
        for sub in ("nsys", "ncu", "torch", "events", "logs"):
            (root / schema.RAW_DIR / sub).mkdir(parents=True, exist_ok=True)

    def raw(self, collector: str, name: str) -> Path:
        return self.root / schema.RAW_DIR / collector / name

    def rel(self, p: Path) -> str:
        return str(p.relative_to(self.root))

    def save(self) -> None:
        write_atomic(self.root / schema.MANIFEST_FILE, schema.manifest_text(self.manifest))

    def _read(self, name: str, empty: pd.DataFrame) -> pd.DataFrame:
        p = self.root / name
        return pd.read_csv(p, keep_default_na=False, na_values=[""]) if p.exists() else empty

    def append(self, name: str, rows: pd.DataFrame, empty: pd.DataFrame) -> None:
        old = self._read(name, empty)
        parts = [d for d in (old, rows) if len(d)]
        write_csv_atomic(self.root / name, pd.concat(parts, ignore_index=True) if parts else empty)

    def drop_points(self, points: set[tuple[str, int]]) -> None:
        """Remove rows of unfinished points (resume)."""
        for name, empty in ((schema.KERNELS_FILE, table.empty_kernels()), (schema.POINTS_FILE, empty_points())):
            df = self._read(name, empty)
            if len(df):
                key = list(zip(df["format"].fillna("").astype(str), pd.to_numeric(df["batch"], errors="coerce")))
                keep = [(f, int(b) if b == b else None) not in points for f, b in key]
                df = df[keep]
            write_csv_atomic(self.root / name, df)


def _run_logged(cmd: list[str], log: Path, env: dict[str, str] | None, timeout: float) -> tuple[int, str]:
    """Run a child with stdout+stderr into `log`; return (exit code, log text)."""
    with open(log, "a") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
            f.write(f"\nmoeprof: timed out after {timeout:.0f} s\n")
    return rc, log.read_text(errors="replace")


def _last_line(text: str, rc: int) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("$ ")]
    return (lines[-1][:240] if lines else f"exit {rc}") + ("" if rc == 0 else f" (exit {rc})")


def _child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = _PKG_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    from moeprof.profiler.distributed import comm_env

    return comm_env(env)


def _runner(spec: Path | str) -> list[str]:
    """The child command; spec is a spec file or inline JSON."""
    return [sys.executable, "-m", "moeprof.profiler._point_runner", "--spec", str(spec)]


def describe_machine(timeout: float = 300) -> dict:
    """GPU/software description from a child process (keeps CUDA out of this process)."""
    try:
        p = subprocess.run(_runner('{"mode": "describe"}'), capture_output=True, text=True, env=_child_env(),
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MoeprofError(f"cannot describe the GPU: no answer within {timeout:.0f} s") from None
    if p.returncode != 0:
        raise MoeprofError(f"cannot describe the GPU: {_last_line(p.stderr or p.stdout, p.returncode)}")
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise MoeprofError(f"cannot describe the GPU: unexpected output {_last_line(p.stdout, 0)!r}") from None


DEFAULT_MODEL = schema.DEFAULT_SWEEP_MODEL


def resolve_shape(cfg: CaptureConfig) -> schema.LayerShape:
    if cfg.shape:
        shape = schema.LayerShape.from_json(cfg.shape)
        if shape is None:
            raise MoeprofError(f"layer shape needs four positive integers {', '.join(schema.LayerShape.KEYS)}")
        return shape
    from moeprof.roofline.shapes import get_model

    return schema.LayerShape.from_model(get_model(cfg.model or DEFAULT_MODEL))


class Capture:
    def __init__(self, cfg: CaptureConfig) -> None:
        self.cfg = cfg
        self.external = bool(cfg.command)
        self.nsys = self.ncu = None
        self.ncu_metrics: list[str] = []
        self.ncu_report = None
        self.progress = None
        self.task = None
        self.torch_on = False

    # ---- setup -------------------------------------------------------------------------------
    def _check_host(self) -> dict:
        import importlib.util

        if not self.external and importlib.util.find_spec("torch") is None:
            raise MoeprofError("PyTorch is not installed: `pip install 'moeprof[capture]'` (torch, triton)")
        if importlib.util.find_spec("torch"):
            desc = describe_machine()
        else:  # external mode without torch: nvidia-smi only
            from moeprof.profiler.env import describe

            desc = describe()
        if not self.external and not desc.get("cuda_available"):
            raise MoeprofError("no CUDA GPU found (torch.cuda.is_available() is False); capture needs an NVIDIA GPU")
        return desc

    def _workload(self) -> schema.Workload:
        c = self.cfg
        if self.external:
            # The program's own model, when the user names one (-m or --shape), gives analyze its roofline.
            shape = resolve_shape(c) if (c.model or c.shape) else None
            return schema.Workload(mode="external", model=("custom" if c.shape else c.model) if shape else None,
                                   shape=shape, command=tuple(c.command), labels=dict(c.labels),
                                   nvtx_pattern=c.nvtx_pattern,
                                   extra={"world_size": c.ranks} if c.ranks > 1 else {})
        return schema.Workload(
            mode="moe", model="custom" if c.shape else (c.model or DEFAULT_MODEL), shape=resolve_shape(c),
            formats=tuple(c.formats), batches=tuple(int(b) for b in c.batches), tp=c.tp, ep=c.ep, routing=c.routing,
            seed=c.seed, repeats=c.repeats, warmup=c.warmup,
            kernel=c.kernel if c.workload == "moeprof" else "toy-torch", workload=c.workload,
            extra={"world_size": c.tp * c.ep} if c.tp * c.ep > 1 else {})

    def _setup_collectors(self, gpu: dict) -> dict:
        c, col = self.cfg, {}
        unknown = [x for x in c.collect if x not in COLLECTORS]
        if unknown:
            raise MoeprofError(f"unknown collector {unknown[0]!r}; valid: {', '.join(COLLECTORS)}")
        col["events"] = ({"status": "skipped", "reason": "external mode: the program is not a moeprof workload"}
                         if self.external else {"status": "pending", "tool_version": None,
                                                "options": {"repeats": c.repeats, "warmup": c.warmup}, "files": []})
        if "nsys" in c.collect:
            path = tools.find_nsys()
            env = tools.nsys_env()
            ver = tools.tool_version(path, env) if path else None
            if not path:
                col["nsys"] = {"status": "failed", "reason": "nsys not found (PATH, $MOEPROF_NSYS, /opt/nvidia/nsight-*)"}
            elif not ver:
                col["nsys"] = {"status": "failed", "tool": path,
                               "reason": "nsys does not run (`nsys --version` failed; missing libraries? see .nsys-libs)"}
            else:
                self.nsys = path
                col["nsys"] = {"status": "pending", "tool": path, "tool_version": ver,
                               "options": list(nsys_mod.PROFILE_OPTIONS), "files": []}
        else:
            col["nsys"] = {"status": "skipped", "reason": "not in --collect"}
        if "ncu" in c.collect:
            col["ncu"] = self._setup_ncu(gpu)
        else:
            col["ncu"] = {"status": "skipped", "reason": "not in --collect"}
        if "torch" not in c.collect:
            col["torch"] = {"status": "skipped", "reason": "not in --collect"}
        elif self.external:
            col["torch"] = {"status": "skipped", "reason": "external mode: the PyTorch profiler cannot be injected"}
        elif self.nsys or self.ncu:
            col["torch"] = {"status": "skipped", "reason": "fallback only: nsys/ncu available"}
        else:
            col["torch"] = {"status": "pending", "tool_version": None, "options": {"activities": ["cpu", "cuda"]},
                            "files": []}
        return col

    def _setup_ncu(self, gpu: dict) -> dict:
        c = self.cfg
        path = tools.find_ncu()
        if not path:
            return {"status": "failed", "reason": "ncu not found (PATH, $MOEPROF_NCU, /opt/nvidia/nsight-compute/*)"}
        ver = tools.tool_version(path)
        if not ver:
            return {"status": "failed", "tool": path, "reason": "ncu does not run (`ncu --version` failed)"}
        wanted = ncu_mod.metrics()
        chip = tools.chip_for(gpu.get("compute_capability"))
        unknown: list[str] = []
        checked = False
        if chip:
            try:
                unknown = ncu_mod.unknown_metrics(wanted, ncu_mod.query_metrics(path, chip))
                checked = True
            except (MoeprofError, subprocess.SubprocessError, OSError):
                pass
        self.ncu = path
        self.ncu_metrics = [m for m in wanted if m not in unknown]
        self.ncu_report = tools.import_ncu_report(path)
        include = c.ncu_nvtx_include if c.ncu_nvtx_include is not None else ([] if self.external else [schema.NVTX_ROOT + "/"])
        return {"status": "pending", "tool": path, "tool_version": ver, "files": [],
                "options": {"clock_control": c.clock_control, "cache_control": c.cache_control, "replay_mode": "kernel",
                            "metrics": self.ncu_metrics, "metrics_unknown_to_chip": unknown,
                            "metrics_checked_against": f"ncu --query-metrics --chip {chip}" if checked else None,
                            "metrics_missing": [], "nvtx_include": include, "launch_count": c.ncu_launch_count,
                            "kernel_regex": c.ncu_kernel_regex, "launch_skip": c.ncu_launch_skip,
                            "repeats_per_point": c.ncu_repeats,
                            "reader": "ncu_report" if self.ncu_report else "csv"}}

    def _open(self) -> CaptureFolder:
        c = self.cfg
        mpath = c.out / schema.MANIFEST_FILE
        if mpath.exists():
            if not c.resume:
                raise MoeprofError(f"{c.out} already holds a capture; pass --resume to continue it or choose another -o")
            try:
                old = json.loads(mpath.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise MoeprofError(f"{mpath}: not valid JSON, cannot resume ({exc})") from None
            if not isinstance(old, dict) or not isinstance(old.get("workload"), dict):
                raise MoeprofError(f"{mpath}: not a moeprof capture manifest, cannot resume")
            if old.get("manifest_version") != schema.MANIFEST_VERSION:
                raise MoeprofError(f"{c.out}: manifest version {old.get('manifest_version')} cannot be resumed by "
                                   f"this moeprof (writes version {schema.MANIFEST_VERSION})")
            return self._resume(old)
        desc = self._check_host()
        c.out.mkdir(parents=True, exist_ok=True)
        m = schema.Manifest(moeprof_version=moeprof.__version__, command_line=tuple(c.command_line),
                            started_utc=now(), status="running", gpu=schema.GpuInfo.from_json(desc.get("gpu", {})),
                            software=desc.get("software", {}),
                            workload=self._workload()).to_json()
        m["collectors"] = self._setup_collectors(m["gpu"])
        self.torch_on = m["collectors"]["torch"]["status"] == "pending"
        folder = CaptureFolder(c.out, m)
        folder.save()
        return folder

    def _resume(self, old: dict) -> CaptureFolder:
        c = self.cfg
        self.external = old["workload"].get("mode") == "external"
        w = old["workload"]
        if self.external:
            c.command = w.get("command")
            c.labels, c.nvtx_pattern = dict(w.get("labels") or {}), w.get("nvtx_pattern")
            c.ranks = int(w.get("world_size") or 1)
        else:
            c.formats, c.batches = list(w["formats"]), [int(b) for b in w["batches"]]
            c.shape = schema.LayerShape.from_json(w).to_json()
            c.model, c.tp, c.ep, c.routing, c.seed = w.get("model"), w["tp"], w["ep"], w["routing"], w["seed"]
            c.repeats, c.warmup, c.workload = w["repeats"], w.get("warmup", c.warmup), w.get("workload", "moeprof")
            if c.workload == "moeprof":
                c.kernel = w.get("kernel", c.kernel)
        desc = self._check_host()
        old.setdefault("resumed_utc", []).append(now())
        old["status"] = "running"
        old["points_failed"] = []
        old["command_line_resume"] = list(c.command_line)
        prev = old.get("collectors", {})
        fresh = self._setup_collectors(old.get("gpu") or desc.get("gpu", {}))
        for name, ent in fresh.items():  # keep files of earlier runs
            ent["files"] = list(prev.get(name, {}).get("files", [])) if "files" in ent else ent.get("files")
            if "files" not in ent or ent["files"] is None:
                ent.pop("files", None)
        if self.external:  # keep collectors that finished; rerun the others
            for name in ("nsys", "ncu"):
                if prev.get(name, {}).get("status") == "ok":
                    fresh[name] = prev[name]
                    self.nsys, self.ncu = (None, self.ncu) if name == "nsys" else (self.nsys, None)
        old["collectors"] = fresh
        self.torch_on = fresh["torch"]["status"] == "pending"
        folder = CaptureFolder(c.out, old)
        if self.external:
            k = folder._read(schema.KERNELS_FILE, table.empty_kernels())
            redo = {n for n in ("nsys", "ncu") if fresh[n].get("status") == "pending"}
            write_csv_atomic(c.out / schema.KERNELS_FILE, k[~k["collector"].isin(redo)])
        return folder

    # ---- units ---------------------------------------------------------------------------------
    def _spec(self, folder: CaptureFolder, mode: str, fmt: str, batches: list[int], name: str, repeats: int) -> Path:
        w = folder.manifest["workload"]
        spec = {"mode": mode, "format": fmt, "batches": batches, "repeats": repeats, "warmup": self.cfg.warmup,
                "shape": schema.LayerShape.from_json(w).layer_kwargs(),
                "tp": w["tp"], "ep": w["ep"], "routing": w["routing"], "seed": w["seed"], "kernel": self.cfg.kernel,
                "workload": self.cfg.workload,
                "status": str(folder.raw("logs", f"{mode}_{name}.status.jsonl").resolve())}
        if mode == "torch":
            spec["trace"] = str(folder.raw("torch", f"{name}.json").resolve())
        p = folder.raw("logs", f"{mode}_{name}.spec.json")
        write_atomic(p, json.dumps(spec, indent=1))
        status = Path(spec["status"])
        if status.exists():
            status.unlink()
        return p

    @staticmethod
    def _statuses(folder: CaptureFolder, mode: str, name: str) -> dict[int, dict]:
        p = folder.raw("logs", f"{mode}_{name}.status.jsonl")
        if not p.exists():
            return {}
        recs = [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]
        return {int(r["batch"]): r for r in recs}

    def _fail(self, folder: CaptureFolder, collector: str, reason: str) -> None:
        ent = folder.manifest["collectors"][collector]
        ent["status"], ent["reason"] = "failed", reason
        if collector == "nsys":
            self.nsys = None
        if collector == "ncu":
            self.ncu = None
        folder.save()

    def _label(self, k: pd.DataFrame, folder: CaptureFolder) -> pd.DataFrame:
        """External mode: the run's labels and NVTX pattern applied to a collector's kernel table.

        A pattern that labels nothing keeps the table unlabelled and is recorded (the capture stays
        usable: `moeprof analyze DIR --nvtx-pattern NEW` relabels it)."""
        from moeprof import labels

        c = self.cfg
        try:
            out, _ = labels.relabel(k, c.labels, labels.compile_pattern(c.nvtx_pattern))
        except MoeprofError as exc:
            folder.manifest.setdefault("label_errors", []).append(str(exc))
            out, _ = labels.relabel(k, c.labels, None)
        return out

    def _step(self, desc: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=desc)

    def _advance(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def run_events(self, folder: CaptureFolder, fmt: str, batches: list[int], name: str) -> dict[int, dict]:
        self._step(f"{fmt}: CUDA-event timing, batches {batches}")
        spec = self._spec(folder, "events", fmt, batches, name, self.cfg.repeats)
        rc, log = _run_logged(_runner(spec), folder.raw("logs", f"events_{name}.log"), _child_env(), self.cfg.timeout_s)
        st = self._statuses(folder, "events", name)
        rows = []
        for b, r in st.items():
            if r["status"] == "ok":
                for i, t in enumerate(r["layer_time_ns"]):
                    rows.append({"format": fmt, "batch": b, "repeat": i, "layer_time_ns": t,
                                 "experts_touched": r.get("experts_touched"), "kernel": r.get("kernel", "")})
        if rows:
            folder.append(schema.POINTS_FILE, pd.DataFrame(rows, columns=list(schema.POINT_COLUMNS)), empty_points())
        for b in batches:
            if b not in st:
                st[b] = {"format": fmt, "batch": b, "status": "failed", "reason": _last_line(log, rc)}
        ev = folder.manifest["collectors"]["events"]
        ev["status"] = "ok"
        methods = sorted({r["timing"] for r in st.values() if r.get("timing")})
        if methods:
            ev["options"]["timing"] = methods
        ev["tool_version"] = "torch " + str(folder.manifest["software"].get("torch"))
        raw = folder.raw("events", f"{name}.jsonl")
        write_atomic(raw, "".join(json.dumps(st[b]) + "\n" for b in batches))
        ev.setdefault("files", []).append(folder.rel(raw))
        self._advance()
        return st

    def run_nsys(self, folder: CaptureFolder, fmt: str, batches: list[int], name: str) -> None:
        self._step(f"{fmt}: nsys, batches {batches}")
        base = folder.raw("nsys", name)
        argv = self.cfg.command if self.external else _runner(self._spec(folder, "nsys", fmt, batches, name, self.cfg.repeats))
        env = tools.nsys_env(_child_env())
        cmd = nsys_mod.profile_command(self.nsys, base, argv)
        rc, log = _run_logged(cmd, folder.raw("logs", f"nsys_{name}.log"), env, self.cfg.timeout_s)
        rep = base.with_suffix(".nsys-rep")
        self._advance()
        if not rep.exists():
            return self._fail(folder, "nsys", f"no report from nsys: {_last_line(log, rc)}")
        try:
            sql = nsys_mod.export_sqlite(self.nsys, rep, env=env)
            k = nsys_mod.read_kernels(sql)
        except MoeprofError as exc:
            return self._fail(folder, "nsys", str(exc))
        if not self.external:
            k = k[k["format"] == fmt]  # warm-up/setup kernels outside moe/ ranges are not part of a point
        else:
            k = self._label(k, folder)
        folder.append(schema.KERNELS_FILE, k, table.empty_kernels())
        ent = folder.manifest["collectors"]["nsys"]
        ent["files"] += [folder.rel(rep), folder.rel(sql)]
        ent["status"] = "ok"
        if rc != 0:  # the report exists; the profiled program itself failed (external mode) or timed out
            ent["program_exit"] = _last_line(log, rc)
        folder.save()

    def run_torch(self, folder: CaptureFolder, fmt: str, batches: list[int], name: str) -> None:
        self._step(f"{fmt}: PyTorch profiler, batches {batches}")
        spec = self._spec(folder, "torch", fmt, batches, name, self.cfg.repeats)
        rc, log = _run_logged(_runner(spec), folder.raw("logs", f"torch_{name}.log"), _child_env(), self.cfg.timeout_s)
        trace = folder.raw("torch", f"{name}.json")
        self._advance()
        ent = folder.manifest["collectors"]["torch"]
        if not trace.exists():
            ent["status"], ent["reason"] = "failed", f"no trace: {_last_line(log, rc)}"
            return folder.save()
        k = torch_trace.read_trace(trace)
        folder.append(schema.KERNELS_FILE, k[k["format"] == fmt], table.empty_kernels())
        ent["files"].append(folder.rel(trace))
        ent["status"] = "ok"
        ent["tool_version"] = "torch " + str(folder.manifest["software"].get("torch"))
        folder.save()

    def run_ncu(self, folder: CaptureFolder, fmt: str, batch: int | None, name: str) -> None:
        self._step(f"{fmt}: ncu, batch {batch}" if batch is not None else "ncu")
        base = folder.raw("ncu", name)
        opts = folder.manifest["collectors"]["ncu"]["options"]
        argv = self.cfg.command if self.external else _runner(self._spec(folder, "ncu", fmt, [batch], name, self.cfg.ncu_repeats))
        cmd = ncu_mod.profile_command(self.ncu, base, argv, self.ncu_metrics, nvtx_include=opts["nvtx_include"],
                                      launch_count=self.cfg.ncu_launch_count, clock_control=self.cfg.clock_control,
                                      cache_control=self.cfg.cache_control,
                                      kernel_regex=self.cfg.ncu_kernel_regex if self.external else None,
                                      launch_skip=self.cfg.ncu_launch_skip if self.external else 0)
        rc, log = _run_logged(cmd, folder.raw("logs", f"ncu_{name}.log"), _child_env(), self.cfg.timeout_s)
        rep = base.with_suffix(".ncu-rep")
        self._advance()
        if ncu_mod.PERM_ERROR in log or not rep.exists():
            return self._fail(folder, "ncu", ncu_mod.failure_reason(log, rc))
        ent = folder.manifest["collectors"]["ncu"]
        try:
            csv_path = ncu_mod.export_csv(self.ncu, rep)
            k, present = None, set()
            if self.ncu_report is not None:
                try:
                    k, present = ncu_mod.read_report(rep, self.ncu_report)
                except Exception as exc:  # noqa: BLE001 - fall back to the CSV reader
                    ent["options"]["reader"] = f"csv (ncu_report failed: {type(exc).__name__}: {exc})"[:200]
            if k is None:
                k, present = ncu_mod.read_csv(csv_path)
        except MoeprofError as exc:
            return self._fail(folder, "ncu", str(exc))
        if self.external:
            k = self._label(k, folder)
        missing = ncu_mod.missing_after(self.ncu_metrics, present)
        ent["options"]["metrics_missing"] = sorted(set(ent["options"]["metrics_missing"]) | set(missing))
        folder.append(schema.KERNELS_FILE, k, table.empty_kernels())
        if self.cfg.ncu_launch_count and len(k) >= self.cfg.ncu_launch_count:
            # the bound cut the run short: later phases (often the GEMMs) may lack counters
            ent["options"].setdefault("launch_count_reached", []).append(name)
        ent["files"] += [folder.rel(rep), folder.rel(csv_path)]
        if ent["status"] == "pending":
            ent["status"] = "ok"
        folder.save()

    # ---- sweep -----------------------------------------------------------------------------------
    def _units(self, pending: dict[str, list[int]]) -> int:
        return sum(1 + bool(self.nsys) + self.torch_on + (len(bs) if self.ncu else 0) for bs in pending.values())

    def run(self) -> dict:
        folder = self.folder = self._open()
        m = folder.manifest
        if self.external:
            self._sweep_external(folder)
        else:
            done = {(f, int(b)) for f, b in m["points_done"]}
            pending = {f: [int(b) for b in self.cfg.batches if (f, int(b)) not in done] for f in self.cfg.formats}
            pending = {f: bs for f, bs in pending.items() if bs}
            folder.drop_points({(f, b) for f, bs in pending.items() for b in bs})
            self._with_progress(self._units(pending), lambda: self._sweep(folder, pending))
        for ent in m["collectors"].values():
            if ent.get("status") == "pending":
                ent["status"], ent["reason"] = "skipped", "nothing left to run"
        if not (folder.root / schema.KERNELS_FILE).exists():
            write_csv_atomic(folder.root / schema.KERNELS_FILE, table.empty_kernels())
        if not (folder.root / schema.POINTS_FILE).exists():
            write_csv_atomic(folder.root / schema.POINTS_FILE, empty_points())
        m["finished_utc"] = now()
        m["status"] = self._status(m)
        folder.save()
        return m

    def _status(self, m: dict) -> str:
        profilers_ok = any(m["collectors"].get(c, {}).get("status") == "ok" for c in COLLECTORS)
        if self.external:
            return "complete" if profilers_ok else "failed"
        want = len(self.cfg.formats) * len(self.cfg.batches)
        if not m["points_done"]:
            return "failed"
        return "complete" if len(m["points_done"]) == want and not m["points_failed"] else "partial"

    def _with_progress(self, total: int, fn) -> None:
        if self.cfg.quiet:
            return fn()
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("[bold]capture[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.description}"), transient=False) as prog:
            self.progress, self.task = prog, prog.add_task("starting", total=max(total, 1))
            try:
                fn()
            finally:
                self.progress = None

    def _sweep(self, folder: CaptureFolder, pending: dict[str, list[int]]) -> None:
        m = folder.manifest
        if self.cfg.tp * self.cfg.ep > 1:  # several GPUs: torchrun, one report per rank
            from moeprof.profiler.distributed import sweep_sharded

            return sweep_sharded(self, folder, pending)
        for fmt, batches in pending.items():
            name = f"{fmt}_b{'-'.join(str(b) for b in batches)}"
            st = self.run_events(folder, fmt, batches, name)
            ok = [b for b in batches if st[b]["status"] == "ok"]
            for b in batches:
                if st[b]["status"] != "ok":
                    m["points_failed"].append([fmt, b, st[b].get("reason", "failed")])
            folder.save()
            if not ok:
                continue
            oname = f"{fmt}_b{'-'.join(str(b) for b in ok)}"
            if self.nsys:
                self.run_nsys(folder, fmt, ok, oname)
            if self.torch_on:
                self.run_torch(folder, fmt, ok, oname)
            for b in ok:
                if self.ncu:
                    self.run_ncu(folder, fmt, b, f"{fmt}_b{b}")
                m["points_done"].append([fmt, b])
                folder.save()

    def _sweep_external(self, folder: CaptureFolder) -> None:
        m = folder.manifest
        if self.cfg.ranks > 1:
            from moeprof.profiler.distributed import sweep_external_ranks

            return self._with_progress(1, lambda: sweep_external_ranks(self, folder))
        # resume in external mode reruns whatever did not finish
        todo = [c for c in ("nsys", "ncu") if m["collectors"][c].get("status") == "pending"]
        total = len(todo)

        def go() -> None:
            if "nsys" in todo and self.nsys:
                self.run_nsys(folder, "", [], "external")
            if "ncu" in todo and self.ncu:
                self.run_ncu(folder, "", None, "external")

        self._with_progress(total, go)
        folder.save()


def capture(cfg: CaptureConfig) -> dict:
    """Run a capture; returns the final manifest."""
    if cfg.command is None:
        if not cfg.formats or not cfg.batches:
            raise MoeprofError("nothing to capture: give at least one format and one batch")
        if any(b <= 0 for b in cfg.batches):
            raise MoeprofError("batch sizes must be positive")
    return Capture(cfg).run()
