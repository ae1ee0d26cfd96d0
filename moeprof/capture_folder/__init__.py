"""The capture folder contract shared by the profiler (writer) and the analysis (reader).

A capture folder holds:
  manifest.json   versioned description of the run (`Manifest`; see docs/capture-format.md)
  kernels.csv     normalized kernel table: one row per kernel launch seen by a collector
  points.csv      one row per (format, batch, repeat) layer call timed with CUDA events
  raw/            the profilers' own files (.nsys-rep, .sqlite, .ncu-rep, ncu csv, torch trace)

Columns carry their units in their names. Counter columns are empty (NaN) where a collector
did not read them; the manifest says why.

The manifest is read into frozen dataclasses (`Manifest.from_json`) and written from them
(`Manifest.to_json`, always the current MANIFEST_VERSION). Version 1 differs from version 2 only in
the layer shape's key for the expert intermediate size (`intermediate_size`, now
`expert_intermediate_size`, the roofline model's name); both versions load. Keys this module does not
know are kept (`extra`) so a round trip loses nothing.

This module imports nothing heavy at import time (the CLI reads its defaults from here).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moeprof.errors import MoeprofError
from moeprof.untrusted import clean_json, load_json

if TYPE_CHECKING:
    import pandas as pd

MANIFEST_VERSION = 2
READABLE_MANIFEST_VERSIONS = (1, 2)
MANIFEST_SCHEMA = "moeprof.capture"
MANIFEST_FILE = "manifest.json"
KERNELS_FILE = "kernels.csv"
POINTS_FILE = "points.csv"
RAW_DIR = "raw"

# Defaults of a sweep, shared by `moeprof capture` and the profiler: decode (1-64 tokens) to prefill
# (1024-16384), four apart, as the shipped example capture ran.
DEFAULT_SWEEP_MODEL = "gpt-oss-120b"
DEFAULT_SWEEP_FORMATS: tuple[str, ...] = ("bf16", "fp8", "mxfp4")
DEFAULT_SWEEP_BATCHES: tuple[int, ...] = (1, 4, 16, 64, 256, 1024, 4096, 16384)

# kernels.csv: columns every writer must produce (values may be empty where unknown).
KERNEL_COLUMNS: dict[str, str] = {
    "collector": "str",         # nsys | ncu | torch
    "format": "str",            # weight format name (bf16, fp8, ...) or '' outside MoE ranges
    "batch": "Int64",           # tokens per layer call, <NA> outside MoE ranges
    "phase": "str",             # NVTX phase: route, sort, quant, gemm1, act, gemm2, combine, or ''
    "repeat": "Int64",          # index of the layer call within the point
    "nvtx_path": "str",         # full NVTX push/pop path open at launch, '/'-joined
    "kernel_name": "str",       # demangled kernel name (short form: no argument list)
    "start_ns": "Int64",        # GPU start timestamp (collector clock)
    "duration_ns": "float64",   # GPU duration
    "grid_x": "Int64", "grid_y": "Int64", "grid_z": "Int64",
    "block_x": "Int64", "block_y": "Int64", "block_z": "Int64",
    "registers_per_thread": "Int64",
    "stream_id": "Int64",
}

# Counter columns (ncu). Name -> ncu metric that fills it.
COUNTER_METRICS: dict[str, str] = {
    "gpu_time_ns": "gpu__time_duration.sum",
    "dram_read_bytes": "dram__bytes_read.sum",
    "dram_write_bytes": "dram__bytes_write.sum",
    "tensor_pipe_active_cycles": "sm__pipe_tensor_op_hmma_cycles_active.sum",
    "tensor_pipe_active_pct": "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed",
    "tensor_ops_fp8": "sm__ops_path_tensor_src_fp8_sparsity_off.sum",
    "tensor_ops_bf16_hgmma": "sm__ops_path_tensor_op_hgmma_src_bf16_dst_fp32_sparsity_off.sum",
    "tensor_ops_bf16_hmma": "sm__ops_path_tensor_op_hmma_src_bf16_dst_fp32_sparsity_off.sum",
    # FP16-source tensor ops: where a compiler upcasts FP8 operands (e.g. mma.sync paths) they land here
    "tensor_ops_fp16": "sm__ops_path_tensor_src_fp16.sum",
    "tensor_inst_executed": "sm__inst_executed_pipe_tensor.sum",
    "sm_throughput_pct": "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "dram_throughput_pct": "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "l2_hit_rate_pct": "lts__t_sector_hit_rate.pct",
    "achieved_occupancy_pct": "sm__warps_active.avg.pct_of_peak_sustained_active",
    "sm_clock_hz": "sm__cycles_elapsed.avg.per_second",
    "dram_clock_hz": "dram__cycles_elapsed.avg.per_second",
    "dram_bytes_per_cycle_peak": "dram__bytes.sum.peak_sustained",
    "sm_count": "device__attribute_multiprocessor_count",
    # per-cycle peaks and elapsed cycles, to derive tensor peaks (ops/cycle x cycles)
    "tensor_ops_fp8_peak_per_cycle": "sm__ops_path_tensor_src_fp8_sparsity_off.sum.peak_sustained",
    "tensor_ops_bf16_hgmma_peak_per_cycle": "sm__ops_path_tensor_op_hgmma_src_bf16_dst_fp32_sparsity_off.sum.peak_sustained",
    "sm_cycles_elapsed_max": "sm__cycles_elapsed.max",
}

# kernels.csv as a whole: schema columns plus every counter (float64; NaN where a collector did not read it).
KERNEL_TABLE_COLUMNS: dict[str, str] = {**KERNEL_COLUMNS, **dict.fromkeys(COUNTER_METRICS, "float64")}

# points.csv: CUDA-event timing of whole layer calls, always collected.
POINT_COLUMNS: dict[str, str] = {
    "format": "str",
    "batch": "Int64",
    "repeat": "Int64",
    "layer_time_ns": "float64",
    "experts_touched": "Int64",  # experts that received at least one token (measured from routing)
    "kernel": "str",             # implementation that ran the point (e.g. moeprof-triton)
    # NVML while the point's timed calls ran (the same on each of its rows; empty where not read, and in
    # captures made before moeprof recorded them): SM clock, board power, and the shares of samples with
    # a power reason (SW power cap, HW power brake) or a thermal / HW slowdown reason active
    "sm_clock_median_mhz": "float64",
    "sm_clock_min_mhz": "float64",
    "power_median_w": "float64",
    "power_capped_fraction": "float64",
    "thermal_slowdown_fraction": "float64",
}
POINT_CLOCK_COLUMNS = ("sm_clock_median_mhz", "sm_clock_min_mhz", "power_median_w", "power_capped_fraction",
                       "thermal_slowdown_fraction")

# NVTX: layer calls are wrapped in nested push/pop ranges moe > <format> > <batch> > <phase>,
# so the path reads moe/<format>/<batch>/<phase>.
NVTX_ROOT = "moe"
PHASES = ["route", "sort", "quant", "gemm1", "act", "gemm2", "combine"]
# Communication phases of a layer sharded over ranks (models/sharded.py): tp all-reduce of the
# output, ep all-to-all dispatch of the routed tokens and collect of the expert outputs.
COMM_PHASES = ["allreduce", "dispatch", "collect"]
# kernels.csv of a multi-rank capture carries a `rank` column (torch.distributed rank of the
# process whose report the row came from); single-GPU captures have none.
RANK_COLUMN = "rank"


# ------------------------------------------------------------------------------------------------
# tables

def coerce_columns(df: "pd.DataFrame", columns: dict[str, str], keep_other: bool = False) -> "pd.DataFrame":
    """The one dtype coercion of the capture tables: every column of `columns` present with its dtype
    ('str': text, empty for missing; 'Int64': nullable integer, rounded; else a numpy float dtype,
    NaN for missing), added empty where absent. Schema columns come first, in schema order; other
    columns are dropped, or kept after them with `keep_other`."""
    import numpy as np
    import pandas as pd

    from moeprof.capture_folder.kernel_store import TEXT_DTYPE, text_column

    n = len(df)
    out: dict[str, Any] = {}
    for col, dtype in columns.items():
        if col in df:
            s = df[col]
            if dtype == "str":  # converted once per distinct value (a launch table repeats few names)
                s = text_column(s)
            elif dtype == "Int64":
                if s.dtype != "Int64":
                    s = pd.to_numeric(s, errors="coerce")
                    s = (s if pd.api.types.is_integer_dtype(s.dtype) else s.round()).astype("Int64")
            else:
                s = pd.to_numeric(s, errors="coerce").astype(dtype)
        elif dtype == "str":
            s = pd.Series(pd.array([""] * n, dtype=TEXT_DTYPE), index=df.index)
        elif dtype == "Int64":
            s = pd.Series(pd.array([pd.NA] * n, dtype="Int64"), index=df.index)
        else:
            s = pd.Series(np.nan, index=df.index, dtype=dtype)
        out[col] = s
    if keep_other:
        out.update({c: df[c] for c in df.columns if c not in columns})
    return pd.DataFrame(out, index=df.index, copy=False).reset_index(drop=True)


def empty_table(columns: dict[str, str]) -> "pd.DataFrame":
    """A table with no rows and the schema's columns and dtypes."""
    import pandas as pd

    return coerce_columns(pd.DataFrame(), columns)


