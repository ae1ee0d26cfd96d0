"""Captures of programs moeprof did not write, made ready for one verdict.

  labelled(capture, pattern)   the capture's kernels relabelled in memory (moeprof.capture_folder.labels): whole-run
                               labels and NVTX pattern from its manifest, or a new pattern
  with_model(capture, model)   the capture set against a model preset (shape for the roofline)
  merge(captures, force)       runs of one program on one card (e.g. one with FP8 weights, one with
                               BF16) as one capture; the comparability rules of `diff` decide what
                               may be merged (different GPU, model or program: refused unless force)
Nothing here writes to a capture folder.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from moeprof.capture_folder import labels as labels_mod
from moeprof.analysis.diff import comparability
from moeprof.analysis.load import Capture
from moeprof.capture_folder import LayerShape
from moeprof.errors import MoeprofError

_INTERPRETERS = {"python", "python3", "pypy", "pypy3", "uv", "torchrun", "env"}


def program_of(command: Sequence[str] | None) -> str | None:
    """The program a command runs: the script or module after the interpreter and its options
    (['python3', 'examples/x.py', '--format', 'fp8'] -> 'x.py'; ['python', '-m', 'pkg.mod'] -> 'pkg.mod')."""
    if not command:
        return None
    args = list(command)
    while args and (os.path.basename(args[0]).rstrip("0123456789.") in _INTERPRETERS or args[0] in ("run",)):
        args = args[1:]
        while args and args[0].startswith("-"):
            if args[0] == "-m" and len(args) > 1:
                return args[1]
            args = args[1:]
    return os.path.basename(args[0]) if args else os.path.basename(command[0])


def labelled(capture: Capture, nvtx_pattern: str | None = None) -> Capture:
    """The capture with its labels applied to the kernel table (in memory); `nvtx_pattern` replaces
    the pattern recorded at capture time."""
    file = capture.path / "manifest.json"
    try:
        run_labels = labels_mod.parse_labels([f"{a}={b}" for a, b in capture.manifest.workload.labels.items()])
    except MoeprofError as exc:
        raise MoeprofError(f"{file}: {exc}") from None
    recorded = capture.manifest.workload.nvtx_pattern or None
    text = nvtx_pattern if nvtx_pattern is not None else recorded
    notes: list[str] = []
    if nvtx_pattern is None and recorded and capture.manifest.label_errors:
        # The recorded pattern labelled nothing when the capture was made: the same pattern again would
        # only repeat that error, so the capture is analyzed without it.
        text = None
        notes.append(f"the recorded --nvtx-pattern labelled nothing at capture time ({capture.manifest.label_errors[0]}); "
                     "relabel with --nvtx-pattern REGEX")
    try:
        pattern = labels_mod.compile_pattern(text)
    except MoeprofError as exc:
        raise MoeprofError(f"{file}: recorded {exc}" if nvtx_pattern is None else str(exc)) from None
    if not run_labels and pattern is None:
        return dataclasses.replace(capture, warnings=[*capture.warnings, *notes]) if notes else capture
    if nvtx_pattern is None and not capture.manifest.workload.external:
        return capture  # moeprof's own sweep is labelled by its NVTX ranges
    try:
        kernels, label_notes = labels_mod.relabel(capture.kernels, run_labels, pattern)
    except MoeprofError as exc:
        raise MoeprofError(f"{capture.path}: {exc}") from None
    return dataclasses.replace(capture, kernels=kernels, warnings=[*capture.warnings, *notes, *label_notes])


def with_model(capture: Capture, model: str) -> Capture:
    """The capture set against `model` (a preset or a Hugging Face config.json): its shape replaces the manifest's."""
    from moeprof.roofline.shapes import get_model

    m = get_model(model)
    workload = dataclasses.replace(capture.manifest.workload, model=m.name, shape=LayerShape.from_model(m))
    return dataclasses.replace(capture, manifest=dataclasses.replace(capture.manifest, workload=workload))


def _points(c: Capture) -> set[tuple[str, int]]:
    k = c.kernels[c.kernels["batch"].notna() & (c.kernels["format"] != "")]
    return set(zip(k["format"], k["batch"].astype("int64")))


def merge(captures: list[Capture], force: bool = False) -> tuple[Capture, list[str]]:
    """One capture holding the labelled runs of `captures`; (capture, warnings). One-line errors for
    runs that cannot be compared (unless force), unlabelled runs and (format, batch) points held twice."""
    first = captures[0]
    warnings: list[str] = []
    for other in captures[1:]:
        errors, soft = comparability(first, other)
        pa, pb = program_of(first.manifest.workload.command), program_of(other.manifest.workload.command)
        if pa != pb:
            errors.append(f"different programs: {pa!r} vs {pb!r}")
        soft = [s for s in soft if not s.startswith("workload mode differs")]
        where = f"{first.path} vs {other.path}"
        if errors and not force:
            raise MoeprofError(f"{where}: {errors[0]} (--force merges them anyway)")
        warnings += [f"{where}: {e}" for e in errors + soft]
    seen: dict[tuple[str, int], Path] = {}
    for c in captures:
        pts = _points(c)
        if not pts:
            has_format = (c.kernels["format"] != "").any()
            missing = "no batch label" if has_format else "no format/batch labels"
            raise MoeprofError(f"{c.path}: {missing} to merge (label it: --label batch=N / format=..., "
                               f"--nvtx-pattern with named groups, moeprof.mark; or analyze it alone)")
        for p in sorted(pts):
            if p in seen:
                raise MoeprofError(f"{seen[p]} and {c.path} both hold format {p[0]} at batch {p[1]}: "
                                   "the same point twice (labels copied from one run to another?)")
            seen[p] = c.path
    # Runs are merged one after the other on the time axis: launch order within a run decides
    # roles and layer calls, and the runs' own clocks overlap.
    parts, offset = [], 0
    for c in captures:
        k = c.kernels.copy()
        if k["start_ns"].notna().any():
            k["start_ns"] = k["start_ns"] - int(k["start_ns"].min()) + offset
            offset = int((k["start_ns"] + k["duration_ns"].fillna(0)).max()) + 1
        parts.append(k)
    kernels = pd.concat(parts, ignore_index=True)
    points = pd.concat([c.points for c in captures if len(c.points)] or [first.points], ignore_index=True)
    manifest = dataclasses.replace(
        first.manifest, workload=dataclasses.replace(first.manifest.workload, formats=tuple(sorted({f for f, _ in seen}))),
        extra={**first.manifest.extra, "merged_from": [str(c.path) for c in captures]})
    notes = [w for c in captures for w in c.warnings] + warnings
    notes.append("merged runs: " + ", ".join(f"{c.path.name} ({', '.join(sorted({f for f, _ in _points(c)}))})"
                                             for c in captures))
    return Capture(path=first.path, manifest=manifest, kernels=kernels, points=points, warnings=notes,
                   dropped=[d for c in captures for d in c.dropped]), warnings
