"""Communication term of a sharded MoE layer: bytes one rank moves over NVLink per layer call, and
the lower-bound time they take at the link bandwidth.

Sharding (as serving engines do it; `batch` is the layer's tokens, as in cost.layer_cost):
  tp  each rank computes a partial [tokens, H] output over its I/tp slice; the partial sums are
      added by an all-reduce of the bf16 output. A ring all-reduce sends (and receives)
      2 (tp-1)/tp x the tensor's bytes per rank (reduce-scatter + all-gather).
  ep  each rank holds batch/ep of the tokens and E/ep of the experts. Dispatch sends each of its
      tokens' top_k rows (bf16 [H]) to the rank holding that expert, combine sends the expert
      outputs back: under uniform routing (ep-1)/ep of the rank's top_k x tokens rows leave it,
      each way.
  tp and ep together: the tp all-reduce runs over the rank's batch/ep tokens.

The bytes per rank over the link bandwidth is NCCL's "bus bandwidth" convention, so a measured
kernel's bus bandwidth (bytes per rank / time) can be set directly against the link's.
Communication of the layer is not overlapped with its own GEMMs (the all-reduce needs the GEMM
output; the GEMMs need the dispatched tokens), so the layer's lower bound is compute/memory + link.
Activations are moved in bf16 (engines that quantize before dispatch move less).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from moeprof.errors import MoeprofError
from moeprof.roofline.formats import BF16_BYTES
from moeprof.roofline.gpus import GpuSpec, get_gpu
from moeprof.roofline.shapes import MoeModel, get_model


@dataclass(frozen=True)
class CommCost:
    tp: int
    ep: int
    batch: int
    allreduce_bytes: float        # bytes one rank sends for the tp all-reduce
    dispatch_bytes: float         # bytes one rank sends for the ep dispatch all-to-all
    combine_bytes: float          # bytes one rank sends for the ep combine all-to-all
    link_bytes_per_s: float       # per direction (bus bandwidth)

    @property
    def bytes(self) -> float:
        return self.allreduce_bytes + self.dispatch_bytes + self.combine_bytes

    @property
    def t_comm_s(self) -> float:
        return self.bytes / self.link_bytes_per_s if self.bytes else 0.0

    def as_record(self) -> dict[str, object]:
        rec: dict[str, object] = asdict(self)
        rec.update(comm_bytes=self.bytes, t_comm_us=self.t_comm_s * 1e6)
        return rec


def allreduce_bytes_per_rank(tensor_bytes: float, ranks: int) -> float:
    """Ring all-reduce: each rank sends 2 (N-1)/N of the tensor."""
    return 2.0 * (ranks - 1) / ranks * tensor_bytes if ranks > 1 else 0.0


def alltoall_bytes_per_rank(send_bytes: float, ranks: int) -> float:
    """All-to-all of a rank's send buffer spread evenly over N ranks: (N-1)/N of it leaves the rank."""
    return (ranks - 1) / ranks * send_bytes if ranks > 1 else 0.0


def link_bandwidth(gpu: GpuSpec | str, link_gbps: float | None = None) -> float:
    """Bytes/s one GPU sends over its links: --link-gbps (GB/s) if given, else the GPU table's figure."""
    if link_gbps is not None:
        if not (link_gbps > 0 and link_gbps < float("inf")):
            raise MoeprofError(f"--link-gbps must be a positive number of GB/s, got {link_gbps!r}")
        return float(link_gbps) * 1e9
    g = get_gpu(gpu)
    if g.link_bytes_per_s is None:
        raise MoeprofError(f"no NVLink bandwidth known for {g.display_name}; pass --link-gbps")
    return g.link_bytes_per_s


def comm_cost(model: MoeModel | str, gpu: GpuSpec | str, batch: int, tp: int = 1, ep: int = 1,
              link_gbps: float | None = None) -> CommCost:
    """Bytes one rank moves over NVLink for one layer call of `batch` tokens, and the link rate."""
    model = get_model(model)
    if tp < 1 or ep < 1:
        raise MoeprofError(f"tp and ep must be >= 1 (got tp={tp}, ep={ep})")
    if tp > 1 or ep > 1:
        link = link_bandwidth(gpu, link_gbps)
    else:  # nothing moves; the rate is informative only
        link = float(link_gbps) * 1e9 if link_gbps else (get_gpu(gpu).link_bytes_per_s or float("nan"))
    h, k = model.hidden_size, model.top_k
    tokens_rank = batch / ep
    allreduce = allreduce_bytes_per_rank(tokens_rank * h * BF16_BYTES, tp)
    a2a = alltoall_bytes_per_rank(k * tokens_rank * h * BF16_BYTES, ep)
    return CommCost(tp=tp, ep=ep, batch=batch, allreduce_bytes=allreduce, dispatch_bytes=a2a, combine_bytes=a2a,
                    link_bytes_per_s=link)


def add_comm_columns(table, model: MoeModel | str, gpu: GpuSpec | str, tp: int, ep: int,
                     link_gbps: float | None = None):
    """The roofline table with comm_bytes, t_comm_us and t_total_us (= t_roofline_us + t_comm_us)."""
    costs = {b: comm_cost(model, gpu, int(b), tp, ep, link_gbps) for b in table["batch"].unique()}
    out = table.copy()
    out["comm_bytes"] = [costs[b].bytes for b in out["batch"]]
    out["t_comm_us"] = [costs[b].t_comm_s * 1e6 for b in out["batch"]]
    out["link_bytes_per_s"] = [costs[b].link_bytes_per_s for b in out["batch"]]
    out["t_total_us"] = out["t_roofline_us"] + out["t_comm_us"]
    return out


def comm_lines(table, tp: int, ep: int) -> list[str]:
    """Plain words: what the link adds at the first and last batch, against each format's bound."""
    if not (tp > 1 or ep > 1) or "t_comm_us" not in table or table.empty:
        return []
    what = " and ".join(x for x in (f"tp={tp}: all-reduce of the bf16 output" if tp > 1 else "",
                                     f"ep={ep}: all-to-all dispatch + combine of the routed tokens" if ep > 1 else "")
                        if x)
    link = float(table["link_bytes_per_s"].iloc[0])
    lines = [f"Communication ({what}) over NVLink at {link / 1e9:.0f} GB/s per direction; it does not depend on "
             f"the weight format, so it narrows the gap between formats. A bandwidth bound only: each collective "
             f"also has a fixed latency (tens of µs on NVLink) that dominates small batches:"]
    for b in sorted({int(table["batch"].min()), int(table["batch"].max())}):
        rows = table[table["batch"] == b]
        r0 = rows.iloc[0]
        shares = ", ".join(f"{f.upper()} {t_c / t_tot:.0%}" for f, t_c, t_tot in
                           zip(rows["format"], rows["t_comm_us"], rows["t_total_us"]))
        lines.append(f"batch {b}: {r0['comm_bytes'] / 1e6:.2f} MB per rank, {r0['t_comm_us']:.1f} µs "
                     f"(share of the layer's bound: {shares}).")
    return lines