# ------------------------------------------------------------------------------------------------
# manifest

def _positive_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _opt_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _opt_num(v: Any) -> float | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def _obj(v: Any, what: str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise MoeprofError(f"{what} must be a JSON object, got {type(v).__name__}")
    return v


def _extra(d: dict, known: tuple[str, ...]) -> dict:
    return {k: v for k, v in d.items() if k not in known}


@dataclass(frozen=True)
class LayerShape:
    """The MoE layer's dimensions (one spelling for the contract, the roofline model's)."""
    hidden_size: int
    expert_intermediate_size: int   # I of one routed expert; version-1 manifests call it intermediate_size
    num_experts: int
    top_k: int

    KEYS = ("hidden_size", "expert_intermediate_size", "num_experts", "top_k")
    V1_KEYS = {"expert_intermediate_size": "intermediate_size"}

    @classmethod
    def from_json(cls, d: dict) -> "LayerShape | None":
        """From a workload or shape object, either spelling; None unless all four are positive integers."""
        vals = {}
        for key in cls.KEYS:
            v = d.get(key, d.get(cls.V1_KEYS.get(key, key)))
            if _positive_int(v) is None:
                return None
            vals[key] = v
        return cls(**vals)

    @classmethod
    def from_model(cls, model: Any) -> "LayerShape":
        """From a roofline MoeModel (or anything with its four attributes)."""
        return cls(*(int(getattr(model, k)) for k in cls.KEYS))

    def to_json(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.KEYS}

    def layer_kwargs(self) -> dict[str, int]:
        """Keyword arguments of moeprof.models.layer.build_layer (which names I `intermediate_size`)."""
        return {"hidden_size": self.hidden_size, "intermediate_size": self.expert_intermediate_size,
                "num_experts": self.num_experts, "top_k": self.top_k}


@dataclass(frozen=True)
class GpuInfo:
    name: str | None = None
    spec: str | None = None             # moeprof.roofline.gpus key matched at capture time
    sm_count: int | None = None
    memory_bytes: int | None = None
    l2_bytes: int | None = None
    compute_capability: str | None = None
    cuda: str | None = None
    sm_clock_max_mhz: float | None = None
    memory_clock_max_mhz: float | None = None
    driver: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _KEYS = ("name", "spec", "sm_count", "memory_bytes", "l2_bytes", "compute_capability", "cuda",
             "sm_clock_max_mhz", "memory_clock_max_mhz", "driver")

    @property
    def label(self) -> str:
        return str(self.name or self.spec or "unknown GPU")

    @classmethod
    def from_json(cls, d: Any) -> "GpuInfo":
        d = _obj(d, "'gpu'")
        return cls(name=_opt_str(d.get("name")) or None, spec=_opt_str(d.get("spec")) or None,
                   sm_count=_positive_int(d.get("sm_count")), memory_bytes=_positive_int(d.get("memory_bytes")),
                   l2_bytes=_positive_int(d.get("l2_bytes")), compute_capability=_opt_str(d.get("compute_capability")),
                   cuda=_opt_str(d.get("cuda")), sm_clock_max_mhz=_opt_num(d.get("sm_clock_max_mhz")),
                   memory_clock_max_mhz=_opt_num(d.get("memory_clock_max_mhz")), driver=_opt_str(d.get("driver")),
                   extra=_extra(d, cls._KEYS))

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self._KEYS if getattr(self, k) is not None}
        return {**out, **self.extra}


