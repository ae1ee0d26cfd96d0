"""Analytical cost of one MoE layer call: FLOPs, HBM bytes, roofline lower bound; weight memory.

Kernel model (what the byte counts assume), for B tokens on one rank:
  gemm1  grouped GEMM over touched experts: x[tokens, H] @ gate_up[2I, H]^T, SwiGLU fused in the
         epilogue, which writes the intermediate [pairs, I] in the MMA input type of gemm2
         (bf16, or fp8 + scales). Token rows are read once (L2 serves the k re-reads).
  gemm2  grouped GEMM: intermediate[pairs, I] @ down[H, I]^T, the weighted top-k sum fused in the
         epilogue, writing y[tokens, H] in bf16.
  shared experts (DeepSeek, Llama-4) are a dense MLP over all of the rank's tokens, same format.
Each weight byte of a touched expert (scales and bf16 biases included) is read once. Routing,
sorting, activation quantization and communication are not counted: they are O(B*H) and are
measured separately by `moeprof capture`. This is the *ideal* bound (`bytes`, `t_roofline_s`).

As built (`bytes_as_built`, `t_as_built_s`): the traffic of the kernels moeprof ships
(models/layer.py, models/kernels/moe_gemm.py), where the passes are separate launches:
  quant    formats with 8-bit (or narrower) activations quantize in their own pass: x read in bf16,
           written in the MMA input type with scales; the same again for the intermediate.
  gemm1    reads x in its MMA input type, writes the SwiGLU intermediate [pairs, I] in BF16
           (whatever the format), which gemm2 (or its quant pass) reads back.
  gemm2    writes one BF16 row per (token, expert) pair [pairs, H], not per token.
  combine  reads those [pairs, H] rows and writes y [tokens, H] in BF16.
  dequantize  at prefill mxfp4-w4a8 dequantizes every local expert's weights once per call (above 512
           rows per expert, to e4m3 with a row scale) and runs the fp8 GEMMs: packed weights read,
           dequantized weights written, and the touched experts' dequantized weights read by the GEMMs
           instead of the packed ones (`gemm1_weight_bytes_as_built`, `gemm2_weight_bytes_as_built`;
           AS_BUILT_DEQUANT). mxfp4 unpacks in the MMA's registers (kernels/mx_wgmma.cu); where its
           fallback ran instead (dequantize to bf16: no sm_90a build, or K % 64 != 0), a capture shows the
           dequantization kernel and the analysis counts the pass (`gemm1_weight_bytes_dequant`,
           DEQUANT_PASS).
Not counted there: the fp32 split-K partial sums of the MXFP4 decode configurations (zeroed,
accumulated in L2 and copied out: a few % of the weight bytes at m <= 16 rows per expert), and
routing/sorting. Shared experts are counted as in the ideal model (the shipped kernels have none).

FLOPs count only useful multiply-adds: gemm1 = 2*B*k*H*2I (gated), gemm2 = 2*B*k*I*H.
Roofline lower bound = max(FLOPs / peak of the format's MMA path, bytes / HBM bandwidth).

Parallelism (one rank's share; `tp` and `ep` are independent factors):
  tp  splits every expert's intermediate dim: each rank holds [2I/tp, H] and [H, I/tp] of every
      expert it holds and sees all of its tokens, so FLOPs and weight bytes scale by 1/tp.
  ep  splits the routed experts: a rank holds E/ep of them. We report the *average* rank:
      B*k/ep token-expert pairs, experts_touched/ep touched experts, and the tokens that have at
      least one of their k experts on the rank: B * (1 - C(E - E/ep, k) / C(E, k)) (uniform
      routing without replacement). Under skewed routing the busiest rank is slower than this.
      Shared experts are replicated on every EP rank and each runs them on its B/ep tokens.

Routing (how many distinct experts B tokens touch, which sets how many weight bytes are read):
  'uniform'     each token picks k of E experts uniformly: E * (1 - (1 - k/E)^B).
  'zipf:S'      expert i (1-based) has popularity p_i ∝ 1/i^S; a token picks expert i with
                probability q_i = min(1, c*p_i), c chosen so that sum_i q_i = k (plain k*p_i capped
                at 1 would lose mass: a token always picks exactly k experts); tokens are
                independent: touched = sum_i 1 - (1 - q_i)^B. S = 0 is uniform; S ~ 1 is a heavily
                skewed router. EP token shares use the uniform formula below.
  histogram     explicit token counts per expert (from a real router; sum must be B*k):
                touched = number of non-zero bins.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

from moeprof.errors import MoeprofError
from moeprof.roofline.formats import BF16_BYTES, WeightFormat, get_format
from moeprof.roofline.gpus import GpuSpec, get_gpu
from moeprof.roofline.shapes import MoeModel, get_model

DEFAULT_HBM_RESERVE_FRACTION = 0.10  # CUDA context, activations, workspaces, fragmentation
# As built: the formats whose shipped prefill dequantizes the weights per call -> (rows per local expert
# above which it does, bytes per dequantized weight element, bytes per dequantized row besides); the
# thresholds mirror models/kernels/moe_gemm.default_config on sm_90 with the CUDA kernels built (a test
# keeps them equal)
AS_BUILT_DEQUANT = {"mxfp4-w4a8": (512.0, 1, 4)}
# The prefill dequantization pass of each MX format when it runs -> (bytes per dequantized weight element,
# bytes per dequantized row besides): mxfp4's fallback to bf16, mxfp4-w4a8's e4m3 with a row scale
DEQUANT_PASS = {"mxfp4": (BF16_BYTES, 0), "mxfp4-w4a8": (1, 4)}
# What "% of roofline" is measured against: the ideal bound (t_roofline_s), so that the number rewards
# fusing the passes the shipped kernels keep separate; the as-built bound is reported beside it.
ROOFLINE_BASIS = "ideal"
ROOFLINE_BASIS_NOTE = ("% of roofline is measured against the ideal bound (SwiGLU fused into gemm1 writing the "
                       "intermediate in gemm2's input type, combine fused into gemm2, no separate activation-quant "
                       "pass); '% of as-built' uses the traffic of the kernels as built (BF16 intermediate, "
                       "separate activation-quant and combine passes)")


# --------------------------------------------------------------------------------------------
# Routing

@dataclass(frozen=True)
class Routing:
    kind: str                          # "uniform" | "zipf" | "histogram"
    zipf_s: float = 0.0
    histogram: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        if self.kind == "zipf":
            return f"zipf:{self.zipf_s:g}"
        if self.kind == "histogram":
            return f"histogram[{len(self.histogram)}]"
        return "uniform"


def parse_routing(spec: str | float | Sequence[int] | Routing) -> Routing:
    """'uniform', 'zipf:1.2' (or a float S), 'hist:3,0,5,...' (or a sequence of per-expert counts)."""
    if isinstance(spec, Routing):
        return spec
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return _zipf(float(spec), str(spec))
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in ("uniform", ""):
            return Routing("uniform")
        kind, _, value = text.partition(":")
        if kind in ("zipf", "skew"):  # bare "zipf" / "skew": S = 1
            try:
                return _zipf(float(value) if value else 1.0, spec)
            except ValueError:
                raise MoeprofError(f"bad routing {spec!r}: zipf exponent must be a number, e.g. zipf:1.2") from None
        if text.startswith(("hist:", "histogram:")):
            try:
                counts = [int(x) for x in text.split(":", 1)[1].split(",") if x.strip()]
            except ValueError:
                raise MoeprofError(f"bad routing {spec!r}: histogram must be comma-separated integers") from None
            return _histogram(counts, spec)
        raise MoeprofError(f"bad routing {spec!r}; valid: uniform, zipf:S (S >= 0), hist:N1,N2,...")
    return _histogram(list(spec), "histogram")


# Largest zipf exponent accepted: at S = 64 the second expert already gets 2^-64 of the first's
# traffic (a router that always picks the same k experts); larger S only overflows i**S.
MAX_ZIPF_S = 64.0


def _zipf(s: float, spec: str) -> Routing:
    if not math.isfinite(s) or s < 0 or s > MAX_ZIPF_S:
        raise MoeprofError(f"bad routing {spec!r}: zipf exponent must be in [0, {MAX_ZIPF_S:g}]")
    return Routing("uniform") if s == 0 else Routing("zipf", zipf_s=s)


def _histogram(counts: list, spec: str) -> Routing:
    if not counts or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts):
        raise MoeprofError(f"bad routing {spec!r}: histogram needs non-negative integer counts")
    return Routing("histogram", histogram=tuple(counts))


def expected_experts_touched(num_experts: int, top_k: int, batch: int, routing: Routing | str = "uniform") -> float:
    """Expected number of distinct experts that receive at least one of `batch` tokens."""
    r = parse_routing(routing)
    e, k = num_experts, top_k
    if not 1 <= k <= e:
        raise MoeprofError(f"top_k {k} must be between 1 and the number of experts {e}")
    if r.kind == "histogram":
        if len(r.histogram) != e:
            raise MoeprofError(f"routing histogram has {len(r.histogram)} bins, the model has {e} experts")
        if sum(r.histogram) != batch * k:
            raise MoeprofError(
                f"routing histogram sums to {sum(r.histogram)}, expected batch*top_k = {batch}*{k} = {batch * k}"
            )
        return float(sum(1 for c in r.histogram if c > 0))
    if r.kind == "zipf":
        q = selection_probabilities([1.0 / (i ** r.zipf_s) for i in range(1, e + 1)], k)
        return sum(1.0 - (1.0 - qi) ** batch for qi in q)
    return e * (1.0 - (1.0 - k / e) ** batch)


def selection_probabilities(popularity: Sequence[float], top_k: int) -> list[float]:
    """Per-expert probability that one token selects it: q_i = min(1, c*p_i) with sum q_i = k."""
    capped: set[int] = set()
    while True:
        free = [i for i in range(len(popularity)) if i not in capped]
        if not free:  # top_k >= experts: every expert is picked by every token
            return [1.0] * len(popularity)
        c = (top_k - len(capped)) / sum(popularity[i] for i in free)
        newly = {i for i in free if c * popularity[i] >= 1.0}
        if not newly:
            return [1.0 if i in capped else c * p for i, p in enumerate(popularity)]
        capped |= newly


def tokens_on_rank(batch: int, num_experts: int, top_k: int, ep: int) -> float:
    """Expected tokens with >= 1 of their k experts among one EP rank's E/ep experts."""
    if ep == 1:
        return float(batch)
    e, k, local = num_experts, top_k, num_experts // ep
    p_none = 1.0
    for j in range(k):  # C(E - local, k) / C(E, k) as a product
        p_none *= max(0.0, (e - local - j) / (e - j))
    return batch * (1.0 - p_none)


