"""What we expect: GPU specs, MoE shapes, weight formats, analytical cost, bound and crossover.

Pure Python (no torch, no triton). `moeprof.roofline.bound` adds pandas tables on top; it is not
imported here so that `import moeprof.roofline` stays light.
"""

from moeprof.roofline.cost import (
    LayerCost,
    MemoryPlan,
    Routing,
    expected_experts_touched,
    layer_cost,
    memory_plan,
    min_tp_to_fit,
    model_weight_bytes,
    parse_routing,
)
from moeprof.roofline.formats import DEFAULT_FORMATS, WeightFormat, format_names, get_format
from moeprof.roofline.gpus import GpuSpec, get_gpu, gpu_names, match_gpu
from moeprof.roofline.shapes import MoeModel, get_model, load_hf_config, model_from_hf_config, model_names

__all__ = [
    "DEFAULT_FORMATS", "GpuSpec", "LayerCost", "MemoryPlan", "MoeModel", "Routing", "WeightFormat",
    "expected_experts_touched", "format_names", "get_format", "get_gpu", "get_model", "gpu_names",
    "layer_cost", "load_hf_config", "match_gpu", "memory_plan", "min_tp_to_fit", "model_from_hf_config",
    "model_names", "model_weight_bytes", "parse_routing",
]
