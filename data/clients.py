"""A federated client's data: its messages, its typist, and the pairs it would make on device.

A real keyboard never uploads what its user typed: each device turns its own clean messages
into training pairs as the user types them. `ClientData.pairs` does the same, lazily, with a
seed derived from (run seed, client id, round), so a client types its messages afresh each
round (new slips, same typist) and any round can be rebuilt exactly. `ClientPool` holds the
clients of an in-memory corpus and samples cohorts for federated rounds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from data.partition import Partitioner, PerUserCap, time_order
from data.population import PopulationConfig
from data.record import Message, derive_seed
from keyboard_sim.pair import Pair
from keyboard_sim.profile import Population, TypistProfile
from keyboard_sim.simulate import simulate


def pairs_seed(seed: int, client_id: str, round: int = 0) -> int:
    """The keyboard_sim seed of one client's pairs in one round: (seed, "pairs", id, round)."""
    return derive_seed(seed, "pairs", client_id, round)


@dataclass(frozen=True)
class ClientData:
    """One client: its messages in time order, its typist and keyboard layout.

    Attributes:
        client_id: The client (a user for natural clients).
        messages: The client's messages, in time order.
        profile: How this client types.
        layout: Keyboard layout name (see `keyboard_sim.available_layouts()`).
    """

    client_id: str
    messages: tuple[Message, ...]
    profile: TypistProfile
    layout: str = "en-US"

    def texts(self) -> list[str]:
        """The clean texts of the client's messages, in order."""
        return [m.text for m in self.messages]

    def pairs(self, seed: int, round: int = 0, touches: bool = False) -> list[Pair]:
        """The client's (noisy, clean) pairs in `round`; pair ids are the message ids.

        Equals `keyboard_sim.simulate(texts, profile, layout, pairs_seed(seed, client_id,
        round), ids=message ids)`: reproducible for a (seed, round), different across rounds.
        """
        return simulate(self.texts(), self.profile, self.layout,
                        pairs_seed(seed, self.client_id, round),
                        ids=[m.id for m in self.messages], touches=touches)


def group_clients(messages: Iterable[Message], partitioner: Partitioner,
                  cap: PerUserCap | None = None) -> dict[str, list[Message]]:
    """Groups an in-memory corpus by client, each client's messages in time order.

    A client's messages are ordered by (time, original position), untimed ones staying after
    the message before them (`data.partition.time_order`). With `cap`, only the earliest
    `cap.max_messages` of each client are kept. Clients come out sorted by id, so the result
    does not depend on the order of the corpus except within equal times.

    Raises:
        PartitionError: a message the partitioner cannot place (e.g. no user), named.
    """
    groups: dict[str, list[Message]] = {}
    for m in messages:
        groups.setdefault(partitioner.client_of(m), []).append(m)
    out = {}
    for client in sorted(groups):
        msgs = groups[client]
        ordered = [msgs[i] for i in time_order([m.time for m in msgs])]
        out[client] = ordered[: cap.max_messages] if cap is not None else ordered
    return out


class ClientPool(Mapping):
    """The clients of an in-memory corpus, client id -> `ClientData`, typists made on access.

    Building the pool stores the messages only; a client's typist is drawn when the client is
    looked up (a pure function of (seed, client id), see `data.population`), so pools of many
    clients cost nothing until used.

    Args:
        messages_by_client: Each client's messages, in time order (e.g. from `group_clients`).
        seed: Run seed: typists come from (seed, client id), cohorts from (seed, round).
        population: How typists are drawn (a `PopulationConfig` or a plain `Population`).
        layout: Keyboard layout of every client.
    """

    def __init__(self, messages_by_client: Mapping[str, Sequence[Message]], seed: int,
                 population: PopulationConfig | Population | None = None,
                 layout: str = "en-US") -> None:
        if population is None:
            population = PopulationConfig()
        elif isinstance(population, Population):
            population = PopulationConfig(population=population)
        self.seed = seed
        self.population = population
        self.layout = layout
        self._messages = {c: tuple(ms) for c, ms in messages_by_client.items()}
        self._ids = sorted(self._messages)

    def __getitem__(self, client_id: str) -> ClientData:
        try:
            messages = self._messages[client_id]
        except KeyError:
            raise KeyError(f"no client {client_id!r} in the pool") from None
        return ClientData(client_id, messages, self.population.profile(client_id, self.seed),
                          self.layout)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def sample(self, n: int, round: int) -> list[str]:
        """A cohort of `n` distinct client ids for `round`, uniform without replacement.

        Seeded by (pool seed, "sample", round), as federated simulators derive each round's
        cohort, so a resumed run samples the same cohorts.
        """
        if not 0 <= n <= len(self._ids):
            raise ValueError(f"cannot sample {n} clients from a pool of {len(self._ids)}")
        rng = np.random.default_rng(derive_seed(self.seed, "sample", round))
        return [self._ids[i] for i in rng.choice(len(self._ids), size=n, replace=False)]
