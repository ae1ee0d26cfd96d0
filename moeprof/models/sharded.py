"""One MoE layer sharded over ranks as serving engines run it, with torch.distributed.

The full layer (weights quantized once, input, router) is built exactly as ``layer.build_layer``
builds the unsharded one; each rank then takes its slice of the *quantized* tensors, as an engine
slices a quantized checkpoint (scales travel with their rows or blocks):

  tp  every rank holds I/tp of each expert's intermediate channels (gate and up rows of W1, the
      matching columns of W2 with W2's per-row fp8 scales kept whole), sees all `batch` tokens and
      computes a partial output; the down bias is added by rank 0 only. Phase `allreduce` sums the
      bf16 partial outputs (NCCL all-reduce).
  ep  every rank holds experts [r*E/ep, (r+1)*E/ep) and its own contiguous share of the `batch`
      tokens (torch.tensor_split). Phase `dispatch` routes the rank's tokens and sends each
      (token, expert) row to the rank that holds the expert (all-to-all); the received rows run the
      same grouped GEMMs (one expert per row); phase `collect` sends the expert outputs back
      (all-to-all) and `combine` sums each token's top_k rows weighted by the router.

Split sizes of the all-to-alls are exchanged once when the layer is built: the routing of a
seeded input is fixed, so a call carries no host synchronization (as fixed-capacity dispatch in
engines). Every rank must call the layer together (collectives).
"""

from __future__ import annotations

from moeprof.errors import MoeprofError
from moeprof.models.layer import ExpertWeights, MoeLayer, build_layer
from moeprof.models.quant import FORMATS

SHARDABLE_FORMATS = ("bf16", "fp8", "fp8-block", "mxfp4", "mxfp4-w4a8")


