"""Kernel roles: which part of an MoE layer call each kernel launch is.

Table in -> table out: `classify(kernels)` adds
  role         route | sort | quant | gemm1 | act | gemm2 | combine | communication | other
  role_source  nvtx (the launch's NVTX phase) | name (kernel-name patterns, see below)
  call_id      integer id of the layer call the launch belongs to (per collector)

Without NVTX phases, names decide. Patterns cover our Triton kernels and other engines' MoE
kernels (SGLang/vLLM fused_moe, triton_kernels matmul_ogs, Marlin MoE, DeepGEMM, CUTLASS grouped
GEMMs, cuBLAS/nvjet). GEMM kernels whose names do not say gemm1 or gemm2 (e.g. `fused_moe_kernel`,
launched twice per layer call) are told apart by launch order within the layer call: the first
expert GEMM is gemm1 (gate/up), the next gemm2 (down), alternating. A generic dense GEMM that
runs before the call's top-k (the router's gate projection) is routing.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from moeprof.capture_folder import PHASES

ROLES = ["route", "sort", "quant", "gemm1", "act", "gemm2", "combine", "communication", "other"]
GEMM_ROLES = ("gemm1", "gemm2")

# (role, regex) in priority order; matched case-insensitively against the kernel name.
# "gemm" means an expert GEMM whose gemm1/gemm2 identity is resolved by launch order.
_NAME_RULES: list[tuple[str, str]] = [
    # Collectives (expert-parallel all-to-all, tensor-parallel all-reduce) before anything else:
    # their template names carry reduction ops and data types that other rules would take.
    ("communication", r"ncclDevKernel|ncclKernel|nccl_|all_?reduce|all_?to_?all|cross_device_reduce"),
    # Per-group problem sizes and pointers written before a grouped GEMM (torch._grouped_mm,
    # torch._scaled_grouped_mm): set-up, not a GEMM, though the name says grouped_gemm.
    ("sort", r"prepare_grouped_gemm_data|compute_problem_sizes|compute_expert_offsets"),
    ("gemm1", r"gemm1|w13|gate_?up|up_proj"),
    ("gemm2", r"gemm2|\bw2\b|_w2_|down_proj"),
    # MoE GEMMs first: their names often carry a fused epilogue (matmul_ogs_..._swiglu).
    ("gemm", r"fused_moe|matmul_ogs|marlin|deep_gemm|fp8_gemm_kernel|groupedgemm|grouped_gemm|group_gemm"),
    ("route", r"topk_softmax|_topk_forward|topk|top_k|gatherTopK|routing_?(?:kernel|logits)|router|gating|moe_gate"),
    ("sort", r"moe_align|count_and_sort_expert_tokens|align_block|sort_expert|bitonicSort|radixSort"
             r"|_routing_|_combined_routing|bitmatrix|compute_expert_offsets|compute_problem_sizes|expert_offsets"
             r"|moe_permute|permute|expand_input|scatter_|histogram"),
    ("quant", r"per_token_group_quant|per_token_quant|scaled_fp8_quant|dynamic_per_token_scaled_fp8_quant"
              r"|dynamic_scaled_fp8_quant|quantize|_quant|quant_|float8_copy|downcast_to_mx|to_mxfp"),
    ("act", r"silu_and_mul|act_and_mul|gelu_and_mul|swiglu|silu|gelu|swish"),
    ("combine", r"moe_sum|moe_reduce|finalize|moe_combine|combine|unpermute|gather_and_sum|reduce_grouped"),
    ("gemm", r"fused_moe|matmul_ogs|marlin|deep_gemm|fp8_gemm_kernel|groupedgemm|grouped_gemm|group_gemm"
             r"|cutlass|nvjet|gemm|sgemm|hgemm|xmma|wgmma|matmul|splitkreduce"),
]
_COMPILED = [(role, re.compile(rx, re.IGNORECASE)) for role, rx in _NAME_RULES]
# Dense GEMMs that are not MoE-specific: before the call's top-k they are the router projection.
_GENERIC_GEMM = re.compile(r"nvjet|sgemm|cublas|cutlass_80_simt|ampere_|sm90_xmma|splitkreduce|gemv", re.IGNORECASE)
# Launch-order helpers that belong to the GEMM before them rather than starting a new one.
_GEMM_AUX = re.compile(r"splitkreduce", re.IGNORECASE)


def role_from_name(name: str) -> str:
    """Role of a kernel by name alone; expert GEMMs of unknown order come back as 'gemm'."""
    for role, rx in _COMPILED:
        if rx.search(name or ""):
            return role
    return "other"


def _call_ids(df: pd.DataFrame, base_role: pd.Series) -> pd.Series:
    """Layer-call id per row: NVTX point and repeat where known, else segments that start at routing."""
    keys = ["collector", "format", "batch", "repeat"]
    have = [k for k in keys if k in df.columns]
    ids = pd.Series(-1, index=df.index, dtype="int64")
    if "repeat" in df.columns:
        known = df["repeat"].notna() & df["batch"].notna()
        if known.any():
            ids[known] = df.loc[known, have].groupby(have, sort=False, dropna=False).ngroup().to_numpy()
    unknown = ids < 0
    if unknown.any():
        # A call starts at a routing/sort kernel once the current call has run an expert GEMM (its
        # routing and sorting may be apart, with element-wise glue between them); in a program
        # without recognised GEMMs, at each run of routing/sort kernels.
        sub = df.loc[unknown]
        order = sub.sort_values(["collector", "start_ns"], kind="stable").index if "start_ns" in sub else sub.index
        roles = base_role.loc[order]
        coll = sub.loc[order, "collector"] if "collector" in sub else pd.Series("", index=order)
        head = roles.isin(["route", "sort"])
        prev_head = head.shift(1, fill_value=False)
        new_coll = coll.ne(coll.shift(1))
        # Where routing kernels exist, only they open a call (set-up before a grouped GEMM is "sort" too).
        has_route = (roles == "route").groupby(coll.to_numpy()).transform("any")
        head = head & (roles.eq("route") | ~has_route)
        gemms = roles.isin(["gemm", *GEMM_ROLES]).astype("int64").groupby(coll.to_numpy()).cumsum()
        gemms_at_prev_head = gemms.where(head).groupby(coll.to_numpy()).shift(1)
        gemms_at_prev_head = gemms_at_prev_head.where(head).groupby(coll.to_numpy()).ffill()
        any_gemm = gemms.groupby(coll.to_numpy()).transform("max") > 0
        after_gemm = head & (gemms_at_prev_head.isna() | (gemms > gemms_at_prev_head.fillna(-1)))
        starts = np.where(any_gemm, after_gemm, head & ~prev_head) | new_coll
        starts = pd.Series(starts, index=order)
        offset = int(ids.max()) + 1
        ids.loc[order] = starts.cumsum().to_numpy() + offset
    return ids


def _factorize_text(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """(code per row, distinct values in order of first appearance), as pd.factorize gives them for
    text without missing values. Through Python dicts: a str caches its hash and rows of a launch
    table share one object per name, while pandas' hash table re-reads each (often long, templated)
    kernel name, which takes several times longer on a million rows."""
    rows = values.to_numpy(dtype=object).tolist()
    uniques = list(dict.fromkeys(rows))
    code_of = {v: i for i, v in enumerate(uniques)}
    return np.fromiter(map(code_of.__getitem__, rows), dtype=np.intp, count=len(rows)), uniques


def classify(kernels: pd.DataFrame) -> pd.DataFrame:
    """Add role, role_source and call_id to a kernel table (a copy; the input is left unchanged)."""
    # A shallow copy: only new columns are set on it below (whole-column assignments, which never
    # write into the input's arrays), so copying the input's data would only cost time and memory.
    df = kernels.copy(deep=False)
    names = df["kernel_name"].fillna("").astype(str)
    # Classify each distinct name once (captures repeat a few dozen names a million times).
    codes, uniques = _factorize_text(names)
    by_name = np.array([role_from_name(n) for n in uniques], dtype=object)
    name_role = pd.Series(by_name[codes] if len(codes) else [], index=df.index, dtype=object)
    generic = pd.Series(np.array([bool(_GENERIC_GEMM.search(n)) for n in uniques], dtype=bool)[codes]
                        if len(codes) else [], index=df.index, dtype=bool)
    aux = pd.Series(np.array([bool(_GEMM_AUX.search(n)) for n in uniques], dtype=bool)[codes]
                    if len(codes) else [], index=df.index, dtype=bool)

    phase = df["phase"].fillna("").astype(str) if "phase" in df.columns else pd.Series("", index=df.index)
    from_nvtx = phase.isin(PHASES)
    base = name_role.where(~from_nvtx, phase)
    # A dense GEMM launched before a top-k (element-wise glue between them aside) is the router
    # projection: it opens the call.
    # Launch order as row positions: array takes in that order instead of index-label look-ups.
    if "start_ns" in df:
        by_time = df[["collector", "start_ns"]].reset_index(drop=True)
        order = by_time.sort_values(["collector", "start_ns"], kind="stable").index.to_numpy()
    else:
        order = np.arange(len(df))
    in_order = base.to_numpy(dtype=object)[order]
    seq = pd.Series(np.where((in_order != "other") & ~aux.to_numpy()[order], in_order, None), dtype=object)
    nxt = seq.shift(-1).bfill()
    router = generic.to_numpy()[order] & (in_order == "gemm") & (nxt == "route").to_numpy()
    base.iloc[order[router]] = "route"
    df["call_id"] = _call_ids(df, base)

    role = name_role.copy()
    pending = ~from_nvtx & (role == "gemm")
    if pending.any():
        role = _resolve_gemm_order(df, role, pending, generic, aux)
    role[from_nvtx] = phase[from_nvtx]
    df["role"] = pd.Categorical(role, categories=ROLES)
    # Two shared string objects taken per row (a fixed-width string array would become a million objects).
    df["role_source"] = np.array(["name", "nvtx"], dtype=object)[from_nvtx.to_numpy().astype(np.intp)]
    return df


def _resolve_gemm_order(df: pd.DataFrame, role: pd.Series, pending: pd.Series, generic: pd.Series,
                        aux: pd.Series) -> pd.Series:
    """gemm -> gemm1/gemm2 by launch order within each layer call; router GEMMs -> route."""
    role = role.copy()
    sort_cols = ["call_id", "start_ns"] if "start_ns" in df.columns else ["call_id"]
    order = df.sort_values(sort_cols, kind="stable").index
    calls = df.loc[order, "call_id"]
    r = role.loc[order]
    # Position of the first top-k/sort launch in the call: generic GEMMs before it are the router.
    pos = pd.Series(np.arange(len(order)), index=order)
    first_route = pos.where(r.isin(["route", "sort"])).groupby(calls).transform("min")
    is_pending = pending.loc[order]
    router = is_pending & generic.loc[order] & (pos < first_route)
    role.loc[router[router].index] = "route"
    gemm = is_pending & ~router
    main = gemm & ~aux.loc[order]
    # Index of each main GEMM launch within its call; aux kernels take the index of the GEMM before them.
    idx = main.astype(int).groupby(calls).cumsum() - 1
    idx = idx.where(gemm)
    which = np.where(idx.to_numpy() % 2 == 0, "gemm1", "gemm2")
    sel = gemm.to_numpy() & (idx.to_numpy() >= 0)
    role.loc[order[sel]] = which[sel]
    role.loc[order[gemm.to_numpy() & ~sel]] = "other"  # a split-K reduce with no GEMM before it
    return role
