"""The tp- and ep-sharded MoE layer on 2 CPU processes (gloo): the ranks' outputs put together equal
the unsharded layer and its fp32 reference, at tiny shapes through the Triton interpreter."""

from __future__ import annotations

import os
import socket

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

SHAPE = dict(hidden_size=64, intermediate_size=128, num_experts=8, top_k=2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, cases, out_dir):
    os.environ["TRITON_INTERPRET"] = "1"
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    from moeprof.models.sharded import ShardedMoeLayer

    results = {}
    for fmt, batch, tp, ep in cases:
        layer = ShardedMoeLayer(**SHAPE, fmt=fmt, batch=batch, tp=tp, ep=ep, rank=rank, device="cpu",
                                cache_weights=False, seed=3)
        out = layer(nvtx=False).clone()
        results[(fmt, batch, tp, ep)] = (layer.token_range, out, layer.full(nvtx=False).clone(),
                                         layer.full.reference())
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


CASES = [("fp8", 5, 2, 1), ("mxfp4", 5, 2, 1), ("fp8", 6, 1, 2), ("mxfp4", 1, 1, 2)]


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    mp.start_processes(_worker, args=(2, _free_port(), CASES, str(out)), nprocs=2, start_method="spawn")
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


@pytest.mark.parametrize("case", CASES, ids=[f"{f}-b{b}-tp{t}-ep{e}" for f, b, t, e in CASES])
def test_sharded_equals_unsharded(rank_results, case):
    from moeprof.models.reference import ERROR_BOUNDS, rel_err

    fmt, batch, tp, ep = case
    (r0, out0, full0, ref0), (r1, out1, full1, ref1) = rank_results[0][case], rank_results[1][case]
    if tp > 1:  # every rank holds the all-reduced output of all tokens
        assert r0 == r1 == (0, batch)
        assert torch.equal(out0, out1)
        sharded = out0
    else:  # each rank holds its own contiguous share of the tokens
        assert r0[0] == 0 and r0[1] == r1[0] and r1[1] == batch
        sharded = torch.cat([out0, out1])
    assert sharded.shape == (batch, SHAPE["hidden_size"])
    assert rel_err(sharded, ref0) < ERROR_BOUNDS[fmt]
    # against the unsharded Triton layer: same kernels; the summation order differs and, for fp8, each
    # tp rank quantizes its own slice of the intermediate activations (per-token scales of the slice)
    assert rel_err(sharded, full0) < ERROR_BOUNDS[fmt]
    # the shares are not interchangeable: swapping the ranks' outputs breaks the match
    if ep > 1 and len(out0) == len(out1) and len(out0):
        assert rel_err(torch.cat([out1, out0]), ref0) > 10 * ERROR_BOUNDS[fmt]


def test_sharding_refusals():
    from moeprof.errors import MoeprofError
    from moeprof.models.sharded import check_sharding

    shape = dict(SHAPE)
    with pytest.raises(MoeprofError, match="tp and ep together"):
        check_sharding(shape, "bf16", 2, 2)
    with pytest.raises(MoeprofError, match="ep=3 does not divide the 8 experts"):
        check_sharding(shape, "bf16", 1, 3)
    with pytest.raises(MoeprofError, match="not a multiple of the format's 32-element block"):
        check_sharding({**shape, "intermediate_size": 96}, "mxfp4", 2, 1)
    with pytest.raises(MoeprofError, match="128-element block"):
        check_sharding({**shape, "intermediate_size": 2880}, "fp8-block", 2, 1)
