"""moeprof: profile MoE layers across weight formats and explain which is faster, where and why."""

__version__ = "0.1.0"
