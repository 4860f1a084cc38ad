"""The configuration of a data build: one frozen, validated dataclass per step, read from YAML/JSON.

    corpus -> clean -> clients -> splits -> typists -> tokenizers -> pairs

Every field has a default, so an empty config builds the default experiment's data from the
Chit-Chat corpus. Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A bad config: the message names the key and the reason."""


@dataclass(frozen=True)
class CorpusConfig:
    """Where the messages come from.

    Attributes:
        source: "chitchat" (the default corpus, from the installed PyPI package) or a file path
            (.txt, .jsonl, .csv, .tsv, .parquet); a relative path is taken from the config file.
        format: File format when the extension does not say it.
        text_field, user_field, id_field, time_field, label_field: Field (column) names;
            None where the corpus has no such field.
        limit: Read only the first N records (None: all).
    """

    source: str = "chitchat"
    format: str | None = None
    text_field: str = "text"
    user_field: str | None = None
    id_field: str | None = None
    time_field: str | None = None
    label_field: str | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise ConfigError(f"corpus.limit must be >= 0, got {self.limit}")


@dataclass(frozen=True)
class CleanConfig:
    """Normalisation and the clean-text filter (see data/clean.py for each rule).

    Attributes:
        filter: Drop messages the filter rejects (with the reason counted); False keeps all.
        min_words, max_words, max_chars: Length bounds.
        min_known: Share of a message's words that must be in the word list.
        lowercase_i: Reject messages with a lower-case "i" as a word (the simulator makes it).
        wordlist_size: How many of the language's most frequent words (wordfreq) count as known.
        misspellings: Remove codespell's misspellings from the known words (English only).
        lang: Language of the word list.
    """

    filter: bool = True
    min_words: int = 1
    max_words: int = 50
    max_chars: int = 300
    min_known: float = 1.0
    lowercase_i: bool = True
    wordlist_size: int = 50_000
    misspellings: bool = True
    lang: str = "en"


@dataclass(frozen=True)
class ClientsConfig:
    """How messages become federated clients.

    Attributes:
        partition: "natural" (one client per user), "iid" or "dirichlet" (label-skewed).
        n_clients: Number of clients for "iid" and "dirichlet".
        alpha: Dirichlet concentration (small: each label goes to few clients).
        max_messages: Keep at most this many messages per client, the earliest (None: all).
    """

    partition: str = "natural"
    n_clients: int = 100
    alpha: float = 0.5
    max_messages: int | None = 1000

    def __post_init__(self) -> None:
        if self.partition not in ("natural", "iid", "dirichlet"):
            raise ConfigError(f"clients.partition must be natural, iid or dirichlet, "
                              f"got {self.partition!r}")
        if self.n_clients < 1:
            raise ConfigError(f"clients.n_clients must be >= 1, got {self.n_clients}")
        if self.alpha <= 0:
            raise ConfigError(f"clients.alpha must be > 0, got {self.alpha}")
        if self.max_messages is not None and self.max_messages < 1:
            raise ConfigError(f"clients.max_messages must be >= 1, got {self.max_messages}")


@dataclass(frozen=True)
class SplitsConfig:
    """Held-out users, and held-out time within each user.

    Attributes:
        train, val, test: Shares of clients in each user split (sum to 1).
        late_fraction: Share of each client's latest messages marked period "late" (evaluation
            on the same users' later messages); the rest are "early".
    """

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    late_fraction: float = 0.1

    def __post_init__(self) -> None:
        shares = (self.train, self.val, self.test)
        if min(shares) < 0 or abs(sum(shares) - 1.0) > 1e-9:
            raise ConfigError(f"splits.train/val/test must be >= 0 and sum to 1, got {shares}")
        if not 0.0 <= self.late_fraction < 1.0:
            raise ConfigError(f"splits.late_fraction must be in [0, 1), "
                              f"got {self.late_fraction}")


@dataclass(frozen=True)
class TypistsConfig:
    """The typist population: each client draws its own profile (data/population.py).

    Attributes:
        preset: "raw" (taps before keyboard correction) or "committed" (what users leave): the
            population is spread around the preset with its mean error rate calibrated to the
            preset's. "postures": the posture presets as they are, uncalibrated.
        layout: Keyboard layout name.
    """

    preset: str = "raw"
    layout: str = "en-US"

    def __post_init__(self) -> None:
        if self.preset not in ("raw", "committed", "postures"):
            raise ConfigError(f"typists.preset must be raw, committed or postures, "
                              f"got {self.preset!r}")


