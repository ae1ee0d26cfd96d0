"""Stand-in for the MoE runner registry: the MoeRunnerConfig fields fused_moe reads (upstream defaults)."""

from dataclasses import dataclass
from typing import Optional


@dataclass
class MoeRunnerConfig:
    activation: str = "silu"
    is_gated: bool = True
    apply_router_weight_on_input: bool = False
    inplace: bool = True
    no_combine: bool = False
    no_combine_keep_router_weight: bool = False
    routed_scaling_factor: Optional[float] = None
    gemm1_alpha: Optional[float] = None
    gemm1_clamp_limit: Optional[float] = None
    swiglu_limit: Optional[float] = None
    gate_up_interleaved: bool = True
