"""What runs: the GPT-OSS MoE layer per weight format, its quantizers, Triton kernels, fp32 reference
and torch peers.

Everything here needs torch (and triton for the kernels), so nothing is imported eagerly: the
analysis and the roofline model never import this package.
"""
