"""Stand-in for sglang.kernels (the upstream one imports the kernel registry and every op)."""