# --------------------------------------------------------------------------------------------
# Validation

def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MoeprofError(f"{what} must be a positive integer, got {value!r}")
    return value


def check_parallelism(model: MoeModel, tp: int, ep: int) -> None:
    _positive_int(tp, "tp")
    _positive_int(ep, "ep")
    if model.expert_intermediate_size % tp:
        raise MoeprofError(
            f"tp={tp} does not divide {model.name}'s expert intermediate size {model.expert_intermediate_size}"
        )
    if model.num_shared_experts and model.shared_intermediate_size % tp:
        raise MoeprofError(
            f"tp={tp} does not divide {model.name}'s shared-expert intermediate size {model.shared_intermediate_size}"
        )
    if model.num_experts % ep:
        raise MoeprofError(f"ep={ep} does not divide {model.name}'s {model.num_experts} routed experts")


# --------------------------------------------------------------------------------------------
# Layer cost

@dataclass(frozen=True)
class LayerCost:
    """One rank's cost of one MoE layer call. Bytes are HBM bytes; times are lower bounds."""

    model: str
    gpu: str
    format: str
    batch: int
    tp: int
    ep: int
    routing: str
    mma_path: str                      # bf16 | fp8 | fp4
    experts_touched: float             # routed experts touched on this rank (average rank)
    experts_touched_total: float       # routed experts touched over all ranks
    token_expert_pairs: float          # routed (token, expert) pairs on this rank
    tokens: float                      # token rows this rank reads for the routed experts
    gemm1_flops: float
    gemm2_flops: float
    shared_flops: float
    gemm1_weight_bytes: float          # gate_up of touched experts, scales and biases included
    gemm2_weight_bytes: float          # down of touched experts
    shared_weight_bytes: float
    gemm1_act_bytes: float             # x read + intermediate written
    gemm2_act_bytes: float             # intermediate read + y written
    shared_act_bytes: float
    peak_flops_per_s: float            # dense peak of the MMA path
    hbm_bytes_per_s: float
    # As built (see the module docstring): activation traffic of the shipped kernels' separate passes.
    quant_bytes_as_built: float = 0.0          # activation-quant passes (x and the intermediate)
    gemm1_act_bytes_as_built: float = 0.0      # x read in the MMA input type + BF16 intermediate written
    gemm2_act_bytes_as_built: float = 0.0      # intermediate read + BF16 [pairs, H] written
    combine_bytes_as_built: float = 0.0        # [pairs, H] read + y [tokens, H] written
    # weight traffic as built: the weights read once, or with the prefill dequantization pass of the MX
    # formats (AS_BUILT_DEQUANT) the packed read, the wide write and the GEMMs' wide read
    gemm1_weight_bytes_as_built: float = 0.0
    gemm2_weight_bytes_as_built: float = 0.0
    # the same if the prefill dequantization pass runs (DEQUANT_PASS; the MX formats, any batch): what a
    # capture that shows the pass is measured against
    gemm1_weight_bytes_dequant: float = 0.0
    gemm2_weight_bytes_dequant: float = 0.0

    # --- totals ---------------------------------------------------------------------------
    @property
    def flops(self) -> float:
        return self.gemm1_flops + self.gemm2_flops + self.shared_flops

    @property
    def weight_bytes(self) -> float:
        return self.gemm1_weight_bytes + self.gemm2_weight_bytes + self.shared_weight_bytes

    @property
    def act_bytes(self) -> float:
        return self.gemm1_act_bytes + self.gemm2_act_bytes + self.shared_act_bytes

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.act_bytes

    @property
    def gemm1_bytes(self) -> float:
        return self.gemm1_weight_bytes + self.gemm1_act_bytes

    @property
    def gemm2_bytes(self) -> float:
        return self.gemm2_weight_bytes + self.gemm2_act_bytes

    @property
    def shared_bytes(self) -> float:
        return self.shared_weight_bytes + self.shared_act_bytes

    @property
    def gemm1_bytes_as_built(self) -> float:
        return self.gemm1_weight_bytes_as_built + self.gemm1_act_bytes_as_built

    @property
    def gemm2_bytes_as_built(self) -> float:
        return self.gemm2_weight_bytes_as_built + self.gemm2_act_bytes_as_built

    @property
    def bytes_as_built(self) -> float:
        """HBM bytes of the layer call as the shipped kernels move them (>= bytes)."""
        return (self.gemm1_bytes_as_built + self.gemm2_bytes_as_built + self.quant_bytes_as_built
                + self.combine_bytes_as_built + self.shared_bytes)

    @property
    def intensity_flop_per_byte(self) -> float:
        return self.flops / self.bytes

    # --- times ----------------------------------------------------------------------------
    @property
    def t_compute_s(self) -> float:
        return self.flops / self.peak_flops_per_s

    @property
    def t_memory_s(self) -> float:
        return self.bytes / self.hbm_bytes_per_s

    @property
    def t_roofline_s(self) -> float:
        return max(self.t_compute_s, self.t_memory_s)

    @property
    def t_memory_as_built_s(self) -> float:
        return self.bytes_as_built / self.hbm_bytes_per_s

    @property
    def t_as_built_s(self) -> float:
        """Lower bound of the kernels as built: max(compute, as-built bytes / HBM bandwidth)."""
        return max(self.t_compute_s, self.t_memory_as_built_s)

    @property
    def bound(self) -> str:
        return "compute" if self.t_compute_s > self.t_memory_s else "memory"

    def gemm_t_roofline_s(self, gemm: str) -> float:
        """Per-kernel lower bound for 'gemm1', 'gemm2' or 'shared' (their sum >= t_roofline_s)."""
        flops = getattr(self, f"{gemm}_flops")
        nbytes = getattr(self, f"{gemm}_bytes")
        return max(flops / self.peak_flops_per_s, nbytes / self.hbm_bytes_per_s)

    def as_record(self) -> dict[str, object]:
        """Flat dict: every field plus totals and times in µs (the roofline table's row)."""
        rec: dict[str, object] = asdict(self)
        rec.update(
            flops=self.flops,
            bytes=self.bytes,
            weight_bytes=self.weight_bytes,
            act_bytes=self.act_bytes,
            intensity_flop_per_byte=self.intensity_flop_per_byte,
            t_compute_us=self.t_compute_s * 1e6,
            t_memory_us=self.t_memory_s * 1e6,
            t_roofline_us=self.t_roofline_s * 1e6,
            bound=self.bound,
            gemm1_t_roofline_us=self.gemm_t_roofline_s("gemm1") * 1e6,
            gemm2_t_roofline_us=self.gemm_t_roofline_s("gemm2") * 1e6,
            shared_t_roofline_us=self.gemm_t_roofline_s("shared") * 1e6,
            bytes_as_built=self.bytes_as_built,
            t_as_built_us=self.t_as_built_s * 1e6,
        )
        return rec


