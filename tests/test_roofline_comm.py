"""Communication term of the roofline (tp all-reduce, ep all-to-all): bytes per rank derived by hand."""

from __future__ import annotations

import json

import pytest

from moeprof.cli import main
from moeprof.errors import MoeprofError
from moeprof.roofline.comm import comm_cost, link_bandwidth
from moeprof.roofline.gpus import get_gpu

H, K = 2880, 4  # gpt-oss-120b hidden size and top-k


def test_tp_allreduce_bytes_by_hand():
    # bf16 [16384, 2880] output = 94,371,840 bytes; ring all-reduce over 2 ranks sends 2*(1/2) of it
    c = comm_cost("gpt-oss-120b", "h200", 16384, tp=2)
    assert c.allreduce_bytes == 94_371_840
    assert c.dispatch_bytes == c.combine_bytes == 0
    # 4 ranks: 2*3/4 = 1.5x the tensor
    assert comm_cost("gpt-oss-120b", "h200", 16384, tp=4).allreduce_bytes == 141_557_760
    # datasheet NVLink 4: 900 GB/s bidirectional = 450 GB/s each way
    assert c.t_comm_s == pytest.approx(94_371_840 / 450e9)


def test_ep_alltoall_bytes_by_hand():
    # 1024 tokens over ep=2: 512 tokens per rank, 4 rows each of 2880 bf16 = 11,796,480 bytes sent;
    # half of them go to the other rank, each way
    c = comm_cost("gpt-oss-120b", "h200", 1024, ep=2, link_gbps=290)
    assert c.dispatch_bytes == c.combine_bytes == 5_898_240
    assert c.allreduce_bytes == 0
    assert c.bytes == 11_796_480
    assert c.t_comm_s == pytest.approx(11_796_480 / 290e9)
    # ep=4: 256 tokens per rank, 3/4 of 4*256*2880*2 leave
    assert comm_cost("gpt-oss-120b", "h200", 1024, ep=4).dispatch_bytes == 4_423_680


def test_unsharded_moves_nothing():
    c = comm_cost("gpt-oss-120b", "h200", 64)
    assert c.bytes == 0 and c.t_comm_s == 0


def test_link_bandwidth_sources():
    assert get_gpu("h200").link_bytes_per_s == 450e9
    assert link_bandwidth("h200", 281) == 281e9
    with pytest.raises(MoeprofError, match="no NVLink bandwidth known"):
        link_bandwidth("h100-pcie")
    with pytest.raises(MoeprofError, match="--link-gbps must be a positive"):
        link_bandwidth("h200", -1)


def test_cli_tp_ep_columns(capsys):
    rc = main(["roofline", "--json", "-b", "1024", "-f", "fp8", "--ep", "2", "--link-gbps", "290"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    r = json.loads(out)["records"][0]
    assert r["comm_bytes"] == 11_796_480
    assert r["t_total_us"] == pytest.approx(r["t_roofline_us"] + 11_796_480 / 290e9 * 1e6)
    rc = main(["roofline", "-b", "16384", "--tp", "2"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "link" in out and "tp all-reduce" in out and "209.7" in out and "94.37 MB per rank" in out


def test_cli_link_unknown(capsys):
    rc = main(["roofline", "-g", "h100-pcie", "--tp", "2"])
    _, err = capsys.readouterr()
    assert rc == 2 and "no NVLink bandwidth known for NVIDIA H100 PCIe 80GB; pass --link-gbps" in err
