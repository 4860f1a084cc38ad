"""The default corpus, read from the installed chitchat-dataset package (no network)."""

from __future__ import annotations

import itertools

import pytest

pytest.importorskip("chitchat_dataset")

from data.chitchat import dataset_path, iter_messages  # noqa: E402


def test_the_corpus_ships_with_the_package():
    assert dataset_path().is_file()


def test_messages_have_id_sender_text():
    first = list(iter_messages(limit=50))
    assert len(first) == 50
    for m in first:
        assert {"id", "sender", "text", "timestamp"} <= set(m)
        assert isinstance(m["text"], str) and isinstance(m["sender"], str)
    assert len({m["id"] for m in first}) == 50
    # Ids number the messages within each conversation.
    assert first[0]["id"].endswith("/0") and first[1]["id"].endswith("/1")


def test_limit_is_a_prefix_and_ids_are_stable():
    a = list(iter_messages(limit=20))
    b = list(itertools.islice(iter_messages(), 20))
    assert a == b
    assert list(iter_messages(limit=0)) == []
    with pytest.raises(ValueError):
        list(iter_messages(limit=-1))


def test_whole_corpus_counts():
    # The package's published size: 258,145 messages from 1,315 senders.
    n, senders, ids = 0, set(), set()
    for m in iter_messages():
        n += 1
        senders.add(m["sender"])
        ids.add(m["id"])
    assert n == 258_145 == len(ids)
    assert len(senders) == 1_315


def test_prompt_is_the_conversations_topic():
    plain = list(iter_messages(limit=30))
    with_prompt = list(iter_messages(limit=30, prompt=True))
    assert [{k: v for k, v in m.items() if k != "prompt"} for m in with_prompt] == plain
    assert "prompt" not in plain[0]
    # The first conversation's prompt, shared by all of its messages.
    first = [m for m in with_prompt if m["id"].split("/")[0] == plain[0]["id"].split("/")[0]]
    assert {m["prompt"] for m in first} == {
        "What's one thing your best friend doesn't know about you?"}
