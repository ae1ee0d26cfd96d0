"""Router distributions of the synthetic workload, parsed without torch (the CLI checks them early)."""

from __future__ import annotations

from moeprof.errors import MoeprofError


def parse_skew(routing: str) -> float:
    """0 for "uniform", s for "skew:<s>" or "zipf:<s>" (s >= 0; bare "skew"/"zipf": 1); a clear error otherwise.

    The cost model's grammar (models.cost.parse_routing), so analyze reads back any routing a capture
    accepted; histograms are the cost model's only: the workload draws its routing from logits.
    """
    from moeprof.roofline.cost import parse_routing

    r = None
    if routing.strip():
        try:
            r = parse_routing(routing)
        except MoeprofError:
            pass
    if r is None or r.kind == "histogram":
        raise MoeprofError(f"unknown routing {routing!r} (uniform | skew:<s> | zipf:<s>, s >= 0)")
    return r.zipf_s if r.kind == "zipf" else 0.0
