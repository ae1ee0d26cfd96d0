from __future__ import annotations

import pytest

from moeprof.errors import MoeprofError
from moeprof.models.routing import parse_skew


def test_routing_names():
    assert parse_skew("uniform") == 0.0
    assert parse_skew("zipf:1.2") == parse_skew("skew:1.2") == 1.2
    assert parse_skew("skew") == 1.0
    for bad in ("zipf:x", "zipf:-1", "hist:1,2", "gaussian"):
        with pytest.raises(MoeprofError, match="unknown routing"):
            parse_skew(bad)
