"""Scale-out with torch.distributed: a round's cohort split across processes (and machines).

Every rank runs the same server loop on the same server state. In each round the reporting
clients are dealt out round-robin (rank r trains clients r, r + W, r + 2W, ... of the cohort),
each rank sums its clients' contributions into one `federated.chain.Aggregate`, and one
all-reduce of the packed aggregate (the update sum, weights, counts and stats in a single
float64 vector) gives every rank the cohort's sum. The server step that follows is a pure
function of that sum and of seeds every rank derives alike (DP noise included), so the server
state stays identical on every rank without ever being sent. Evaluation is sharded the same
way and merged with one all-reduce of the metric sums (`models.nwp.NWPMetrics` adds exactly).

Launch with torchrun, which sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT:

    torchrun --nproc-per-node 2 -m kbsim.cli federated configs/federated.yaml --out runs/fed

On several machines, start the same command on each with the rendezvous of one of them:

    torchrun --nnodes 2 --nproc-per-node 8 --node-rank 0 --master-addr 10.0.0.1 \
        --master-port 29500 -m kbsim.cli federated CONFIG --out DIR     # node 0
    ... --node-rank 1 ...                                               # node 1

Every node needs the data build folder at the same path. With `device: cuda` in the config each
process trains its clients on the GPU of its LOCAL_RANK (`federated.run.client_device`); the
round's sum is one vector that the server side keeps on the CPU, so `kbsim federated` all-reduces
it with gloo whatever the device (`group_from_env("nccl")` is there for programs that keep their
sums on the GPU). Only rank 0 writes logs and checkpoints (to a folder all ranks can read when a
run is resumed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from federated.chain import Aggregate

T = TypeVar("T")


@dataclass(frozen=True)
class Group:
    """This process's place in the job: rank `rank` of `world` (1 in a plain process)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of `items`: every world-th one from its rank."""
        return list(items[self.rank::self.world])

    def all_reduce_aggregate(self, agg: Aggregate, stat_names: Sequence[str]) -> Aggregate:
        """The sum of every rank's aggregate, on every rank (one all-reduce)."""
        if self.world == 1:
            return agg
        import torch.distributed as dist

        packed = _to_backend(agg.pack(stat_names))
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        return Aggregate.unpack(packed.cpu(), stat_names)

    def all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums of a list of numbers over ranks (float64)."""
        if self.world == 1:
            return list(values)
        import torch.distributed as dist

        t = _to_backend(torch.tensor(list(values), dtype=torch.float64))
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu().tolist()

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's `obj` on every rank."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def _to_backend(t: torch.Tensor) -> torch.Tensor:
    """NCCL all-reduces GPU tensors only; gloo takes CPU tensors."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return t.cuda(torch.cuda.current_device())
    return t


def group_from_env(backend: str | None = None) -> Group:
    """Joins the torch.distributed job described by the environment (torchrun's RANK and
    WORLD_SIZE), or returns the single-process group when there is none.

    Args:
        backend: "gloo" or "nccl"; default gloo (CPU tensors are all-reduced).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group()
    import torch.distributed as dist

    if not dist.is_initialized():
        if backend == "nccl":  # one GPU per process, by its rank on this machine
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend or "gloo")
    return Group(dist.get_rank(), dist.get_world_size())
