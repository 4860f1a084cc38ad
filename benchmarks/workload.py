"""The benchmark workload: real chat messages from the default corpus, one per line.

The corpus is the Chit Chat Challenge dataset (PyPI `chitchat-dataset`), read straight from the
`dataset.json` shipped in the installed package so that every tool times the same bytes. Only the
standard library is used here; the peers' environment never needs this module.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata, util
from pathlib import Path

DEFAULT_MESSAGES = 20_000

# Every character that `str.splitlines` treats as a line boundary; each becomes a space so that a
# message is exactly one line whichever way a reader splits the file.
_LINE_BREAKS = str.maketrans(dict.fromkeys("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029", " "))


def corpus_path() -> Path:
    """Path of `chitchat_dataset/dataset.json` in the installed package."""
    spec = util.find_spec("chitchat_dataset")
    if spec is None or spec.origin is None:
        raise SystemExit(
            "the benchmark corpus is missing: install it with `pip install -e '.[corpus]'`"
        )
    return Path(spec.origin).parent / "dataset.json"


def chat_messages(n: int = DEFAULT_MESSAGES) -> list[str]:
    """The first `n` non-empty messages, line breaks turned into spaces.

    Order is the file's own: conversations as they appear in `dataset.json` (JSON objects keep
    their key order when loaded), then each conversation's turns in order, then each turn's
    messages in order. A message is one `{"text": ...}` entry, i.e. one thing a person sent.
    """
    with open(corpus_path(), encoding="utf-8") as f:
        conversations = json.load(f)
    out: list[str] = []
    for conversation in conversations.values():
        for turn in conversation["messages"]:
            for message in turn:
                text = message["text"].translate(_LINE_BREAKS)
                if text.strip():
                    out.append(text)
                    if len(out) == n:
                        return out
    raise SystemExit(f"the corpus has only {len(out)} non-empty messages, {n} were asked for")


def write_workload(path: Path, n: int = DEFAULT_MESSAGES) -> dict:
    """Writes the workload to `path` (UTF-8, one message per line); returns its description."""
    messages = chat_messages(n)
    data = "".join(m + "\n" for m in messages).encode("utf-8")
    path.write_bytes(data)
    return {
        "corpus": "chitchat-dataset " + metadata.version("chitchat-dataset"),
        "messages": len(messages),
        "chars": sum(len(m) for m in messages),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
