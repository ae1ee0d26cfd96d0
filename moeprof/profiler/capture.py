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
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from pathlib import Path

import pandas as pd

import moeprof
from moeprof import capture_folder as schema
from moeprof.capture_folder import kernel_store
from moeprof.errors import MoeprofError
from moeprof.profiler.collectors import ncu as ncu_mod
from moeprof.profiler.collectors import nsys as nsys_mod
from moeprof.profiler.collectors import table, tools
from moeprof.profiler.collectors import torch_trace

COLLECTORS = ("nsys", "ncu", "torch")
MAX_SUSTAIN_S = 600.0   # --sustain-s bound, also on a value read back from a folder's manifest


def stored_sustain_s(value, default: float) -> float:
    """--sustain-s as a resumed folder's manifest stored it: a folder is data, so only a number within
    the command line's bound reaches a child; anything else keeps `default`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_SUSTAIN_S:
        return float(value)
    return default
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
    sustain_s: float = 0.0             # back-to-back calls before each point's timed calls (events), seconds
    #                                    (0..MAX_SUSTAIN_S)
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
    # resume in external mode without a command on the command line: run the stored one only if
    # assume_yes, or if confirm (an interactive yes/no question; None where there is no terminal) says yes
    assume_yes: bool = False
    extra_points: list[tuple[str, int]] = field(default_factory=list)  # beyond formats x batches (refine)
    events_only: bool = False         # resume measuring CUDA-event timing only (refine)
    confirm: Callable[[str], bool] | None = None
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
        if name == schema.KERNELS_FILE:
            return self.append_kernels(rows)
        old = self._read(name, empty)
        parts = [d for d in (old, rows) if len(d)]
        write_csv_atomic(self.root / name, pd.concat(parts, ignore_index=True) if parts else empty)

    # the kernel table: Parquet where pyarrow is installed (moeprof.capture_folder.kernel_store), else CSV
    def read_kernels(self) -> pd.DataFrame:
        p = kernel_store.table_path(self.root)
        if not p.exists():
            return table.empty_kernels()
        if p.suffix == ".parquet":
            return kernel_store.read(p)
        return pd.read_csv(p, keep_default_na=False, na_values=[""])

    def write_kernels(self, df: pd.DataFrame) -> None:
        # schema columns first; columns beyond the schema (a multi-rank capture's `rank`) are kept
        kernel_store.write(kernel_store.table_path(self.root),
                           schema.coerce_columns(df, schema.KERNEL_TABLE_COLUMNS, keep_other=True))

    def append_kernels(self, rows: pd.DataFrame) -> None:
        old = self.read_kernels()
        parts = [d for d in (old, rows) if len(d)]
        self.write_kernels(pd.concat(parts, ignore_index=True) if parts else table.empty_kernels())

    def drop_points(self, points: set[tuple[str, int]]) -> None:
        """Remove rows of unfinished points (resume)."""
        for name, df in ((schema.KERNELS_FILE, self.read_kernels()),
                         (schema.POINTS_FILE, self._read(schema.POINTS_FILE, empty_points()))):
            if len(df) and points:
                fmt = df["format"].fillna("").astype(str).to_numpy()
                batch = pd.to_numeric(df["batch"], errors="coerce").to_numpy(dtype="float64", na_value=float("nan"))
                drop = pd.Series(False, index=df.index)
                for f, b in points:
                    drop |= (fmt == f) & (batch == b)
                df = df[~drop.to_numpy()]
            if name == schema.KERNELS_FILE:
                self.write_kernels(df)
            else:
                write_csv_atomic(self.root / name, df)


class CaptureInterrupted(MoeprofError):
    """The sweep stopped on SIGINT/SIGTERM; finished points are recorded. exit_code follows the shell's 128 + signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class _Stop:
    """Signal state of the running capture and the child it is waiting on.

    Each child runs in its own session (process group), so a Ctrl-C or a signal sent to moeprof's group
    reaches only moeprof; moeprof then forwards SIGINT to the child's group (what a terminal's Ctrl-C
    would do: nsys stops its target and writes the report), waits STOP_GRACE_S, then SIGTERM, then
    SIGKILL the group and every descendant seen. A second signal skips the grace period.
    """

    signum: int | None = None
    count = 0
    child: subprocess.Popen | None = None
    descendants: set[int] = set()

    @classmethod
    def reset(cls) -> None:
        cls.signum, cls.count, cls.child, cls.descendants = None, 0, None, set()


