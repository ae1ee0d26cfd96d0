"""moeprof: profile MoE layers across weight formats and explain which is faster, where and why."""

from moeprof.profiler.marks import mark

__version__ = "0.1.0"
__all__ = ["mark", "__version__"]
