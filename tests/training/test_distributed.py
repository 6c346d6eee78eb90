"""torch.distributed primitives: sharding, the differentiable gather, JSON broadcasts.

Two gloo processes on this machine stand in for two GPUs: the cross-rank pair
equivalence (2 ranks x 60 images = 1 process x 120) is exact up to float
rounding for the all-pairs and a hard miner.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import siamkit
from siamkit.exceptions import ConfigError
from siamkit.training.distributed import (
    DistributedContext,
    _context,
    all_equal,
    broadcast_json,
    gather_batch,
    init_distributed,
    shard,
)

BATCH = 120


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 10, generator=generator), torch.arange(BATCH) % 12


def _step(model, x, y, ctx: DistributedContext, miner: str) -> torch.Tensor:
    embeddings, labels = gather_batch(model(x), y, ctx)
    pairs = siamkit.create_miner(miner)(embeddings, labels)
    loss = siamkit.ContrastiveLoss(margin=1.0).batch(embeddings, labels, pairs)
    loss.backward()
    return loss.detach()


def _worker(rank: int, world: int, init: str, out: str, miner: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        ctx = _context(initialised_here=False)
        model = DistributedDataParallel(_model())
        x, y = _data()
        mine = shard(list(range(BATCH)), ctx)
        loss = _step(model, x[mine], y[mine], ctx, miner)
        checks = {
            "broadcast": broadcast_json({"from": rank}, ctx),
            "same": all_equal({"seed": 1}, ctx),
            "different": all_equal(rank, ctx),
            "context": [ctx.rank, ctx.world_size, ctx.backend],
        }
        grads = [p.grad for p in model.module.parameters()]
        torch.save({"loss": loss, "grads": grads, "checks": checks}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("miner", ["all", "batch-hard"])
def test_two_ranks_train_like_one_process_on_the_global_batch(tmp_path, miner) -> None:
    mp.spawn(_worker, args=(2, f"file://{tmp_path}/rendezvous", str(tmp_path), miner), nprocs=2)
    model = _model()
    x, y = _data()
    expected = _step(model, x, y, DistributedContext(), miner)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["loss"], expected, rtol=0, atol=1e-5)
        for grad, param in zip(got["grads"], model.parameters(), strict=True):
            torch.testing.assert_close(grad, param.grad, rtol=0, atol=1e-5)
        assert got["checks"] == {
            "broadcast": {"from": 0},
            "same": True,
            "different": False,
            "context": [rank, 2, "gloo"],
        }


def test_shard_splits_evenly_or_says_why() -> None:
    ctx = DistributedContext(rank=2, world_size=3)
    assert shard(list(range(9)), ctx) == [6, 7, 8]
    with pytest.raises(ConfigError, match="multiple of the number of processes"):
        shard(list(range(10)), ctx)


def test_one_process_is_a_context_of_one(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed(torch.device("cpu"))
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main) == (0, 1, False, True)
    e, y = torch.randn(4, 2), torch.arange(4)
    assert gather_batch(e, y, ctx)[0] is e
    assert broadcast_json([1, "a"], ctx) == [1, "a"]