def _expert_weight_bytes(model: MoeModel, fmt: WeightFormat, intermediate: int) -> tuple[float, float]:
    """(gate_up, down) bytes of one expert holding `intermediate` channels; bf16 biases included."""
    n1, k1 = model.gate_up_shape(intermediate)
    n2, k2 = model.down_shape(intermediate)
    b1 = n1 * BF16_BYTES if model.expert_bias else 0
    b2 = n2 * BF16_BYTES if model.expert_bias else 0
    return fmt.weight_bytes(n1, k1) + b1, fmt.weight_bytes(n2, k2) + b2


def layer_cost(
    model: MoeModel | str,
    fmt: WeightFormat | str,
    gpu: GpuSpec | str,
    batch: int,
    tp: int = 1,
    ep: int = 1,
    routing: Routing | str | float | Sequence[int] = "uniform",
) -> LayerCost:
    """Roofline cost of one MoE layer call of `batch` tokens, one (average) rank's share."""
    model, fmt, gpu = get_model(model), get_format(fmt), get_gpu(gpu)
    _positive_int(batch, "batch")
    check_parallelism(model, tp, ep)
    r = parse_routing(routing)

    h, k = model.hidden_size, model.top_k
    i_rank = model.expert_intermediate_size // tp
    n1 = model.gate_up_shape(i_rank)[0]

    touched_total = expected_experts_touched(model.num_experts, k, batch, r)
    touched = touched_total / ep
    pairs = batch * k / ep
    tokens = tokens_on_rank(batch, model.num_experts, k, ep)
    w1, w2 = _expert_weight_bytes(model, fmt, i_rank)

    gemm1_flops = 2.0 * pairs * h * n1
    gemm2_flops = 2.0 * pairs * i_rank * h
    intermediate = fmt.act_bytes(pairs, i_rank)
    gemm1_act = fmt.act_bytes(tokens, h) + intermediate
    gemm2_act = intermediate + tokens * h * BF16_BYTES

    # As built: separate quant passes (8-bit-or-narrower activations), BF16 intermediate and
    # per-pair output rows, separate combine.
    quantized = fmt.act_bits < 16
    x_in = fmt.act_bytes(tokens, h) if quantized else tokens * h * BF16_BYTES
    inter_bf16 = pairs * i_rank * BF16_BYTES
    inter_in = fmt.act_bytes(pairs, i_rank) if quantized else inter_bf16
    pair_rows = pairs * h * BF16_BYTES
    quant_as_built = (tokens * h * BF16_BYTES + x_in + inter_bf16 + inter_in) if quantized else 0.0
    gemm1_as_built = x_in + inter_bf16
    gemm2_as_built = inter_in + pair_rows
    combine_as_built = pair_rows + tokens * h * BF16_BYTES
    # As built, MX prefill: every local expert dequantized per call (packed read, wide written), then the
    # GEMMs read the touched experts' wide weights
    w1_built, w2_built = touched * w1, touched * w2
    w1_deq, w2_deq = w1_built, w2_built
    local_experts = model.num_experts / ep
    if fmt.name in DEQUANT_PASS:
        per_elem, per_row = DEQUANT_PASS[fmt.name]
        n2, k2 = model.down_shape(i_rank)
        wide1 = n1 * h * per_elem + n1 * per_row
        wide2 = n2 * k2 * per_elem + n2 * per_row
        w1_deq = local_experts * (w1 + wide1) + touched * wide1
        w2_deq = local_experts * (w2 + wide2) + touched * wide2
    deq = AS_BUILT_DEQUANT.get(fmt.name)
    if deq is not None and max(1.0, pairs / local_experts) > deq[0]:
        w1_built, w2_built = w1_deq, w2_deq

    shared_flops = shared_w = shared_act = 0.0
    if model.num_shared_experts:
        ns, is_rank = model.num_shared_experts, model.shared_intermediate_size // tp
        s_tokens = batch / ep
        s1, s2 = _expert_weight_bytes(model, fmt, is_rank)
        shared_flops = ns * 2.0 * s_tokens * h * (model.gate_up_shape(is_rank)[0] + is_rank)
        shared_w = ns * (s1 + s2)
        shared_act = (
            fmt.act_bytes(s_tokens, h) + 2 * ns * fmt.act_bytes(s_tokens, is_rank) + s_tokens * h * BF16_BYTES
        )

    path = fmt.mma_path(gpu)
    return LayerCost(
        model=model.name,
        gpu=gpu.name,
        format=fmt.name,
        batch=batch,
        tp=tp,
        ep=ep,
        routing=r.label,
        mma_path=path,
        experts_touched=touched,
        experts_touched_total=touched_total,
        token_expert_pairs=pairs,
        tokens=tokens,
        gemm1_flops=gemm1_flops,
        gemm2_flops=gemm2_flops,
        shared_flops=shared_flops,
        gemm1_weight_bytes=touched * w1,
        gemm2_weight_bytes=touched * w2,
        shared_weight_bytes=shared_w,
        gemm1_act_bytes=gemm1_act,
        gemm2_act_bytes=gemm2_act,
        shared_act_bytes=shared_act,
        peak_flops_per_s=gpu.tensor_flops_per_s(path),
        hbm_bytes_per_s=gpu.hbm_bandwidth_bytes_per_s,
        quant_bytes_as_built=quant_as_built,
        gemm1_act_bytes_as_built=gemm1_as_built,
        gemm2_act_bytes_as_built=gemm2_as_built,
        combine_bytes_as_built=combine_as_built,
        gemm1_weight_bytes_as_built=w1_built,
        gemm2_weight_bytes_as_built=w2_built,
        gemm1_weight_bytes_dequant=w1_deq,
        gemm2_weight_bytes_dequant=w2_deq,
    )


