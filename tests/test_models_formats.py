"""Weight formats: bytes per weight with scales, activation bytes, MMA path per GPU."""

from __future__ import annotations

import pytest

from moeprof.errors import MoeprofError
from moeprof.roofline.formats import format_names, get_format
from moeprof.roofline.gpus import get_gpu


def test_names_are_exact():
    assert format_names()[:5] == ["bf16", "fp8", "fp8-block", "mxfp4", "mxfp4-w4a8"]


def test_weight_bytes_per_param():
    # bf16: 2 bytes
    assert get_format("bf16").weight_bytes_per_param(k=2880) == 2.0
    # fp8 per-channel, [2880, 2880]: 1 byte + 4-byte scale per row of 2880 -> 1 + 4/2880
    assert get_format("fp8").weight_bytes_per_param(k=2880, n=2880) == pytest.approx(1 + 4 / 2880)
    # mxfp4: 4-bit e2m1 + one e8m0 byte per 32 -> 0.5 + 1/32 = 0.53125 bytes = 4.25 bits
    assert get_format("mxfp4").weight_bytes_per_param(k=2880, n=2880) == 0.53125
    # fp8-block, [5760, 2880]: 5760*2880 bytes + 4 * ceil(5760/128)=45 * ceil(2880/128)=23 scales
    assert get_format("fp8-block").weight_bytes(5760, 2880) == 5760 * 2880 + 4 * 45 * 23
    # mxfp4 with K not a multiple of 32 rounds the scale count up: [1, 33] -> 16.5 + 2 scale bytes
    assert get_format("mxfp4").weight_bytes(1, 33) == 16.5 + 2


def test_mxfp4_is_053x_of_fp8():
    # (0.5 + 1/32) / (1 + 4/2880) = 0.53125 / 1.0013889 = 0.5305
    ratio = get_format("mxfp4").weight_bytes(2880, 2880) / get_format("fp8").weight_bytes(2880, 2880)
    assert ratio == pytest.approx(0.5305, abs=1e-4)


def test_activation_bytes():
    # fp8 per token: 3 rows x 2880 bytes + 3 fp32 scales
    assert get_format("fp8").act_bytes(3, 2880) == 3 * 2880 + 3 * 4
    # fp8-block: 1 scale per 128 channels: ceil(2880/128) = 23 per row
    assert get_format("fp8-block").act_bytes(1, 2880) == 2880 + 23 * 4
    # mxfp4 (W4A16) feeds bf16 activations, no scales
    assert get_format("mxfp4").act_bytes(2, 2880) == 2 * 2880 * 2
    assert get_format("mxfp4-w4a8").act_bytes_per_element == 1


@pytest.mark.parametrize(
    "fmt, gpu, path",
    [
        ("bf16", "h200", "bf16"),
        ("fp8", "h200", "fp8"),
        ("fp8-block", "h100", "fp8"),
        ("mxfp4", "h200", "bf16"),       # W4A16 on Hopper: dequantize to BF16, BF16 MMA
        ("mxfp4", "b200", "bf16"),       # still BF16 on Blackwell: FP4 MMA needs FP4 activations
        ("mxfp4-w4a8", "h200", "fp8"),
        ("mxfp4-w4a8", "b200", "fp8"),
        ("mxfp4-w4a4", "b200", "fp4"),   # the only FP4-rate path, and only where native
        ("mxfp4-w4a4", "h200", "fp8"),
    ],
)
def test_mma_path(fmt, gpu, path):
    assert get_format(fmt).mma_path(get_gpu(gpu)) == path


def test_get_format_case_and_errors():
    assert get_format("MXFP4").name == "mxfp4"
    assert get_format("fp8_block").name == "fp8-block"
    with pytest.raises(MoeprofError) as err:
        get_format("int4")
    assert "int4" in str(err.value) and all(n in str(err.value) for n in format_names())
