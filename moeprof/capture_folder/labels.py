"""Labels for programs moeprof did not write: which weight format, batch and phase their kernels ran.

Three sources, in order of precedence per kernel launch:
  1. NVTX paths moe/<format>/<batch>[/<phase>] (moeprof's own layers and `moeprof.mark`): kept as read.
  2. --nvtx-pattern REGEX: a regular expression searched in each launch's NVTX path (the '/'-joined
     push/pop ranges open at launch) whose named groups format, batch, phase and layer label it.
  3. --label key=value: whole-run labels (format=fp8, batch=64) for launches still unlabelled.
The capture applies them when it writes kernels.csv; analyze applies them again (with a new
pattern if given) to the loaded tables in memory, so an existing capture can be relabelled
without a GPU. The capture folder itself is never rewritten.

Layer calls under a pattern: consecutive launches under the same matched text form one run; a
run splits into calls where its first kernel name recurs (a program that loops over the same
layer under one range name starts each call with the same kernel).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from moeprof.capture_folder import NVTX_ROOT
from moeprof.errors import MoeprofError

PATTERN_GROUPS = ("format", "batch", "phase", "layer")
_KEY_RE = re.compile(r"[a-z][a-z0-9_]*")
_WORD_RE = re.compile(r"[A-Za-z0-9_.+-]+")


def positive_int(text: str, what: str) -> int:
    """`text` as a positive integer, else one line saying what was wrong."""
    if not re.fullmatch(r"\+?\d+", str(text).strip()) or int(str(text).strip()) < 1:
        raise MoeprofError(f"{what}: batch must be a positive integer, got {text!r}")
    return int(str(text).strip())


def parse_labels(items: list[str] | None) -> dict[str, str]:
    """['format=fp8', 'batch=64'] -> {'format': 'fp8', 'batch': '64'} (checked; one-line errors)."""
    labels: dict[str, str] = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not _KEY_RE.fullmatch(key) or not value:
            raise MoeprofError(f"--label {item!r}: expected key=value, e.g. --label format=fp8 --label batch=64")
        if key in labels and labels[key] != value:
            raise MoeprofError(f"--label {key} given twice ({labels[key]!r} and {value!r})")
        if key == "batch":
            value = str(positive_int(value, f"--label {item!r}"))
        elif key in ("format", "phase"):
            if not _WORD_RE.fullmatch(value):
                raise MoeprofError(f"--label {item!r}: {key} must be one word such as fp8")
            value = value.lower()
        labels[key] = value
    return labels


def compile_pattern(text: str | None) -> re.Pattern[str] | None:
    """--nvtx-pattern, compiled; it must name at least one of the groups format, batch, phase, layer."""
    if text is None:
        return None
    try:
        rx = re.compile(text)
    except re.error as exc:
        raise MoeprofError(f"--nvtx-pattern {text!r}: not a regular expression ({exc})") from None
    if not set(rx.groupindex) & set(PATTERN_GROUPS):
        raise MoeprofError(f"--nvtx-pattern {text!r}: name at least one group, e.g. "
                           r"'tokens=(?P<batch>\d+)' (groups: format, batch, phase, layer)")
    return rx


# moeprof's own NVTX paths: [.../]moe/<format>/<batch>[/<phase>...]
NVTX_PATH_RE = rf"(?:^|/){NVTX_ROOT}/(?P<format>[^/]+)/(?P<batch>\d+)(?:/(?P<phase>[^/]+))?"


def split_path(paths: pd.Series) -> pd.DataFrame:
    """format, batch, phase from NVTX paths of the form [.../]moe/<format>/<batch>[/<phase>...]."""
    # a launch table repeats few distinct paths: parse each once
    codes, uniq = pd.factorize(paths.fillna("").astype(object), use_na_sentinel=False)
    x = pd.Series(np.asarray(uniq, dtype=object), dtype=object).str.extract(NVTX_PATH_RE)
    fmt = x["format"].fillna("").to_numpy(dtype=object)
    batch = pd.to_numeric(x["batch"], errors="coerce").astype("Int64").array
    phase = x["phase"].fillna("").to_numpy(dtype=object)
    return pd.DataFrame({
        "format": pd.Series(fmt[codes], index=paths.index, dtype=object),
        "batch": pd.Series(batch.take(codes), index=paths.index),
        "phase": pd.Series(phase[codes], index=paths.index, dtype=object),
    }, index=paths.index)


def _own_paths(paths: pd.Series) -> pd.Series:
    return split_path(paths)["format"] != ""


def _match_table(paths: pd.Series, rx: re.Pattern[str]) -> pd.DataFrame:
    """Per row: matched text and the named groups (empty where the path does not match)."""
    uniq = pd.unique(paths)
    rows: dict[str, dict[str, str]] = {}
    for p in uniq:
        m = rx.search(p)
        if m is None:
            rows[p] = {"match": "", **{g: "" for g in PATTERN_GROUPS}}
        else:
            groups = m.groupdict()
            rows[p] = {"match": m.group(0), **{g: (groups.get(g) or "") for g in PATTERN_GROUPS}}
    table = pd.DataFrame.from_dict(rows, orient="index")
    return table.reindex(paths.to_numpy()).set_axis(paths.index)


def _number_calls(k: pd.DataFrame, labelled: pd.Series, key: pd.Series) -> pd.Series:
    """Repeat index per (format, batch) for pattern-labelled launches (see the module doc)."""
    rep = pd.Series(pd.NA, index=k.index, dtype="Int64")
    if not labelled.any():
        return rep
    order = (k.assign(_o=np.arange(len(k))).sort_values(["collector", "start_ns", "_o"], kind="stable", na_position="last")
             .index)
    key_o = key.loc[order].where(labelled.loc[order], "")
    coll = k.loc[order, "collector"]
    run_start = key_o.ne(key_o.shift()) | coll.ne(coll.shift())
    run = run_start.cumsum()
    names = k.loc[order, "kernel_name"]
    first_name = names.groupby(run.to_numpy()).transform("first")
    pos_in_run = run.groupby(run.to_numpy()).cumcount()
    recur = (names == first_name) & (pos_in_run > 0)
    call = (run_start | recur).cumsum()
    lab = labelled.loc[order].to_numpy()
    sub = pd.DataFrame({"format": k.loc[order, "format"].to_numpy()[lab], "batch": k.loc[order, "batch"].to_numpy()[lab],
                        "collector": coll.to_numpy()[lab], "call": call.to_numpy()[lab]}, index=order[lab])
    ranks = sub.groupby(["collector", "format", "batch"], dropna=False)["call"].rank(method="dense") - 1
    rep.loc[sub.index] = ranks.astype("int64").to_numpy()
    return rep


def relabel(kernels: pd.DataFrame, labels: dict[str, str] | None = None,
            pattern: re.Pattern[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """A copy of the kernel table with format/batch/phase/repeat from the pattern and whole-run labels.

    Raises MoeprofError when the pattern matches no launch, or labels a batch that is not a positive integer."""
    k = kernels.copy()
    notes: list[str] = []
    if k.empty:
        return k, notes
    paths = k["nvtx_path"].fillna("").astype(str)
    free = ~_own_paths(paths)
    if pattern is not None:
        k.loc[free, "format"] = ""
        k.loc[free, "phase"] = ""
        k.loc[free, "batch"] = pd.NA
        k.loc[free, "repeat"] = pd.NA
        mt = _match_table(paths[free], pattern)
        hit = mt["match"] != ""
        if not hit.any():
            seen = [p for p in pd.unique(paths[free]) if p][:3]
            raise MoeprofError(f"--nvtx-pattern {pattern.pattern!r} matches none of the {int(free.sum())} kernel "
                               f"launches' NVTX paths (" + (f"e.g. {', '.join(repr(s) for s in seen)})" if seen
                                                            else "the program pushed no NVTX range)"))
        rows = mt.index[hit]
        for group in ("format", "phase"):
            vals = mt.loc[rows, group]
            bad = vals[(vals != "") & ~vals.str.fullmatch(_WORD_RE.pattern)]
            if len(bad):
                raise MoeprofError(f"--nvtx-pattern: group {group} matched {bad.iloc[0]!r}: not one word")
            k.loc[rows, group] = vals.str.lower().to_numpy()
        batches = mt.loc[rows, "batch"]
        if (batches != "").any():
            uniq = {b: positive_int(b, "--nvtx-pattern") for b in pd.unique(batches[batches != ""])}
            sel = batches.index[batches != ""]
            k.loc[sel, "batch"] = batches[batches != ""].map(uniq).astype("int64").to_numpy()
        key = pd.Series("", index=k.index, dtype=object)
        key.loc[rows] = (mt.loc[rows, "match"] + "\x00" + mt.loc[rows, "layer"]).to_numpy()
        notes.append(f"--nvtx-pattern '{pattern.pattern}' labelled {int(hit.sum())} of {int(free.sum())} launches")
        whole = dict(labels or {})
        if "format" in whole:
            k.loc[free & (k["format"] == ""), "format"] = whole["format"]
        if "batch" in whole:
            k.loc[free & k["batch"].isna(), "batch"] = int(whole["batch"])
        labelled = free & key.ne("") & (k["format"] != "") & k["batch"].notna()
        k["repeat"] = k["repeat"].astype("Int64")
        k.loc[labelled, "repeat"] = _number_calls(k, labelled, key).loc[labelled]
    elif labels:
        if "format" in labels:
            k.loc[free & (k["format"] == ""), "format"] = labels["format"]
        if "batch" in labels:
            k.loc[free & k["batch"].isna(), "batch"] = int(labels["batch"])
    if labels:
        notes.append("whole-run labels " + ", ".join(f"{a}={b}" for a, b in labels.items()))
    k["batch"] = pd.to_numeric(k["batch"], errors="coerce").astype("Int64")
    return k, notes