STOP_GRACE_S = 60.0   # time a profiler gets to stop its target and write its report
TERM_GRACE_S = 5.0


def _descendants(pid: int) -> set[int]:
    """Every live process below pid (from /proc; empty where /proc is missing)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL the child's group and every descendant recorded while it ran (some leave the group)."""
    _signal_group(proc, signal.SIGKILL)
    for pid in _Stop.descendants | (_descendants(proc.pid) if proc.poll() is None else set()):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _on_signal(signum: int, _frame) -> None:
    _Stop.count += 1
    if _Stop.signum is None:
        _Stop.signum = signum
    child = _Stop.child
    if child is not None and child.poll() is None:
        _Stop.descendants |= _descendants(child.pid)
        _signal_group(child, signal.SIGINT if _Stop.count == 1 else signal.SIGKILL)


class _SignalGuard:
    """Route SIGINT/SIGTERM to _on_signal while a capture runs (main thread only)."""

    def __enter__(self) -> "_SignalGuard":
        _Stop.reset()
        self.saved = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, _on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def _run_logged(cmd: list[str], log: Path, env: dict[str, str] | None, timeout: float) -> tuple[int, str]:
    """Run a child in its own process group with stdout+stderr into `log`; return (exit code, log text).

    On timeout or on a signal to moeprof the child's group is stopped (SIGINT, then SIGTERM, then
    SIGKILL) and every process it started is gone before this returns."""
    if _Stop.signum is not None:
        return 128 + _Stop.signum, ""
    with open(log, "a") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _Stop.child = proc
        t0, t_stop, stage = time.monotonic(), None, 0
        try:
            while True:
                try:
                    rc = proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now_s = time.monotonic()
                if _Stop.signum is not None and t_stop is None:
                    t_stop = now_s
                    stage = max(stage, 1)
                if t_stop is None and now_s - t0 > timeout:
                    f.write(f"\nmoeprof: timed out after {timeout:.0f} s\n")
                    f.flush()
                    _Stop.descendants |= _descendants(proc.pid)
                    _signal_group(proc, signal.SIGINT)
                    t_stop, stage = now_s, 1
                if t_stop is not None:
                    waited = now_s - t_stop
                    if stage == 1 and (waited > STOP_GRACE_S or _Stop.count > 1):
                        _signal_group(proc, signal.SIGTERM)
                        stage = 2
                    elif stage == 2 and waited > STOP_GRACE_S + TERM_GRACE_S:
                        _kill_all(proc)
                        stage = 3
            if t_stop is not None and _Stop.signum is None:
                rc = 124
        finally:
            _Stop.child = None
            _kill_all(proc)  # leftovers: the profiled program under a profiler that already exited
            _Stop.descendants = set()
            if proc.poll() is None:
                proc.wait()
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
MAX_BATCH = 1 << 22
KNOWN_WORKLOADS = ("moeprof", "toy")
KNOWN_KERNELS = ("triton", "torch-grouped", "torch-loop")


