"""Stand-in for sglang.srt.layers.moe (the upstream one imports every runner backend)."""
