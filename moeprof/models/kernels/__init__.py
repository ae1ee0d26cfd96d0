"""moeprof's own Triton kernels for one MoE layer (grouped GEMMs over expert-sorted tokens).

Import this package only where torch and triton are installed (GPU machine, or CPU with
TRITON_INTERPRET=1 for tests).
"""
