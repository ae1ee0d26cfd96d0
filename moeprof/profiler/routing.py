"""Router distributions of the synthetic workload, parsed without torch (the CLI checks them early)."""

from __future__ import annotations

import math

from moeprof.errors import MoeprofError


def parse_skew(routing: str) -> float:
    """0 for "uniform", s for "skew:<s>" or "zipf:<s>" (s >= 0); a clear error otherwise."""
    text = routing.strip().lower()
    if text == "uniform":
        return 0.0
    kind, _, value = text.partition(":")
    if kind in ("skew", "zipf"):
        try:
            s = float(value) if value else 1.0
        except ValueError:
            s = -1.0
        if s >= 0 and math.isfinite(s):
            return s
    raise MoeprofError(f"unknown routing {routing!r} (uniform | skew:<s> | zipf:<s>, s >= 0)")
