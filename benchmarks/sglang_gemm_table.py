"""GEMM against GEMM: SGLang's `fused_moe_kernel` and moeprof's expert GEMMs, from nsys capture folders.

    python3 benchmarks/sglang_gemm_table.py SGLANG_FP8 SGLANG_BF16 MOEPROF [--json OUT.json]

SGLANG_*: captures of examples/sglang_fused_moe.py (`moeprof capture --collect nsys -- ...`);
MOEPROF: a `moeprof capture --collect nsys -f fp8,bf16` of moeprof's own layers at the same batches,
on the same card. Per format and batch, in microseconds (median over the layer calls of the sum of
the call's expert-GEMM kernel durations, nsys):
  sglang default  the two `fused_moe_kernel` launches of each call inside `moe/<format>/<batch>`
                  (SGLang's own tile choice for the batch),
  sglang best     the fastest configuration among the `sglang-tile/<format>/<batch>/<config>/<call>`
                  ranges (--tune), the configuration named,
  moeprof         the kernels of the gemm1 and gemm2 phases,
and the rest of SGLang's call (align, activation quantization, activation, sum-reduce, torch
allocations) reported apart as glue. Reads only kernels.csv and manifest.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

GEMM_NAME = "fused_moe_kernel"


def load(folder: str) -> tuple[pd.DataFrame, dict]:
    root = Path(folder)
    man = json.loads((root / "manifest.json").read_text())
    kern = root / "kernels.csv"
    if not kern.exists():
        kern = root / "kernels.csv.gz"
    df = pd.read_csv(kern, dtype={"nvtx_path": str, "kernel_name": str, "format": str, "phase": str},
                     keep_default_na=False, na_values={"batch": [""], "repeat": [""], "duration_ns": [""],
                                                       "start_ns": [""]})
    df = df[df["collector"] == "nsys"].copy()
    bad = ~(df["duration_ns"] > 0)
    if bad.any():
        print(f"{folder}: dropped {int(bad.sum())} launches with a missing or non-positive duration", file=sys.stderr)
        df = df[~bad]
    return df, man


def sglang_default(df: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """Per batch: median over calls of the two fused_moe_kernel launches, and of the rest of the call."""
    d = df[(df["format"] == fmt) & df["batch"].notna() & df["repeat"].notna()].copy()
    d["is_gemm"] = d["kernel_name"].str.contains(GEMM_NAME, regex=False)
    per_call = d.groupby(["batch", "repeat"]).apply(
        lambda g: pd.Series({"gemm_us": g.loc[g["is_gemm"], "duration_ns"].sum() / 1e3,
                             "gemm_launches": int(g["is_gemm"].sum()),
                             "glue_us": g.loc[~g["is_gemm"], "duration_ns"].sum() / 1e3}), include_groups=False)
    if len(per_call) and not (per_call["gemm_launches"] == 2).all():
        raise SystemExit(f"sglang {fmt}: expected 2 fused_moe_kernel launches per call, got "
                         f"{sorted(per_call['gemm_launches'].unique())}")
    return per_call.groupby("batch")[["gemm_us", "glue_us"]].median()


def sglang_tiles(df: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """Per batch and tile configuration: median over calls of the two fused_moe_kernel launches."""
    prefix = f"sglang-tile/{fmt}/"
    t = df[df["nvtx_path"].str.startswith(prefix) & df["kernel_name"].str.contains(GEMM_NAME, regex=False)].copy()
    if t.empty:
        return pd.DataFrame(columns=["batch", "config", "gemm_us"])
    parts = t["nvtx_path"].str.split("/", expand=True)
    t["batch"], t["config"], t["call"] = parts[2].astype(int), parts[3], parts[4].astype(int)
    per_call = t.groupby(["batch", "config", "call"])["duration_ns"].agg(["sum", "count"])
    if not (per_call["count"] == 2).all():
        raise SystemExit(f"sglang {fmt} tiles: expected 2 fused_moe_kernel launches per call")
    med = (per_call["sum"] / 1e3).groupby(["batch", "config"]).median().rename("gemm_us").reset_index()
    return med


def moeprof_gemms(df: pd.DataFrame, fmt: str) -> pd.Series:
    d = df[(df["format"] == fmt) & df["phase"].isin(["gemm1", "gemm2"]) & df["repeat"].notna()]
    return (d.groupby(["batch", "repeat"])["duration_ns"].sum() / 1e3).groupby("batch").median()


def table(sgl_caps: dict[str, str], moeprof_cap: str) -> tuple[list[dict], dict]:
    mp, mp_man = load(moeprof_cap)
    rows, cards = [], {"moeprof": mp_man.get("gpu", {}).get("name")}
    for fmt, folder in sgl_caps.items():
        df, man = load(folder)
        cards[f"sglang-{fmt}"] = man.get("gpu", {}).get("name")
        default = sglang_default(df, fmt)
        tiles = sglang_tiles(df, fmt)
        ours = moeprof_gemms(mp, fmt)
        for b, r in default.iterrows():
            b = int(b)
            tb = tiles[tiles["batch"] == b]
            best = tb.loc[tb["gemm_us"].idxmin()] if len(tb) else None
            row = dict(format=fmt, batch=b, sglang_default_gemm_us=round(r["gemm_us"], 1),
                       sglang_glue_us=round(r["glue_us"], 1))
            if best is not None:
                best_us = min(float(best["gemm_us"]), float(r["gemm_us"]))
                row.update(sglang_best_gemm_us=round(best_us, 1),
                           sglang_best_config=best["config"] if best_us < r["gemm_us"] else "default")
            if b in ours.index:
                row["moeprof_gemm_us"] = round(float(ours[b]), 1)
                ref = row.get("sglang_best_gemm_us", row["sglang_default_gemm_us"])
                row["sglang_best_over_moeprof"] = round(ref / row["moeprof_gemm_us"], 3)
            rows.append(row)
    return rows, cards


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sglang_fp8")
    ap.add_argument("sglang_bf16")
    ap.add_argument("moeprof")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    rows, cards = table({"fp8": args.sglang_fp8, "bf16": args.sglang_bf16}, args.moeprof)
    names = {c for c in cards.values() if c}
    if len(names) > 1:
        print(f"sglang_gemm_table: error: captures from different cards: {cards}", file=sys.stderr)
        return 2
    print(f"card: {next(iter(names), '?')}   (us; sglang best / moeprof > 1 means moeprof's GEMMs are faster)")
    print("| format | batch | SGLang default | SGLang best-found | best config | moeprof | best/moeprof | SGLang glue |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['format']} | {r['batch']} | {r['sglang_default_gemm_us']} | {r.get('sglang_best_gemm_us', '')} | "
              f"{r.get('sglang_best_config', '')} | {r.get('moeprof_gemm_us', '')} | "
              f"{r.get('sglang_best_over_moeprof', '')} | {r['sglang_glue_us']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(cards=cards, rows=rows), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