@dataclass(frozen=True)
class TokenizersConfig:
    """Tokenizers, trained on the training users' early messages only.

    Attributes:
        vocab_size: Words in the next-word vocabulary (10,000 as in the Stack Overflow
            benchmark), besides the special tokens.
        lowercase: Lowercase words for the vocabulary.
        subword_vocab_size: Size of the sentencepiece model (0: no subword model).
        subword_model: "unigram" or "bpe".
        subword_max_messages: Train sentencepiece on at most this many messages (a seeded
            sample), so memory stays bounded on large corpora.
        vocab_max_messages: Count words in at most this many training messages (a seeded
            sample; None: all), so time stays bounded on large corpora (the default corpus
            has fewer, so its vocabulary counts every training message).
        coverage_max_messages: Measure vocabulary coverage on at most this many messages per
            split (a seeded sample).
    """

    vocab_size: int = 10_000
    lowercase: bool = True
    subword_vocab_size: int = 2000
    subword_model: str = "unigram"
    subword_max_messages: int = 200_000
    vocab_max_messages: int | None = 1_000_000
    coverage_max_messages: int = 100_000

    def __post_init__(self) -> None:
        if self.vocab_size < 1:
            raise ConfigError(f"tokenizers.vocab_size must be >= 1, got {self.vocab_size}")
        if self.subword_model not in ("unigram", "bpe"):
            raise ConfigError(f"tokenizers.subword_model must be unigram or bpe, "
                              f"got {self.subword_model!r}")


@dataclass(frozen=True)
class PairsConfig:
    """Materialised pairs (clients can also build theirs lazily from the same seeds).

    Attributes:
        materialize: Write the pairs of every kept message to pairs/ shards.
        round: The round whose pairs are written (a client's pairs are seeded by round).
        m2: Also write an M2 edit file of all pairs.
        jsonl: Also write all pairs as one JSONL file.
    """

    materialize: bool = True
    round: int = 0
    m2: bool = False
    jsonl: bool = False


@dataclass(frozen=True)
class DataConfig:
    """A whole data build. `seed` drives every random choice; `shard_size` is input records per
    shard (affects resumability granularity and memory, never the content)."""

    seed: int = 0
    shard_size: int = 50_000
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    clients: ClientsConfig = field(default_factory=ClientsConfig)
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    typists: TypistsConfig = field(default_factory=TypistsConfig)
    tokenizers: TokenizersConfig = field(default_factory=TokenizersConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ConfigError(f"shard_size must be >= 1, got {self.shard_size}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], base_dir: Path | None = None) -> DataConfig:
        """Builds a config from nested dicts; unknown keys and wrong types are errors."""
        if not isinstance(d, dict):
            raise ConfigError("a data config must be a mapping")
        kwargs: dict[str, Any] = {}
        sections = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in d.items():
            if key not in sections:
                raise ConfigError(f"unknown config key {key!r} (known: {', '.join(sections)})")
            sub = _SECTIONS.get(key)
            if sub is None:
                kwargs[key] = _check_type(key, value, int)
            else:
                kwargs[key] = _section(key, sub, value)
        config = cls(**kwargs)
        src = config.corpus.source
        if base_dir is not None and src != "chitchat" and not Path(src).is_absolute():
            source = str((base_dir / src).resolve())
            config = dataclasses.replace(
                config, corpus=dataclasses.replace(config.corpus, source=source))
        return config

    @classmethod
    def load(cls, path: str | Path) -> DataConfig:
        """Reads a YAML (.yaml/.yml) or JSON config; a section may also sit under `data:`."""
        path = Path(path)
        d = read_config_file(path, "data")
        try:
            return cls.from_dict(d, base_dir=path.parent)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


def read_config_file(path: str | Path, section: str) -> Any:
    """The mapping in a YAML (.yaml/.yml) or JSON config file; when its only key is `section`
    (e.g. `data:`), what is under it. Unreadable or invalid files raise `ConfigError` naming
    the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            d = yaml.safe_load(text) or {}
        else:
            d = json.loads(text)
    except Exception as e:  # yaml.YAMLError, json.JSONDecodeError
        raise ConfigError(f"{path}: not valid {path.suffix[1:] or 'JSON'} ({e})") from None
    if isinstance(d, dict) and set(d) == {section}:
        d = d[section]
    return d


_SECTIONS = {"corpus": CorpusConfig, "clean": CleanConfig, "clients": ClientsConfig,
             "splits": SplitsConfig, "typists": TypistsConfig,
             "tokenizers": TokenizersConfig, "pairs": PairsConfig}


def _check_type(key: str, value: Any, kind: Any) -> Any:
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ConfigError(f"{key} must be {kind.__name__}, got {value!r}")
    return value


def _section(name: str, cls: type, value: Any) -> Any:
    if value is None:
        return cls()
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a mapping, got {value!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, v in value.items():
        if key not in fields:
            raise ConfigError(f"unknown key {name}.{key} (known: {', '.join(fields)})")
        default = getattr(cls(), key)
        kinds = {bool: bool, int: int, float: float, str: str}
        kind = kinds.get(type(default))
        if v is not None and kind is not None:
            v = _check_type(f"{name}.{key}", v, kind)
        elif v is not None and default is None and key in ("limit", "max_messages",
                                                            "vocab_max_messages"):
            v = _check_type(f"{name}.{key}", v, int)
        elif v is not None and default is None:
            v = _check_type(f"{name}.{key}", v, str)
        kwargs[key] = v
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(str(e)) from None