def printable(text: str) -> str:
    """text with control characters shown as escapes (text from a capture folder reaches the terminal)."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _positive_int(v: object, limit: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= limit


def _check_stored_sweep(w: dict, out: Path) -> None:
    """The stored sweep parameters, before any of them reaches a child: known formats, workload and
    kernel names, positive bounded integers. One line on the first bad field."""
    from moeprof.roofline.formats import format_names

    FORMATS = format_names()
    where = f"{out}/manifest.json workload"
    formats, batches = w.get("formats"), w.get("batches")
    if not isinstance(formats, list) or not formats or any(f not in FORMATS for f in formats):
        raise MoeprofError(f"{where}: formats must be a list of {', '.join(FORMATS)}, got {printable(repr(formats))[:120]}")
    if not isinstance(batches, list) or not batches or not all(_positive_int(b, MAX_BATCH) for b in batches):
        raise MoeprofError(f"{where}: batches must be positive integers <= {MAX_BATCH}, got {printable(repr(batches))[:120]}")
    refined = w.get("refined_points", [])
    if not isinstance(refined, list) or not all(
            isinstance(p, list) and len(p) == 2 and p[0] in formats and _positive_int(p[1], MAX_BATCH) for p in refined):
        raise MoeprofError(f"{where}: refined_points must be [format, batch] pairs of the capture's formats")
    for key in ("hidden_size", "num_experts", "top_k", "tp", "ep", "repeats"):
        if not _positive_int(w.get(key), 1 << 20):
            raise MoeprofError(f"{where}: {key} must be a positive integer, got {printable(repr(w.get(key)))[:60]}")
    inter = w.get("expert_intermediate_size", w.get("intermediate_size"))  # the version-1 spelling, or the new one
    if not _positive_int(inter, 1 << 20):
        raise MoeprofError(f"{where}: expert_intermediate_size must be a positive integer, got {printable(repr(inter))[:60]}")
    if w.get("top_k") > w.get("num_experts"):
        raise MoeprofError(f"{where}: top_k {w['top_k']} exceeds num_experts {w['num_experts']}")
    if not isinstance(w.get("seed"), int) or isinstance(w.get("seed"), bool):
        raise MoeprofError(f"{where}: seed must be an integer")
    if w.get("workload", "moeprof") not in KNOWN_WORKLOADS:
        raise MoeprofError(f"{where}: workload must be one of {', '.join(KNOWN_WORKLOADS)}")
    if w.get("workload", "moeprof") == "moeprof" and w.get("kernel", "triton") not in KNOWN_KERNELS:
        raise MoeprofError(f"{where}: kernel must be one of {', '.join(KNOWN_KERNELS)}")
    from moeprof.models.routing import parse_skew

    try:
        parse_skew(str(w.get("routing")))
    except (MoeprofError, ValueError) as exc:
        raise MoeprofError(f"{where}: routing: {printable(str(exc))[:120]}") from None


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
                                                "options": {"repeats": c.repeats, "warmup": c.warmup,
                                                            "sustain_s": c.sustain_s}, "files": []})
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
            c.command = self._resume_command(w.get("command"))
            c.labels, c.nvtx_pattern = dict(w.get("labels") or {}), w.get("nvtx_pattern")
            c.ranks = int(w.get("world_size") or 1)
        else:
            if c.command:
                raise MoeprofError(f"{c.out} holds a moeprof sweep: --resume continues it and takes no command")
            _check_stored_sweep(w, c.out)
            c.extra_points = [(str(f), int(b)) for f, b in w.get("refined_points", [])]
            c.formats, c.batches = list(w["formats"]), [int(b) for b in w["batches"]]
            c.shape = schema.LayerShape.from_json(w).to_json()
            c.model, c.tp, c.ep, c.routing, c.seed = w.get("model"), w["tp"], w["ep"], w["routing"], w["seed"]
            c.repeats, c.warmup, c.workload = w["repeats"], w.get("warmup", c.warmup), w.get("workload", "moeprof")
            ev_opts = (old.get("collectors", {}).get("events") or {}).get("options") or {}
            c.sustain_s = stored_sustain_s(ev_opts.get("sustain_s"), c.sustain_s)
            if c.workload == "moeprof":
                c.kernel = w.get("kernel", c.kernel)
        desc = self._check_host()
        here, there = (desc.get("gpu") or {}).get("name"), (old.get("gpu") or {}).get("name")
        if here and there and here != there:
            raise MoeprofError(f"{c.out} was captured on {printable(str(there))[:80]}, this machine has {here}: "
                               f"one capture holds one card's numbers; capture into a new folder")
        old.setdefault("resumed_utc", []).append(now())
        old["status"] = "running"
        if not c.events_only:  # failed points run again; refine adds its own points only
            old["points_failed"] = []
        old["command_line_resume"] = list(c.command_line)
        prev = old.get("collectors", {})
        if c.events_only:  # measuring added points (refine): the earlier collectors' entries stay as they are
            old["collectors"] = prev
            folder = CaptureFolder(c.out, old)
            return folder
        # the collectors of the original run, not this command line's --collect default
        c.collect = [n for n in COLLECTORS if isinstance(prev.get(n), dict) and prev[n].get("reason") != "not in --collect"]
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
            k = folder.read_kernels()
            redo = {n for n in ("nsys", "ncu") if fresh[n].get("status") == "pending"}
            folder.write_kernels(k[~k["collector"].isin(redo)])
        return folder

    def _resume_command(self, stored: object) -> list[str]:
        """The program to run on resume. A capture folder is data: the command stored in its manifest
        runs only when the user confirms it (or passes --yes); a command given after `--` wins."""
        c = self.cfg
        if c.command:
            return list(c.command)
        if not isinstance(stored, list) or not stored or not all(isinstance(a, str) for a in stored):
            raise MoeprofError(f"{c.out}: the manifest holds no usable command; give it: "
                               f"`moeprof capture -o {c.out} --resume -- CMD ARGS...`")
        shown = printable(shlex.join(stored))
        if c.assume_yes:
            return list(stored)
        if c.confirm is None:
            raise MoeprofError(f"--resume would run the command stored in {c.out}/manifest.json ({shown[:200]}); "
                               f"give the command after `--` or pass --yes to run the stored one")
        if not c.confirm(f"{c.out}/manifest.json asks to run: {shown}\nRun this command?"):
            raise MoeprofError("resume cancelled: the stored command was not confirmed")
        return list(stored)

    # ---- units ---------------------------------------------------------------------------------
    def _spec(self, folder: CaptureFolder, mode: str, fmt: str, batches: list[int], name: str, repeats: int) -> Path:
        w = folder.manifest["workload"]
        spec = {"mode": mode, "format": fmt, "batches": batches, "repeats": repeats, "warmup": self.cfg.warmup,
                "sustain_s": self.cfg.sustain_s,
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
        from moeprof.capture_folder import labels

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
                # the point's NVML clock and power summary (profiler/clocks.py) on each of its rows
                clock = {c: r.get(c) for c in schema.POINT_CLOCK_COLUMNS}
                for i, t in enumerate(r["layer_time_ns"]):
                    rows.append({"format": fmt, "batch": b, "repeat": i, "layer_time_ns": t,
                                 "experts_touched": r.get("experts_touched"), "kernel": r.get("kernel", ""),
                                 **clock})
        if rows:
            folder.append(schema.POINTS_FILE, pd.DataFrame(rows, columns=list(schema.POINT_COLUMNS)), empty_points())
        for b in batches:
            if b not in st:
                st[b] = ({"format": fmt, "batch": b, "status": "interrupted"} if _Stop.signum is not None else
                         {"format": fmt, "batch": b, "status": "failed", "reason": _last_line(log, rc)})
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

    def run_nsys(self, folder: CaptureFolder, fmt: str, batches: list[int], name: str) -> set[int]:
        """One nsys child; returns the batches whose kernels it recorded (all of them unless it failed or
        was interrupted: a report written on an interrupt keeps the batches whose calls had finished)."""
        self._step(f"{fmt}: nsys, batches {batches}")
        base = folder.raw("nsys", name)
        argv = self.cfg.command if self.external else _runner(self._spec(folder, "nsys", fmt, batches, name, self.cfg.repeats))
        env = tools.nsys_env(_child_env())
        cmd = nsys_mod.profile_command(self.nsys, base, argv)
        rc, log = _run_logged(cmd, folder.raw("logs", f"nsys_{name}.log"), env, self.cfg.timeout_s)
        rep = base.with_suffix(".nsys-rep")
        self._advance()
        stopped = _Stop.signum is not None
        if stopped:
            finished = {b for b, r in self._statuses(folder, "nsys", name).items() if r.get("status") == "ok"}
            if self.external or not finished or _Stop.count > 1 or not rep.exists():
                self._discard_nsys(base)
                return set()
        else:
            finished = set(batches)
        if not rep.exists():
            self._fail(folder, "nsys", f"no report from nsys: {_last_line(log, rc)}")
            return set()
        try:
            sql = nsys_mod.export_sqlite(self.nsys, rep, env=env)
            k = nsys_mod.read_kernels(sql)
        except MoeprofError as exc:
            if stopped:  # a report cut short by the interrupt: drop it, the points run again on resume
                self._discard_nsys(base)
                return set()
            self._fail(folder, "nsys", str(exc))
            return set()
        if not self.external:
            # warm-up/setup kernels outside moe/ ranges are not part of a point; nor are unfinished batches
            k = k[(k["format"] == fmt) & k["batch"].isin(sorted(finished))]
        else:
            k = self._label(k, folder)
        folder.append(schema.KERNELS_FILE, k, table.empty_kernels())
        ent = folder.manifest["collectors"]["nsys"]
        ent["files"] += [folder.rel(rep), folder.rel(sql)]
        ent["status"] = "ok"
        if stopped:
            ent.setdefault("cut_by_interrupt", []).append(folder.rel(rep))
        elif rc != 0:  # the report exists; the profiled program itself failed (external mode) or timed out
            ent["program_exit"] = _last_line(log, rc)
        folder.save()
        return finished

    @staticmethod
    def _discard_nsys(base: Path) -> None:
        for suffix in (".nsys-rep", ".sqlite", ".qdstrm"):
            base.with_suffix(suffix).unlink(missing_ok=True)

    def run_torch(self, folder: CaptureFolder, fmt: str, batches: list[int], name: str) -> bool:
        self._step(f"{fmt}: PyTorch profiler, batches {batches}")
        spec = self._spec(folder, "torch", fmt, batches, name, self.cfg.repeats)
        rc, log = _run_logged(_runner(spec), folder.raw("logs", f"torch_{name}.log"), _child_env(), self.cfg.timeout_s)
        trace = folder.raw("torch", f"{name}.json")
        self._advance()
        ent = folder.manifest["collectors"]["torch"]
        if _Stop.signum is not None:
            trace.unlink(missing_ok=True)
            return False
        if not trace.exists():
            ent["status"], ent["reason"] = "failed", f"no trace: {_last_line(log, rc)}"
            folder.save()
            return True
        k = torch_trace.read_trace(trace)
        folder.append(schema.KERNELS_FILE, k[k["format"] == fmt], table.empty_kernels())
        ent["files"].append(folder.rel(trace))
        ent["status"] = "ok"
        ent["tool_version"] = "torch " + str(folder.manifest["software"].get("torch"))
        folder.save()
        return True

    def run_ncu(self, folder: CaptureFolder, fmt: str, batch: int | None, name: str) -> bool:
        """One ncu child; False when an interrupt stopped it (nothing recorded)."""
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
        if _Stop.signum is not None:  # the point runs again on resume; a partial report would double it
            rep.unlink(missing_ok=True)
            return False
        if ncu_mod.PERM_ERROR in log or not rep.exists():
            self._fail(folder, "ncu", ncu_mod.failure_reason(log, rc))
            return True
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
            self._fail(folder, "ncu", str(exc))
            return True
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
        return True

    # ---- sweep -----------------------------------------------------------------------------------
    def _units(self, pending: dict[str, list[int]]) -> int:
        return sum(1 + bool(self.nsys) + self.torch_on + (len(bs) if self.ncu else 0) for bs in pending.values())

    def run(self) -> dict:
        with _SignalGuard():
            try:
                folder = self.folder = self._open()
            except MoeprofError as exc:
                if _Stop.signum is not None:  # the signal reached the GPU probe child too
                    raise CaptureInterrupted(f"interrupted by {signal.Signals(_Stop.signum).name} before the "
                                             f"capture started ({exc})", _Stop.signum) from None
                raise
            m = folder.manifest
            pending: dict[str, list[int]] = {}
            if _Stop.signum is None and self.external:
                self._sweep_external(folder)
            elif _Stop.signum is None:
                done = {(f, int(b)) for f, b in m["points_done"]}
                wanted = self._wanted()
                if self.cfg.events_only:
                    wanted = {f: sorted({b for g, b in self.cfg.extra_points if g == f}) for f in wanted}
                pending = {f: [b for b in bs if (f, b) not in done] for f, bs in wanted.items()}
                pending = {f: bs for f, bs in pending.items() if bs}
                folder.drop_points({(f, b) for f, bs in pending.items() for b in bs})
                self._with_progress(self._units(pending), lambda: self._sweep(folder, pending))
            signum = _Stop.signum
            if signum is not None:
                # rows of points that did not finish leave the tables: the folder shows finished points only
                done = {(f, int(b)) for f, b in m["points_done"]}
                folder.drop_points({(f, b) for f, bs in pending.items() for b in bs} - done)
            for ent in m["collectors"].values():
                if ent.get("status") == "pending":
                    ent["status"], ent["reason"] = "skipped", ("interrupted before it finished" if signum is not None
                                                               else "nothing left to run")
            if not kernel_store.kernel_files(folder.root):
                folder.write_kernels(table.empty_kernels())
            if not (folder.root / schema.POINTS_FILE).exists():
                write_csv_atomic(folder.root / schema.POINTS_FILE, empty_points())
            m["finished_utc"] = now()
            m["status"] = "interrupted" if signum is not None else self._status(m)
            if signum is not None:
                m["interrupted_by"] = signal.Signals(signum).name
            folder.save()
        if signum is not None:
            want = sum(len(bs) for bs in self._wanted().values())
            left = "" if self.external else f" ({len(m['points_done'])} of {want} points done)"
            raise CaptureInterrupted(f"interrupted by {signal.Signals(signum).name}{left}; "
                                     f"continue with `moeprof capture -o {self.cfg.out} --resume`", signum)
        return m

    def _wanted(self) -> dict[str, list[int]]:
        """Every point of the capture: the formats x batches grid, then points added by refine."""
        want = {f: [int(b) for b in self.cfg.batches] for f in self.cfg.formats}
        for f, b in self.cfg.extra_points:
            if b not in want.setdefault(f, []):
                want[f].append(b)
        return {f: sorted(bs) for f, bs in want.items()}

    def _status(self, m: dict) -> str:
        profilers_ok = any(m["collectors"].get(c, {}).get("status") == "ok" for c in COLLECTORS)
        if self.external:
            return "complete" if profilers_ok else "failed"
        want = sum(len(bs) for bs in self._wanted().values())
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
        """Each format: events child, nsys child, torch child, then ncu per point; a point is done once
        all its collectors finished. An interrupt ends the sweep after the running child stopped,
        keeping the points that finished (a batch whose nsys calls completed before the stop counts)."""
        m = folder.manifest
        if self.cfg.tp * self.cfg.ep > 1:  # several GPUs: torchrun, one report per rank
            from moeprof.profiler.distributed import sweep_sharded

            return sweep_sharded(self, folder, pending)
        for fmt, batches in pending.items():
            if _Stop.signum is not None:
                return
            name = f"{fmt}_b{'-'.join(str(b) for b in batches)}"
            st = self.run_events(folder, fmt, batches, name)
            ok = [b for b in batches if st[b]["status"] == "ok"]
            for b in batches:
                if st[b]["status"] == "failed":
                    m["points_failed"].append([fmt, b, st[b].get("reason", "failed")])
            folder.save()
            if _Stop.signum is not None:
                if not (self.nsys or self.ncu or self.torch_on):  # timing was the only collector: those points are done
                    m["points_done"] += [[fmt, b] for b in ok]
                    folder.save()
                return
            if not ok:
                continue
            oname = f"{fmt}_b{'-'.join(str(b) for b in ok)}"
            if self.nsys:
                covered = self.run_nsys(folder, fmt, ok, oname)
                if _Stop.signum is not None:
                    ok = [b for b in ok if b in covered]
            if self.torch_on and ok and not self.run_torch(folder, fmt, ok, oname):
                ok = []
            for b in ok:
                if self.ncu and not self.run_ncu(folder, fmt, b, f"{fmt}_b{b}"):
                    break
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
