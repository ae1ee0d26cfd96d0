"""Summary of benchmarks/ncu_pipes.sh's csv files: per launch, the time, DRAM throughput, issue-slot use,
the pipes' utilization, the stall reasons, and where in the SASS the warps were sampled stalled.

    python3 benchmarks/ncu_pipes.py OUT_DIR/TAG      (reads TAG.raw.csv and TAG.sass.csv)

Pipe utilization is ncu's own (% of the pipe's peak while the SM is active): `inst_executed_pipe_X` counts
warp instructions issued to pipe X against its issue rate, `pipe_X_cycles_active` the cycles it was busy.
"""
import collections
import csv
import re
import sys

PIPE = re.compile(r"^sm__(inst_executed_pipe_|pipe_)([a-z0-9_]+?)(_cycles_active)?\.avg\.pct_of_peak_sustained_active$")
STALL = re.compile(r"^smsp__average_warps_issue_stalled_([a-z_]+)_per_issue_active\.ratio$")
SCALARS = (("time_us", "gpu__time_duration.sum", 1), ("dram_pct", "dram__throughput.avg.pct_of_peak_sustained_elapsed", 1),
           ("issue_active_pct", "smsp__issue_active.avg.pct_of_peak_sustained_active", 1),
           ("warp_instr", "smsp__inst_executed.sum", 1), ("regs", "launch__registers_per_thread", 1),
           ("warps_per_scheduler", "smsp__warps_active.avg.per_cycle_active", 1),
           ("eligible_per_scheduler", "smsp__warps_eligible.avg.per_cycle_active", 1),
           ("sm_clock_ghz", "smsp__cycles_elapsed.avg.per_second", 1e-9))


def _num(s):
    try:
        return float(str(s).replace(",", ""))
    except ValueError:
        return None


def raw_rows(path):
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r]
    head = rows[0]
    # row 1 holds the units; a launch per row after it
    return [dict(zip(head, r)) for r in rows[2:] if len(r) == len(head)]


def summarize_raw(d):
    out = {}
    for name, metric, mult in SCALARS:
        v = _num(d.get(metric))
        if v is not None:
            out[name] = v * mult
    pipes = {}
    for k, v in d.items():
        m = PIPE.match(k)
        if m and _num(v) is not None:
            kind = "busy" if m.group(1) == "pipe_" else "issue"   # pipe_X_cycles_active: cycles busy
            pipes[(m.group(2), kind)] = _num(v)
    stalls = {m.group(1): _num(v) for k, v in d.items() if (m := STALL.match(k)) and _num(v) is not None}
    return out, pipes, stalls


def sass_tables(path):
    """The source page: a table per kernel function in launch order, after a "Kernel Name" row, each
    starting at a header row with an 'Address' column (ncu 2025.3 prints each launch's table twice);
    [(kernel name, rows)]."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError:
        return []
    tables, head, name = [], None, None
    for r in rows:
        if not r:
            continue
        if r[0].strip() == "Kernel Name":
            name = r[1].strip() if len(r) > 1 else "?"
        elif any(c.strip() in ("Address", "# Address") for c in r):
            head = [c.strip() for c in r]
            tables.append((name, []))
        elif tables and head is not None and len(r) == len(head):
            tables[-1][1].append(dict(zip(head, r)))
    return tables


def table_of_launch(tables, i, n_launches, name):
    """Launch i's table: tables come in launch order, the same number per launch; None when the
    layout is not that (or the name differs)."""
    if not tables or len(tables) % n_launches:
        return None
    t_name, rows = tables[i * (len(tables) // n_launches)]
    return rows if t_name == name else None


def summarize_sass(table, top=14):
    src = next((c for c in ("Source", "SASS") if table and c in table[0]), None)
    samp = next((c for c in (table[0] if table else {}) if c.startswith("Warp Stall Sampling (All")), None)
    execd = next((c for c in (table[0] if table else {}) if c.startswith("Instructions Executed")), None)
    if not src or not samp:
        return ["  (no SASS table with stall samples)"]
    by_op = collections.defaultdict(lambda: [0.0, 0.0])
    total = sum(_num(r[samp]) or 0 for r in table) or 1.0
    for r in table:
        ins = re.sub(r"^@!?U?P\w+\s+", "", r[src].strip())
        op = ins.split(" ")[0] if ins else "?"
        by_op[op][0] += _num(r[samp]) or 0
        if execd:
            by_op[op][1] += _num(r[execd]) or 0
    lines = [f"  stall samples by opcode (of {total:.0f}; warp instructions executed):"]
    for op, (s, e) in sorted(by_op.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"    {op:26s} {100 * s / total:5.1f} %   {e:14.0f}")
    reasons = [c for c in table[0] if c.startswith("stall_") and not c.endswith("(Not Issued)")]
    hot = sorted(table, key=lambda r: -(_num(r[samp]) or 0))[:top]
    lines.append("  hottest instructions (samples %, top stall reasons):")
    for r in hot:
        why = sorted(((c, _num(r[c]) or 0) for c in reasons), key=lambda kv: -kv[1])[:2]
        lines.append(f"    {r.get('Address', r.get('# Address', '')):>6} {100 * (_num(r[samp]) or 0) / total:5.1f} %  "
                     f"{r[src].strip()[:60]:60s} " + ", ".join(f"{c}={v:.0f}" for c, v in why if v))
    return lines


def main(stem):
    raws = raw_rows(stem + ".raw.csv")
    tables = sass_tables(stem + ".sass.csv")
    for i, d in enumerate(raws):
        scal, pipes, stalls = summarize_raw(d)
        name = d.get("Kernel Name", "?")[:40]
        print(f"launch {i} ({'gemm1' if i == 0 else 'gemm2' if i == 1 else i}) {name}: " +
              ", ".join(f"{k}={v:.3g}" for k, v in scal.items()))
        busy = sorted(((p, kind, v) for (p, kind), v in pipes.items() if v >= 1.0), key=lambda t: -t[2])
        print("  pipes, % of peak while active (issue: instructions issued to it; busy: cycles active): " +
              ", ".join(f"{p} {kind} {v:.1f}" for p, kind, v in busy))
        print("  stalls per issued instruction: " + ", ".join(
            f"{k}={v:.2f}" for k, v in sorted(stalls.items(), key=lambda kv: -kv[1]) if v >= 0.05))
        table = table_of_launch(tables, i, len(raws), d.get("Kernel Name"))
        if table is not None:
            print("\n".join(summarize_sass(table)))


if __name__ == "__main__":
    main(sys.argv[1])
