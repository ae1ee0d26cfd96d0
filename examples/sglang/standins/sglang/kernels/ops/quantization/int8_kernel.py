"""Stand-in for sglang.kernels.ops.quantization.int8_kernel: int8 paths are not used by the example."""


def _not_on_this_path(*_a, **_k):
    raise NotImplementedError("stand-in: int8 quantization is not used by the example")


per_token_group_quant_int8 = per_token_quant_int8 = sglang_per_token_group_quant_int8 = _not_on_this_path
