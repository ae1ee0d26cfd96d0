"""Shared by the CUDA MXFP4 kernel tests (tests/test_mx_mma.py, tests/test_mx8_mma.py, tests/test_mx_wgmma.py)."""

from __future__ import annotations


def with_scale_bytes(layer, kernel: str, cfg, set_scales):
    """`layer` rebuilt after `set_scales(wt)` changed E8M0 bytes of its weights: the CUDA kernel's operand
    copies (kernel "mma", "wg" or "wg8", the latter with its table form) are made again from them (by the
    layer) and the scale summaries (mx_scale_max, mx_scale_spread, mx_wg8_lut_ok) follow."""
    from moeprof.models import quant as q
    from moeprof.models.layer import MoeLayer

    wt = layer.wt
    set_scales(wt)
    for name in ("w1", "s1", "w2", "s2"):
        for k in (kernel, "wg8l") if kernel == "wg8" else (kernel,):
            wt.extra.pop(f"{name}_{k}", None)
    wt.extra["mx_scale_max"] = int(max(wt.w1_s.max(), wt.w2_s.max()))
    wt.extra["mx_scale_spread"] = max(q.mx_scale_spread(wt.w1_s), q.mx_scale_spread(wt.w2_s))
    wt.extra["mx_wg8_lut_ok"] = q.wg8_lut_eligible(wt.w1_s) and q.wg8_lut_eligible(wt.w2_s)
    return MoeLayer(wt=wt, x=layer.x, router_w=layer.router_w, router_b=layer.router_b, top_k=layer.top_k,
                    num_experts_total=layer.num_experts_total, fmt=layer.fmt, batch=layer.batch,
                    kernel="triton", cfg=cfg)


def real_shape_layer(fmt: str, batch: int, seed: int):
    """gpt-oss-120b's MoE layer in `fmt` at `batch` tokens on the GPU, the default configuration, weights
    quantized afresh (not from the cache)."""
    from moeprof.models.layer import build_layer_for_model

    return build_layer_for_model("gpt-oss-120b", fmt, batch, seed=seed, device="cuda", cache_weights=False)


def reference_error(layer, *, finite_outputs: bool = False) -> float:
    """The relative error of the layer's call (outputs NaN-poisoned first) against its fp32 reference;
    finite_outputs: assert first that every output is finite (written, no overflow)."""
    import torch

    from moeprof.models.reference import poisoned_call, rel_err

    out = poisoned_call(layer)
    if finite_outputs:
        assert torch.isfinite(out.float()).all()
    return rel_err(out, layer.reference())
