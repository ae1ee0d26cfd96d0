"""Stand-in for sglang.srt.layers.dp_attention: no data-parallel attention, no symmetric buffers."""


def is_allocation_symmetric() -> bool:
    return False
