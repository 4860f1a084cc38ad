"""The default corpus: the BYU Chit-Chat Challenge chats, from the PyPI package chitchat-dataset.

258,145 messages from 1,315 senders in 7,168 conversations (MIT licence). The package ships the
corpus as one JSON file, `chitchat_dataset/dataset.json`: an object from conversation id to
{"messages": [[message, ...], ...], ...}, where each inner list is one turn (consecutive
messages of one sender) and each message is {"text", "sender", "timestamp"}. It is read from
the installed package; nothing is downloaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources


def dataset_path():
    """The corpus file inside the installed package (a `Traversable`)."""
    try:
        return resources.files("chitchat_dataset") / "dataset.json"
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the default corpus needs the chitchat-dataset package: pip install 'kbsim[corpus]'"
        ) from None


def iter_messages(limit: int | None = None, *, prompt: bool = False) -> Iterator[dict]:
    """Yields every message in corpus order as {"id", "sender", "text", "timestamp"}.

    A message's id is "<conversation id>/<n>", n its 0-based position in the conversation,
    so ids are stable and unique. The corpus is one JSON document, so it is parsed whole
    (about 40 MB) before the first message comes out.

    Args:
        limit: Stop after this many messages (None: all of them).
        prompt: Also give each message its conversation's "prompt" (the topic the two
            participants were asked to chat about; "" for the 239 conversations without one),
            usable as a label for label-skewed partitions.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    data = json.loads(dataset_path().read_text(encoding="utf-8"))
    count = 0
    for conv_id, conv in data.items():
        topic = conv.get("prompt") or ""
        n = 0
        for turn in conv["messages"]:
            for m in turn:
                if limit is not None and count >= limit:
                    return
                d = {"id": f"{conv_id}/{n}", "sender": m["sender"], "text": m["text"],
                     "timestamp": m["timestamp"]}
                if prompt:
                    d["prompt"] = topic
                yield d
                n += 1
                count += 1
