"""Roofline table, verdicts, crossovers and the plain-words summary for GPT-OSS-120B on H200."""

from __future__ import annotations

import pytest

from moeprof.errors import MoeprofError
from moeprof.roofline.bound import (
    DEFAULT_BATCHES,
    all_crossovers,
    crossovers,
    first_win,
    memory_table,
    parse_batches,
    roofline_table,
    verdicts,
)

REQUIRED = ["model", "gpu", "format", "batch", "experts_touched", "flops", "bytes", "t_compute_us",
            "t_memory_us", "t_roofline_us", "bound", "intensity_flop_per_byte", "weight_bytes", "mma_path"]


@pytest.fixture(scope="module")
def table():
    return roofline_table("gpt-oss-120b", "h200", ["bf16", "fp8", "mxfp4"], DEFAULT_BATCHES)


def test_table_shape(table):
    assert len(table) == 3 * 15 and set(REQUIRED) <= set(table.columns)
    assert list(DEFAULT_BATCHES) == [2**i for i in range(15)]
    assert set(table["bound"]) == {"memory", "compute"}


def test_verdict_batch1(table):
    v = verdicts(table).set_index("batch")
    # Both memory-bound at batch 1: speedup = byte ratio fp8 / mxfp4 = 99,771,876 / 53,003,520 = 1.8824
    assert v.loc[1, "winner"] == "mxfp4" and v.loc[1, "runner_up"] == "fp8"
    assert v.loc[1, "speedup"] == pytest.approx(99_771_876 / 53_003_520)
    assert v.loc[16384, "winner"] == "fp8"


def test_fp8_mxfp4_crossover(table):
    # 2048 tokens: mxfp4 compute-bound, 2048 * 199,065,600 FLOP / 989.4e12 = 412.1 us;
    #   fp8 memory-bound: 128 experts * 24,935,040 B + 2048 tokens * 31,716 B = 3,256,639,488 B / 4.8e12 = 678.5 us
    # 4096 tokens: mxfp4 824.1 us vs fp8 (3,191,685,120 + 4096 * 31,716) / 4.8e12 = 692.0 us
    # (31,716 B/token for fp8 = x 2,884 + intermediate 4 * 2,884 written and read + y 5,760)
    cs = crossovers(table, "fp8", "mxfp4")
    assert len(cs) == 1
    c = cs[0]
    assert (c.batch, c.prev_batch, c.winner, c.loser) == (4096, 2048, "fp8", "mxfp4")
    assert first_win(table, "fp8", "mxfp4") == 4096 and first_win(table, "mxfp4", "fp8") == 1


def test_exact_crossover_by_bisection(table):
    # Equal times: B * 199,065,600 / 989.4e12 = (3,191,685,120 + 31,716 B) / 4.8e12
    #   -> B = 3,191,685,120 / (4.8e12 * 199,065,600 / 989.4e12 - 31,716) = 3417.06 -> first integer 3418
    cross = all_crossovers(table, "gpt-oss-120b", "h200")
    exact = [c.batch_exact for c in cross if {c.a, c.b} == {"fp8", "mxfp4"}]
    b_star = 3_191_685_120 / (4.8e12 * 199_065_600 / 989.4e12 - 31_716)
    assert exact == [int(b_star) + 1] == [3418]


def test_ties_do_not_count_as_crossovers(table):
    # bf16 and mxfp4 both end compute-bound on the same BF16 MMA with the same FLOPs: a tie, not a flip.
    v = verdicts(table).set_index("batch")
    assert v.loc[16384, "runner_up"] in ("bf16", "mxfp4")
    assert crossovers(table, "bf16", "mxfp4") == []
    assert first_win(table, "bf16", "mxfp4") is None


def test_summary_words(table):
    from moeprof.roofline.report import TIE_TOLERANCE, leaders
    from moeprof.roofline.sentences import summary_lines

    text = "\n".join(summary_lines(table, leaders(table), all_crossovers(table, "gpt-oss-120b", "h200"),
                                   TIE_TOLERANCE))
    assert "MXFP4 moves 0.27x the bytes of BF16, 0.53x the bytes of FP8" in text
    assert "MXFP4 is fastest at batch 1–2048" in text
    assert "FP8 is fastest at batch 4096–16384" in text
    assert "Crossover: FP8/MXFP4 at batch 3418 (bisection between 2048 and 4096): MXFP4 faster below, FP8 from there." in text
    assert "runs its MMA in BF16 at 989 TFLOP/s, half of FP8's 1979 TFLOP/s" in text
    assert "[" not in text  # plain words, nothing rich could read as markup


def test_memory_lines():
    mem = memory_table("gpt-oss-120b", "h200", ["bf16", "fp8", "mxfp4"])
    assert list(mem["fits"]) == [False, True, True]
    from moeprof.roofline.sentences import memory_lines

    text = "\n".join(memory_lines(mem, "h200"))
    assert "BF16: model 233.7 GB" in text and "fits from tp=2" in text
    assert "MXFP4: model 65.2 GB" in text and "for the KV cache" in text


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("1,2,4", [1, 2, 4]),
        ("1..16384", [2**i for i in range(15)]),
        ("3..20", [3, 6, 12]),
        ("64, 1..4", [1, 2, 4, 64]),
        ("7", [7]),
    ],
)
def test_parse_batches(spec, expected):
    assert parse_batches(spec) == expected


@pytest.mark.parametrize("spec", ["0", "-4", "abc", "8..2", "0..4", "", "1,,x"])
def test_parse_batches_rejects(spec):
    with pytest.raises(MoeprofError):
        parse_batches(spec)


def test_unknown_format_in_table():
    with pytest.raises(MoeprofError, match="unknown format 'nf4'"):
        roofline_table("gpt-oss-120b", "h200", ["bf16", "nf4"], [1])