# --------------------------------------------------------------------------------------------
# Whole-model weight memory

@dataclass(frozen=True)
class MemoryPlan:
    """Weights per GPU for a deployment over tp*ep GPUs, and the HBM left for the KV cache.

    Experts (routed and shared) are stored in the format; everything else in BF16. Routed experts
    are split over ep and their intermediate dim over tp; shared experts and non-expert weights
    are split over tp only (replicated across ep). `reserve_fraction` of HBM is held back for the
    runtime (CUDA context, activations, workspaces, fragmentation).
    """

    model: str
    gpu: str
    format: str
    tp: int
    ep: int
    hbm_bytes: int
    reserve_fraction: float
    expert_weight_bytes_per_gpu: float
    non_expert_weight_bytes_per_gpu: float
    model_weight_bytes: float          # whole model, one copy (tp = ep = 1)

    @property
    def num_gpus(self) -> int:
        return self.tp * self.ep

    @property
    def weight_bytes_per_gpu(self) -> float:
        return self.expert_weight_bytes_per_gpu + self.non_expert_weight_bytes_per_gpu

    @property
    def reserved_bytes(self) -> float:
        return self.hbm_bytes * self.reserve_fraction

    @property
    def free_bytes_per_gpu(self) -> float:
        """HBM left for the KV cache; negative when the weights do not fit."""
        return self.hbm_bytes - self.reserved_bytes - self.weight_bytes_per_gpu

    @property
    def fits(self) -> bool:
        return self.free_bytes_per_gpu > 0

    def as_record(self) -> dict[str, object]:
        rec: dict[str, object] = asdict(self)
        rec.update(
            num_gpus=self.num_gpus,
            weight_bytes_per_gpu=self.weight_bytes_per_gpu,
            reserved_bytes=self.reserved_bytes,
            free_bytes_per_gpu=self.free_bytes_per_gpu,
            fits=self.fits,
        )
        return rec


