"""Short table of the ncu metrics that say where a GEMM's time goes (from `ncu --page details --csv`)."""
import csv
import sys

KEEP = ("Duration", "DRAM Throughput", "Memory Throughput", "Registers Per Thread", "Achieved Occupancy",
        "Theoretical Occupancy", "Block Limit Registers", "Block Limit Shared Mem", "Issue Slots Busy",
        "Issued Warp Per Scheduler", "No Eligible", "Active Warps Per Scheduler", "Eligible Warps Per Scheduler",
        "Warp Cycles Per Issued Instruction", "Avg. Active Threads Per Warp", "SM Frequency", "DRAM Frequency")


def main(tag, path):
    rows = list(csv.DictReader(open(path)))
    by_id: dict = {}
    for r in rows:
        by_id.setdefault(r["ID"], []).append(r)
    for kid, rs in by_id.items():
        name = "gemm1" if kid == "0" else "gemm2" if kid == "1" else kid
        print(f"NCU {tag} {name}: " + "; ".join(
            f"{r['Metric Name']}={r['Metric Value']}{(' ' + r['Metric Unit']) if r['Metric Unit'] else ''}"
            for r in rs if r["Metric Name"] in KEEP))
        # stall reasons: warps stalled per issued instruction, by reason (largest first)
        st = sorted(((r["Metric Name"].replace("smsp__average_warps_issue_stalled_", "").replace(
            "_per_issue_active.ratio", ""), float(r["Metric Value"].replace(",", "") or 0)) for r in rs
            if r["Metric Name"].startswith("smsp__average_warps_issue_stalled_")), key=lambda kv: -kv[1])
        print(f"NCU {tag} {name} stalls/issue: " + "; ".join(f"{k}={v:.2f}" for k, v in st if v >= 0.05))

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
