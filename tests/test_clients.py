"""data.clients: a client's pairs are reproducible per round; pools sample cohorts as in FL."""

from collections import Counter
from datetime import datetime

import pytest

from data.chitchat import iter_messages
from data.clients import ClientData, ClientPool, group_clients, pairs_seed
from data.partition import IID, Natural, PartitionError, PerUserCap
from data.population import PopulationConfig, client_profile, population_around
from data.record import Message, derive_seed
from keyboard_sim import simulate
from keyboard_sim.profile import Population


def _chat(limit):
    """A chitchat slice as Messages (sender as user, ISO timestamp as seconds)."""
    return [Message(d["id"], d["sender"], d["text"],
                    datetime.fromisoformat(d["timestamp"]).timestamp(), i + 1)
            for i, d in enumerate(iter_messages(limit=limit))]


@pytest.fixture(scope="module")
def chat():
    return _chat(600)


def _client(chat):
    groups = group_clients(chat, Natural())
    cid = max(groups, key=lambda c: len(groups[c]))
    return ClientData(cid, tuple(groups[cid]), client_profile(cid, 0))


def test_pairs_equal_simulate_with_the_derived_seed(chat):
    client = _client(chat)
    assert len(client.messages) >= 10
    seed = derive_seed(5, "pairs", client.client_id, 2)
    assert pairs_seed(5, client.client_id, 2) == seed
    expected = simulate(client.texts(), client.profile, "en-US", seed,
                        ids=[m.id for m in client.messages])
    assert client.pairs(5, round=2) == expected
    assert [p.id for p in expected] == [m.id for m in client.messages]
    assert [p.clean for p in expected] == client.texts()


def test_pairs_are_reproducible_per_round_and_differ_between_rounds(chat):
    client = _client(chat)
    r0 = client.pairs(1, round=0)
    assert client.pairs(1, round=0) == r0
    assert [p.noisy for p in client.pairs(1, round=1)] != [p.noisy for p in r0]
    assert [p.noisy for p in client.pairs(2, round=0)] != [p.noisy for p in r0]
    with_touches = client.pairs(1, round=0, touches=True)
    assert all(p.touches is not None for p in with_touches)
    assert [p.noisy for p in with_touches] == [p.noisy for p in r0]


def test_group_clients_orders_by_time_then_position():
    msgs = [Message("a", "u", "x", 5.0), Message("b", "v", "x", 1.0),
            Message("c", "u", "x", 2.0), Message("d", "u", "x", 5.0),
            Message("e", "u", "x", None), Message("f", "u", "x", 1.0)]
    groups = group_clients(msgs, Natural())
    assert list(groups) == ["u", "v"]
    # "e" has no time: it stays right after "d", the message before it.
    assert [m.id for m in groups["u"]] == ["f", "c", "a", "d", "e"]
    assert [m.id for m in group_clients(msgs, Natural(), cap=PerUserCap(2))["u"]] == ["f", "c"]
    assert group_clients(list(reversed(msgs[:4])), Natural())["u"][0].id == "c"


def test_group_clients_names_a_record_it_cannot_place():
    with pytest.raises(PartitionError, match="record 'z'"):
        group_clients([Message("y", "u", "x"), Message("z", "", "x")], Natural())


def test_group_clients_on_chitchat_keeps_every_message(chat):
    groups = group_clients(chat, Natural())
    assert sum(map(len, groups.values())) == len(chat)
    assert set(groups) == {m.user for m in chat}
    for msgs in groups.values():
        times = [m.time for m in msgs]
        assert times == sorted(times)
    iid = group_clients(chat, IID(4, seed=0))
    assert sorted(iid) == [f"iid-{k}" for k in range(4)]


def test_pool_builds_clients_on_access(chat):
    groups = group_clients(chat, Natural())
    pool = ClientPool(groups, seed=3, population=population_around("committed"))
    assert len(pool) == len(groups) and list(pool) == sorted(groups)
    cid = next(iter(pool))
    client = pool[cid]
    assert client.messages == tuple(groups[cid])
    assert client.profile == population_around("committed").profile(cid, 3)
    assert pool[cid] == client
    with pytest.raises(KeyError, match="no client"):
        pool["nobody"]
    plain = ClientPool(groups, seed=3, population=Population())
    assert plain[cid].profile == client_profile(cid, 3)
    assert ClientPool(groups, seed=3)[cid].profile == PopulationConfig().profile(cid, 3)


def test_sample_is_without_replacement_deterministic_and_uniform():
    groups = {f"c{i:02d}": [Message(str(i), f"c{i:02d}", "hi")] for i in range(20)}
    pool = ClientPool(groups, seed=0)
    cohort = pool.sample(8, round=4)
    assert len(set(cohort)) == 8 and set(cohort) <= set(groups)
    assert pool.sample(8, round=4) == cohort
    assert ClientPool(dict(reversed(list(groups.items()))), seed=0).sample(8, 4) == cohort
    assert pool.sample(8, round=5) != cohort
    assert sorted(pool.sample(20, round=0)) == sorted(groups)
    with pytest.raises(ValueError, match="cannot sample 21"):
        pool.sample(21, round=0)
    rounds = 2000
    seen = Counter(c for r in range(rounds) for c in pool.sample(5, round=r))
    # Each client is in a cohort with probability 5/20: Binomial(2000, 0.25), sd 19.4; 4 sd.
    sd = (rounds * 0.25 * 0.75) ** 0.5
    assert all(abs(seen[c] - rounds * 0.25) < 4 * sd for c in groups), seen