@dataclass(frozen=True)
class Workload:
    """What ran: the MoE sweep (mode 'moe') or a program of the user's (mode 'external')."""
    mode: str = "moe"
    model: str | None = None            # preset name, 'custom' (--shape) or the program's model
    shape: LayerShape | None = None
    formats: tuple[str, ...] = ()
    batches: tuple[int, ...] = ()
    tp: int = 1
    ep: int = 1
    routing: str = "uniform"
    seed: int | None = None
    repeats: int | None = None
    warmup: int | None = None
    kernel: str | None = None           # implementation that ran the layer (triton, torch, ...)
    workload: str | None = None         # moeprof | toy (self-test layer)
    command: tuple[str, ...] | None = None  # external mode: the program's argv
    labels: dict[str, str] = field(default_factory=dict)  # user labels of the run (foreign programs)
    nvtx_pattern: str | None = None     # how a foreign program's NVTX ranges name format/batch/phase
    extra: dict[str, Any] = field(default_factory=dict)

    _KEYS = ("mode", "model", "formats", "batches", "tp", "ep", "routing", "seed", "repeats", "warmup", "kernel",
             "workload", "command", "labels", "nvtx_pattern", *LayerShape.KEYS, "intermediate_size")

    @property
    def external(self) -> bool:
        return self.mode == "external"

    @classmethod
    def from_json(cls, d: Any) -> "Workload":
        d = _obj(d, "'workload'")
        for key in ("tp", "ep"):
            v = d.get(key)
            if v is not None and _positive_int(v) is None:
                raise MoeprofError(f"workload {key} must be a positive integer, got {v!r}")
        cmd = d.get("command")
        if isinstance(cmd, str):
            cmd = tuple(shlex.split(cmd))
        elif isinstance(cmd, list):
            cmd = tuple(str(x) for x in cmd)
        else:
            cmd = None
        labels = d.get("labels")
        if labels is not None and not isinstance(labels, dict):
            raise MoeprofError(f"workload labels must be a JSON object, got {type(labels).__name__}")
        return cls(mode=str(d.get("mode") or "moe"), model=_opt_str(d.get("model")) or None,
                   shape=LayerShape.from_json(d),
                   formats=tuple(str(f) for f in d.get("formats") or ()),
                   batches=tuple(b for b in d.get("batches") or () if _positive_int(b)),
                   tp=d.get("tp") or 1, ep=d.get("ep") or 1, routing=str(d.get("routing") or "uniform"),
                   seed=_opt_int(d.get("seed")), repeats=_opt_int(d.get("repeats")), warmup=_opt_int(d.get("warmup")),
                   kernel=_opt_str(d.get("kernel")), workload=_opt_str(d.get("workload")), command=cmd,
                   labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
                   nvtx_pattern=_opt_str(d.get("nvtx_pattern")), extra=_extra(d, cls._KEYS))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "model": self.model}
        if self.shape is not None:
            out.update(self.shape.to_json())
        out.update({"formats": list(self.formats), "batches": list(self.batches), "tp": self.tp, "ep": self.ep,
                    "routing": self.routing})
        for key in ("seed", "repeats", "warmup", "kernel", "workload"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["command"] = list(self.command) if self.command is not None else None
        # external runs always say how their launches were labelled (null / {} where not)
        if self.labels or self.external:
            out["labels"] = dict(self.labels)
        if self.nvtx_pattern is not None or self.external:
            out["nvtx_pattern"] = self.nvtx_pattern
        return {**out, **self.extra}


@dataclass(frozen=True)
class CollectorEntry:
    status: str | None = None           # pending | ok | failed | skipped
    reason: str | None = None           # why it failed or was skipped
    tool: str | None = None
    tool_version: str | None = None
    options: Any = None                 # the collector's options (object, or nsys's argument list)
    files: tuple[str, ...] | None = None  # raw files, relative to the capture folder (None: none listed)
    extra: dict[str, Any] = field(default_factory=dict)

    _KEYS = ("status", "reason", "tool", "tool_version", "options", "files")

    @property
    def option_dict(self) -> dict[str, Any]:
        return self.options if isinstance(self.options, dict) else {}

    @classmethod
    def from_json(cls, d: Any, name: str) -> "CollectorEntry":
        d = _obj(d, f"collector {name!r}")
        files = d.get("files")
        return cls(status=_opt_str(d.get("status")), reason=_opt_str(d.get("reason")), tool=_opt_str(d.get("tool")),
                   tool_version=_opt_str(d.get("tool_version")), options=d.get("options"),
                   files=tuple(str(f) for f in files) if isinstance(files, list) else None,
                   extra=_extra(d, cls._KEYS))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        for key in ("reason", "tool", "tool_version", "options"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.files is not None:
            out["files"] = list(self.files)
        return {**out, **self.extra}


@dataclass(frozen=True)
class Manifest:
    workload: Workload = field(default_factory=Workload)
    gpu: GpuInfo = field(default_factory=GpuInfo)
    collectors: dict[str, CollectorEntry] = field(default_factory=dict)
    status: str | None = None           # running | complete | partial | failed | interrupted
    manifest_version: int = MANIFEST_VERSION  # of the file it was read from
    moeprof_version: str | None = None
    command_line: tuple[str, ...] = ()
    started_utc: str | None = None
    finished_utc: str | None = None
    software: dict[str, Any] = field(default_factory=dict)
    points_done: tuple[tuple[str, int], ...] = ()
    points_failed: tuple[tuple[Any, ...], ...] = ()
    label_errors: tuple[str, ...] = ()  # external mode: a recorded NVTX pattern that labelled nothing, and why
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. shipped, resumed_utc, command_line_resume, merged_from

    _KEYS = ("schema", "manifest_version", "moeprof_version", "command_line", "started_utc", "finished_utc",
             "status", "gpu", "software", "workload", "collectors", "points_done", "points_failed", "label_errors")

    @property
    def label(self) -> str:
        w = self.workload
        return f"{w.model or w.mode or 'workload'} on {self.gpu.label}"

    def collector(self, name: str) -> CollectorEntry:
        """The named collector's entry (an empty one where the manifest has none)."""
        return self.collectors.get(name) or CollectorEntry()

    @classmethod
    def from_json(cls, d: Any) -> "Manifest":
        """A manifest of any readable version; MoeprofError (one line) for what is not one."""
        if not isinstance(d, dict):
            raise MoeprofError("expected a JSON object")
        if d.get("schema", MANIFEST_SCHEMA) != MANIFEST_SCHEMA:
            raise MoeprofError(f"not a moeprof capture manifest (schema {d.get('schema')!r})")
        version = d.get("manifest_version")
        if version not in READABLE_MANIFEST_VERSIONS or isinstance(version, bool):
            raise MoeprofError(f"manifest version {version!r} is not supported (this moeprof reads versions "
                               f"{', '.join(map(str, READABLE_MANIFEST_VERSIONS))})")
        collectors = {str(name): CollectorEntry.from_json(info, str(name))
                      for name, info in _obj(d.get("collectors"), "'collectors'").items()}
        done = tuple((str(p[0]), int(p[1])) for p in d.get("points_done") or ()
                     if isinstance(p, (list, tuple)) and len(p) == 2 and _positive_int(p[1]))
        failed = tuple(tuple(p) for p in d.get("points_failed") or () if isinstance(p, (list, tuple)))
        cmd = d.get("command_line")
        label_errors = d.get("label_errors")
        return cls(workload=Workload.from_json(d.get("workload")), gpu=GpuInfo.from_json(d.get("gpu")),
                   collectors=collectors, status=_opt_str(d.get("status")), manifest_version=version,
                   moeprof_version=_opt_str(d.get("moeprof_version")),
                   command_line=tuple(str(x) for x in cmd) if isinstance(cmd, list) else (),
                   started_utc=_opt_str(d.get("started_utc")), finished_utc=_opt_str(d.get("finished_utc")),
                   software=dict(_obj(d.get("software"), "'software'")), points_done=done, points_failed=failed,
                   label_errors=tuple(str(e) for e in label_errors) if isinstance(label_errors, list) else (),
                   extra=_extra(d, cls._KEYS))

    def to_json(self) -> dict[str, Any]:
        """The manifest as written, in the current version."""
        return {"schema": MANIFEST_SCHEMA, "manifest_version": MANIFEST_VERSION,
                "moeprof_version": self.moeprof_version, "command_line": list(self.command_line),
                "started_utc": self.started_utc, "finished_utc": self.finished_utc, "status": self.status,
                "gpu": self.gpu.to_json(), "software": dict(self.software), "workload": self.workload.to_json(),
                "collectors": {name: c.to_json() for name, c in self.collectors.items()},
                "points_done": [list(p) for p in self.points_done],
                "points_failed": [list(p) for p in self.points_failed],
                **({"label_errors": list(self.label_errors)} if self.label_errors else {}), **self.extra}


def read_manifest(folder: Path) -> Manifest:
    """The folder's manifest.json; one-line MoeprofError naming the file for anything unreadable."""
    file = Path(folder) / MANIFEST_FILE
    if not file.is_file():
        raise MoeprofError(f"{folder}: not a capture folder (no {MANIFEST_FILE})")
    # bounded (size, nesting, integer digits) and without control characters: a manifest is data
    d = clean_json(load_json(file, "manifest"))
    try:
        return Manifest.from_json(d)
    except MoeprofError as exc:
        raise MoeprofError(f"{file}: {exc}") from None


def manifest_text(manifest: Manifest | dict[str, Any]) -> str:
    """manifest.json's text in the current version (a dict is read as a manifest first: the writer's
    working copy passes through the contract on every save)."""
    m = manifest if isinstance(manifest, Manifest) else Manifest.from_json(manifest)
    return json.dumps(m.to_json(), indent=2, default=str) + "\n"
