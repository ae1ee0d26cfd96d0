"""Stand-in for sglang.srt.environ: the flags the fused-MoE path reads, from the environment."""

import os


class _EnvBool:
    def __init__(self, name: str, default: bool = False):
        self.name, self.default = name, default

    def get(self) -> bool:
        value = os.getenv(self.name)
        return self.default if value is None else value.lower() in ("true", "1")


class _Envs:
    SGLANG_USE_AITER = _EnvBool("SGLANG_USE_AITER")
    SGLANG_EXPERIMENTAL_LORA_OPTI = _EnvBool("SGLANG_EXPERIMENTAL_LORA_OPTI")
    SGLANG_MOE_PADDING = _EnvBool("SGLANG_MOE_PADDING")


envs = _Envs()