def _expert_bytes_per_gpu(model: MoeModel, fmt: WeightFormat, tp: int, ep: int) -> float:
    w1, w2 = _expert_weight_bytes(model, fmt, model.expert_intermediate_size // tp)
    per_layer = (model.num_experts // ep) * (w1 + w2)
    if model.num_shared_experts:
        s1, s2 = _expert_weight_bytes(model, fmt, model.shared_intermediate_size // tp)
        per_layer += model.num_shared_experts * (s1 + s2)
    return model.num_moe_layers * per_layer


def model_weight_bytes(model: MoeModel | str, fmt: WeightFormat | str) -> float:
    """Whole-model weight bytes: experts in the format (with scales), the rest in BF16."""
    model, fmt = get_model(model), get_format(fmt)
    return _expert_bytes_per_gpu(model, fmt, 1, 1) + model.non_expert_params * BF16_BYTES


def memory_plan(
    model: MoeModel | str,
    fmt: WeightFormat | str,
    gpu: GpuSpec | str,
    tp: int = 1,
    ep: int = 1,
    reserve_fraction: float = DEFAULT_HBM_RESERVE_FRACTION,
) -> MemoryPlan:
    model, fmt, gpu = get_model(model), get_format(fmt), get_gpu(gpu)
    check_parallelism(model, tp, ep)
    if not 0 <= reserve_fraction < 1:
        raise MoeprofError(f"reserve fraction must be in [0, 1), got {reserve_fraction!r}")
    return MemoryPlan(
        model=model.name,
        gpu=gpu.name,
        format=fmt.name,
        tp=tp,
        ep=ep,
        hbm_bytes=gpu.hbm_bytes,
        reserve_fraction=reserve_fraction,
        expert_weight_bytes_per_gpu=_expert_bytes_per_gpu(model, fmt, tp, ep),
        non_expert_weight_bytes_per_gpu=model.non_expert_params * BF16_BYTES / tp,
        model_weight_bytes=model_weight_bytes(model, fmt),
    )


def min_tp_to_fit(
    model: MoeModel | str,
    fmt: WeightFormat | str,
    gpu: GpuSpec | str,
    max_tp: int = 64,
    reserve_fraction: float = DEFAULT_HBM_RESERVE_FRACTION,
) -> int | None:
    """Smallest power-of-two tp (dividing the intermediate size) whose weights fit; None if none <= max_tp."""
    model = get_model(model)
    tp = 1
    while tp <= max_tp:
        try:
            if memory_plan(model, fmt, gpu, tp=tp, reserve_fraction=reserve_fraction).fits:
                return tp
        except MoeprofError:
            return None  # tp no longer divides the intermediate size
        tp *= 2
    return None
