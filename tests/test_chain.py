"""federated.chain: aggregates merge exactly, pack for one all-reduce, stages run in order."""

from dataclasses import dataclass

import torch

from federated.chain import Aggregate, Contribution, run_client, run_server


def test_aggregate_adds_and_packs():
    a = Aggregate.of(Contribution(torch.tensor([1.0, 2.0]), 2.0, {"s": 1.0}))
    b = Aggregate.zeros(2, ["s"]).add_(Contribution(torch.tensor([0.5, 0.5]), 1.0, {"s": 3.0}))
    c = a + b
    assert c.count == 2 and c.weight == 3.0 and c.stats == {"s": 4.0}
    assert torch.equal(c.total, torch.tensor([1.5, 2.5], dtype=torch.float64))
    back = Aggregate.unpack(c.pack(["s"]), ["s"])
    assert back == Aggregate(back.total, 3.0, 2, {"s": 4.0})
    assert torch.equal(back.total, c.total)


@dataclass(frozen=True)
class Tag:
    """A stage that records the order it runs in."""

    name: str
    log: list
    stat_names: tuple = ()

    def init_state(self):
        return {"n": 0}

    def client(self, c, state, g):
        self.log.append(f"client {self.name}")
        return Contribution(c.vector + 1, c.weight, c.stats)

    def server(self, agg, state, g):
        self.log.append(f"server {self.name}")
        return agg, {"n": state["n"] + 1}, {f"{self.name}/seen": float(agg.count)}


def test_client_steps_in_order_server_steps_reversed_then_mean():
    log = []
    stages = [Tag("a", log), Tag("b", log)]
    states = [s.init_state() for s in stages]
    gens = [torch.Generator(), torch.Generator()]
    c = run_client(stages, Contribution(torch.zeros(2), 1.0), states, gens)
    agg = Aggregate.of(c) + Aggregate.of(c)
    mean, new_states, metrics = run_server(stages, agg, states, gens)
    assert log == ["client a", "client b", "server b", "server a"]
    assert torch.equal(mean, torch.tensor([2.0, 2.0]))  # each vector +2, mean of two
    assert new_states == [{"n": 1}, {"n": 1}] and states == [{"n": 0}, {"n": 0}]
    assert metrics == {"a/seen": 2.0, "b/seen": 2.0}


def test_empty_aggregate_gives_a_zero_mean():
    mean, _, _ = run_server([], Aggregate.zeros(3), [], [])
    assert torch.equal(mean, torch.zeros(3))
