"""federated.distributed: the cohort dealt out over ranks, and one all-reduce of a packed
aggregate over real gloo processes equal to the single-process sum."""

import os
import socket

import torch
import torch.multiprocessing as mp

from federated.chain import Aggregate, Contribution
from federated.distributed import Group, group_from_env

STATS = ["a", "b"]


def contributions():
    g = torch.Generator().manual_seed(0)
    return [Contribution(torch.randn(5, generator=g), float(i + 1), {"a": 1.0, "b": float(i)})
            for i in range(5)]


def test_shard_deals_round_robin_and_covers_everything():
    items = list("abcdefg")
    shards = [Group(r, 3).shard(items) for r in range(3)]
    assert shards == [["a", "d", "g"], ["b", "e"], ["c", "f"]]
    assert sorted(sum(shards, [])) == items
    assert Group().shard(items) == items and Group().is_main


def test_single_process_group_is_the_identity(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    g = group_from_env()
    assert g == Group(0, 1)
    agg = Aggregate.of(contributions()[0])
    assert g.all_reduce_aggregate(agg, STATS) is agg
    assert g.all_reduce_sum([1.0, 2.0]) == [1.0, 2.0]


def _worker(rank, world, port, out):
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    group = group_from_env()
    agg = Aggregate.zeros(5, STATS)
    for c in group.shard(contributions()):
        agg = agg.add_(c)
    total = group.all_reduce_aggregate(agg, STATS)
    sums = group.all_reduce_sum([float(rank), 1.0])
    out[rank] = (total.total, total.weight, total.count, dict(total.stats), sums)
    import torch.distributed as dist

    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_all_reduce_to_the_whole_sum():
    whole = Aggregate.zeros(5, STATS)
    for c in contributions():
        whole = whole.add_(c)
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
        results = dict(out)
    for rank in (0, 1):
        total, weight, count, stats, sums = results[rank]
        assert torch.allclose(total, whole.total, rtol=0, atol=1e-12)
        assert (weight, count, stats) == (whole.weight, whole.count, whole.stats)
        assert sums == [1.0, 2.0]
    assert torch.equal(results[0][0], results[1][0])  # every rank holds the same sum