def check_sharding(shape: dict, fmt: str, tp: int, ep: int) -> None:
    """One clear line for a split the sharded layer cannot make."""
    if tp < 1 or ep < 1:
        raise MoeprofError(f"tp and ep must be >= 1 (got tp={tp}, ep={ep})")
    if tp > 1 and ep > 1:
        raise MoeprofError("tp and ep together are not supported by the sharded layer; use --tp N or --ep N")
    if fmt not in FORMATS:
        raise MoeprofError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    i, e = shape["intermediate_size"], shape["num_experts"]
    if i % tp:
        raise MoeprofError(f"tp={tp} does not divide the intermediate size {i}")
    if e % ep:
        raise MoeprofError(f"ep={ep} does not divide the {e} experts")
    block = {"mxfp4": 32, "mxfp4-w4a8": 32, "fp8-block": 128}.get(fmt, 1)
    if tp > 1 and (i // tp) % block:
        raise MoeprofError(f"{fmt}: the tp={tp} shard of the intermediate size ({i // tp}) is not a multiple of "
                           f"the format's {block}-element block, so the quantized weights cannot be split by rank")


def _per_expert_bytes(fmt: str, h: int, i: int, s1_numel: int, s2_numel: int) -> int:
    bias = (2 * i + h) * 2
    if fmt == "bf16":
        return (3 * i * h) * 2 + bias
    if fmt == "fp8":
        return 3 * i * h + (2 * i + h) * 4 + bias
    if fmt == "fp8-block":
        return 3 * i * h + (s1_numel + s2_numel) * 4 + bias
    return 3 * i * h // 2 + 3 * i * h // 32 + bias


def shard_weights(full: ExpertWeights, tp: int, ep: int, rank: int) -> ExpertWeights:
    """Rank `rank`'s slice of the quantized weights of the whole layer (see module doc)."""
    import torch

    from moeprof.models import quant as q

    f = full.fmt
    if ep > 1:
        n = full.num_experts // ep
        sl = slice(rank * n, (rank + 1) * n)
        extra = {k: (v[sl].contiguous() if torch.is_tensor(v) else v) for k, v in full.extra.items()}
        pick = (lambda t: None if t is None else t[sl].contiguous())
        wt = ExpertWeights(f, n, full.hidden, full.inter, pick(full.w1), pick(full.w1_s), pick(full.b1),
                           pick(full.w2), pick(full.w2_s), pick(full.b2), full.per_expert_bytes, extra=extra)
        if "mx_scale_max" in extra:
            wt.extra["mx_scale_max"] = int(max(int(wt.w1_s.max()), int(wt.w2_s.max()))) if n else 0
        return wt
    if tp == 1:
        return full
    i, h = full.inter, full.hidden
    s = i // tp
    dev = full.w1.device
    rows = torch.cat([torch.arange(rank * s, (rank + 1) * s), torch.arange(i + rank * s, i + (rank + 1) * s)]).to(dev)
    cols = slice(rank * s, (rank + 1) * s)
    b1 = full.b1[:, rows].contiguous()
    b2 = full.b2.clone() if rank == 0 else torch.zeros_like(full.b2)  # the down bias is added once
    w1 = full.w1[:, rows].contiguous()
    extra: dict = {}
    if f == "bf16":
        w1_s, w2, w2_s = None, full.w2[:, :, cols].contiguous(), None
    elif f == "fp8":
        w1_s, w2, w2_s = full.w1_s[:, rows].contiguous(), full.w2[:, :, cols].contiguous(), full.w2_s.clone()
    elif f == "fp8-block":
        nbi, nb = -(-i // 128), s // 128
        brow = torch.cat([torch.arange(rank * nb, (rank + 1) * nb), torch.arange(nbi + rank * nb, nbi + (rank + 1) * nb)])
        w1_s = full.w1_s[:, brow.to(dev)].contiguous()
        w2 = full.w2[:, :, cols].contiguous()
        w2_s = full.w2_s[:, :, rank * nb:(rank + 1) * nb].contiguous()
    else:  # mxfp4 formats: packed K/2 bytes and K/32 scales per row, blocks never straddle a shard
        w1_s = full.w1_s[:, rows].contiguous()
        w2 = full.w2[:, :, rank * s // 2:(rank + 1) * s // 2].contiguous()
        w2_s = full.w2_s[:, :, rank * s // 32:(rank + 1) * s // 32].contiguous()
        extra = dict(mx_layout=full.extra.get("mx_layout", q.mx_layout(f)),
                     mx_scale_max=int(max(int(w1_s.max()), int(w2_s.max()))) if full.num_experts else 0)
        if "w1_tiles" in full.extra:
            extra.update(w1_s_tiles=q.tile_mx_scales(w1_s), w2_s_tiles=q.tile_mx_scales(w2_s),
                         w1_tiles=q.tile_mx_weights(w1), w2_tiles=q.tile_mx_weights(w2))
    s1n = w1_s[0].numel() if w1_s is not None and full.num_experts else 0
    s2n = w2_s[0].numel() if w2_s is not None and full.num_experts else 0
    return ExpertWeights(f, full.num_experts, h, s, w1, w1_s, b1, w2, w2_s, b2,
                         _per_expert_bytes(f, h, s, s1n, s2n), extra=extra)


class ShardedMoeLayer:
    """Rank `rank` of a tp- or ep-sharded layer; `layer(nvtx)` returns the rank's tokens' output
    (tp: all `batch` tokens; ep: its own share, `token_range`)."""

    def __init__(self, *, hidden_size, intermediate_size, num_experts, top_k, fmt, batch, tp=1, ep=1,
                 rank=0, group=None, routing="uniform", seed=0, device="cuda", kernel="triton",
                 cache_weights=True):
        import torch

        shape = dict(hidden_size=hidden_size, intermediate_size=intermediate_size, num_experts=num_experts,
                     top_k=top_k)
        check_sharding(shape, fmt, tp, ep)
        if kernel != "triton":
            raise MoeprofError(f"the sharded layer runs moeprof's Triton kernels only (got kernel={kernel!r})")
        self.fmt, self.batch, self.tp, self.ep, self.rank, self.group = fmt, batch, tp, ep, rank, group
        self.top_k, self.kernel_name = top_k, "moeprof-triton"
        # the whole layer, exactly as the unsharded capture builds it: same weights, input and router
        self.full = build_layer(**shape, fmt=fmt, batch=batch, routing=routing, seed=seed, device=device,
                                kernel=kernel, cache_weights=cache_weights)
        wt = shard_weights(self.full.wt, tp, ep, rank)
        self.wt = wt
        if ep == 1:
            self.token_range = (0, batch)
            self.inner = MoeLayer(wt=wt, x=self.full.x, router_w=self.full.router_w, router_b=self.full.router_b,
                                  top_k=top_k, num_experts_total=num_experts, fmt=fmt, batch=batch, kernel=kernel)
            self.experts_touched = self.inner.experts_touched
            self.weight_bytes_read = self.inner.weight_bytes_read
            return
        self._setup_ep(torch, num_experts // ep, hidden_size)

    # ---- expert parallel set-up: the rank's tokens, the split sizes, one dispatch to fill the buffers
    def _setup_ep(self, torch, e_local: int, h: int) -> None:
        import torch.distributed as dist

        from moeprof.models.kernels import route as mg_route

        self.e_local = e_local
        parts = torch.arange(self.batch).tensor_split(self.ep)
        mine = parts[self.rank]
        lo = int(mine[0]) if len(mine) else int(sum(len(p) for p in parts[:self.rank]))
        self.token_range = (lo, lo + len(mine))
        self.x = self.full.x[lo:lo + len(mine)].contiguous()
        self.n_local = len(mine)
        dev = self.x.device
        ids, _ = mg_route.route(self.x, self.full.router_w, self.full.router_b, self.top_k)
        dest = (ids.long() // e_local).reshape(-1)
        send = torch.bincount(dest, minlength=self.ep).to(torch.int64)
        recv = torch.empty_like(send)
        dist.all_to_all_single(recv, send, group=self.group)
        self.send_splits, self.recv_splits = send.tolist(), recv.tolist()
        r = int(sum(self.recv_splits))
        self.rows_received = r
        self.x_recv = torch.empty(r, h, dtype=torch.bfloat16, device=dev)
        self.ids_recv = torch.empty(r, 1, dtype=torch.int32, device=dev)
        self.y_back = torch.empty(self.n_local * self.top_k, h, dtype=torch.bfloat16, device=dev)
        self.out = torch.empty(self.n_local, h, dtype=torch.bfloat16, device=dev)
        self._dispatch(ids)
        self.inner = None
        if r:
            ones = torch.ones(r, 1, dtype=torch.float32, device=dev)
            self.inner = MoeLayer(wt=self.wt, x=self.x_recv, router_w=self.full.router_w,
                                  router_b=self.full.router_b, top_k=1, num_experts_total=self.full.num_experts_total,
                                  fmt=self.fmt, batch=r, kernel="triton", expert_offset=self.rank * e_local,
                                  routed=(self.ids_recv, ones))
        self.experts_touched = self.inner.experts_touched if self.inner else 0
        self.weight_bytes_read = self.inner.weight_bytes_read if self.inner else 0
        self._ones = self.inner.routed[1] if self.inner else None

    def _dispatch(self, ids):
        import torch
        import torch.distributed as dist

        dest = (ids.long() // self.e_local).reshape(-1)
        order = torch.argsort(dest, stable=True)
        send_x = self.x.index_select(0, torch.div(order, self.top_k, rounding_mode="floor"))
        send_ids = ids.reshape(-1).index_select(0, order).reshape(-1, 1).contiguous()
        dist.all_to_all_single(self.x_recv, send_x, self.recv_splits, self.send_splits, group=self.group)
        dist.all_to_all_single(self.ids_recv, send_ids, self.recv_splits, self.send_splits, group=self.group)
        return order

    # ---- one call
    def __call__(self, nvtx: bool = False):
        from moeprof.profiler.nvtx import layer_ranges

        with layer_ranges(nvtx, self.fmt, self.batch) as phase:
            if self.ep == 1:
                return self._forward_tp(phase)
            return self._forward_ep(phase)

    def _forward_tp(self, phase):
        import torch.distributed as dist

        out = self.inner._forward_triton(phase)
        with phase("allreduce"):
            dist.all_reduce(out, group=self.group)
        return out

    def _experts(self, phase):
        """The received rows through the grouped GEMMs (one expert per row); returns [rows, H] bf16."""
        inner = self.inner
        inner._expert_gemms(phase, self.x_recv, self.ids_recv, self._ones)
        if inner._split2:  # split-K wrote fp32 rows; one expert per row, so the "combine" is a cast
            with phase("combine"):
                inner._combine()
            return inner.out
        return inner.out_sorted

    def _forward_ep(self, phase):
        import torch
        import torch.distributed as dist

        from moeprof.models.kernels import route as mg_route

        with phase("route"):
            ids, tw = mg_route.route(self.x, self.full.router_w, self.full.router_b, self.top_k)
        with phase("dispatch"):
            order = self._dispatch(ids)
        y = self._experts(phase) if self.inner is not None else self.x_recv
        with phase("collect"):
            dist.all_to_all_single(self.y_back, y, self.send_splits, self.recv_splits, group=self.group)
        with phase("combine"):
            slots = torch.empty_like(self.y_back)
            slots[order] = self.y_back
            w = tw.reshape(self.n_local, self.top_k, 1)
            out = (slots.view(self.n_local, self.top_k, self.wt.hidden).float() * w).sum(1)
            self.out.copy_(out)
        return self.out

    def reference(self):
        """fp32 output of the whole (unsharded) layer for this rank's tokens."""
        lo, hi = self.token_range
        return self.full.reference()[lo:hi]


def build_sharded_layer(**kw) -> ShardedMoeLayer:
    return ShardedMoeLayer(**kw)
