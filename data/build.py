"""A whole experiment's data, built in one resumable job: `kbsim data build CONFIG`.

    corpus -> normalise + clean filter -> clients -> caps -> splits -> shards of messages and
    (noisy, clean) pairs -> word vocabulary + subword model -> manifest + summary

Two streaming passes over the corpus keep memory bounded whatever its size:

1. *Scan*: every record is normalised, filtered and given its client; per client only a count
   is kept (and, when the corpus has times, the message times, to order each client's
   messages by time: 16 bytes per message).
2. *Write*: the same pure decisions again, now with each message's rank in its client's time
   order, which decides the per-client cap and the early/late period. Each block of
   `shard_size` input records becomes one messages shard and one pairs shard, written
   atomically and listed in the manifest with its checksum and its counts. A build that stops
   resumes at the first block whose shards are not in place.

Then the tokenizers are trained from the training users' early messages only (read back from
the shards), and a summary accounts for every input record: kept, filtered (with the filter's
reason) or rejected (bad record, with the reader's reason, in rejects.jsonl).

Every decision is a pure function of (config seed, record id, client id), so the same config
gives identical shards, vocabularies and pair files.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.config import DataConfig
from data.record import Message, derive_seed, unit_float
from data.store import Manifest, StoreError, messages_schema, pairs_schema, write_shard

BUILD_VERSION = 1
KEPT = "kept"
OVER_CAP = "over_user_cap"


class BuildError(ValueError):
    """A build that cannot go on: the message says why."""


# --------------------------------------------------------------------------- decisions


@dataclass
class Decider:
    """The pure per-record decisions of a build: normalised text, status and client."""

    config: DataConfig

    def __post_init__(self) -> None:
        from data.clean import CleanFilter
        from data.partition import IID, Dirichlet, Natural

        c = self.config
        k = c.clean
        self.filter = CleanFilter(min_words=k.min_words, max_words=k.max_words,
                                  max_chars=k.max_chars, min_known=k.min_known,
                                  lowercase_i=k.lowercase_i, lang=k.lang,
                                  wordlist_size=k.wordlist_size, misspellings=k.misspellings)
        if c.clients.partition == "natural":
            self.partitioner = Natural()
        elif c.clients.partition == "iid":
            self.partitioner = IID(c.clients.n_clients, c.seed)
        else:
            self.partitioner = Dirichlet(c.clients.n_clients, c.clients.alpha, c.seed)

    def decide(self, m: Message) -> tuple[str, str, str]:
        """(status, client, clean text): status is "kept" or the filter's reason."""
        from data.clean import normalize

        text = normalize(m.text)
        if self.config.clean.filter:
            reason = self.filter.check(text)
            if reason is not None:
                return reason, "", text
        return KEPT, self.partitioner.client_of(m), text


# --------------------------------------------------------------------------- accounting


@dataclass
class Accounting:
    """Where every input record went; mergeable, so per-shard counts add up to the whole."""

    read: int = 0
    kept: int = 0
    filtered: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)

    def __add__(self, o: Accounting) -> Accounting:
        return Accounting(self.read + o.read, self.kept + o.kept, self.filtered + o.filtered,
                          self.rejected + o.rejected)

    @property
    def records(self) -> int:
        """Input records seen: those read as messages plus those rejected as bad."""
        return self.read + sum(self.rejected.values())

    def balanced(self) -> bool:
        return self.read == self.kept + sum(self.filtered.values())

    def to_dict(self) -> dict:
        return {"read": self.read, "kept": self.kept, "filtered": dict(self.filtered),
                "rejected": dict(self.rejected)}

    @classmethod
    def from_dict(cls, d: dict) -> Accounting:
        return cls(d["read"], d["kept"], Counter(d["filtered"]), Counter(d["rejected"]))


# --------------------------------------------------------------------------- the build


def open_messages(config: DataConfig, rejects=None) -> Iterator[Message]:
    """The corpus of `config` as Messages (bad records to `rejects`)."""
    from data.corpus import chitchat_corpus, read_corpus

    c = config.corpus
    if c.source == "chitchat":
        it = chitchat_corpus()
    else:
        it = read_corpus(c.source, c.format, text_field=c.text_field, user_field=c.user_field,
                         id_field=c.id_field, time_field=c.time_field,
                         label_field=c.label_field, rejects=rejects)
    if c.limit is None:
        return it
    return (m for _, m in zip(range(c.limit), it, strict=False))


class _Discard:
    """A rejects sink for the scan pass (the write pass records them)."""

    def add(self, line: int, reason: str, raw: str) -> None:
        pass


@dataclass
class ClientPlan:
    """What the scan pass learnt: per client, its message count and (with times) ranks."""

    counts: dict[str, int]
    ranks: np.ndarray | None  # rank of record seq in its client's time order (kept records)
    timed: bool


def scan(config: DataConfig, decider: Decider, progress: bool = False) -> ClientPlan:
    """Pass 1: counts per client, and time ranks when every kept message has a time."""
    counts: dict[str, int] = Counter()
    times: dict[str, list[tuple[float, int]]] = {}
    timed = True
    sink = _Discard()
    for seq, m in enumerate(_progress(open_messages(config, sink), progress, "scan")):
        status, client, _ = decider.decide(m)
        if status != KEPT:
            continue
        counts[client] += 1
        if timed and m.time is None:
            timed, times = False, {}
        if timed:
            times.setdefault(client, []).append((m.time, seq))
    ranks = None
    if timed and times:
        n = 1 + max(seq for v in times.values() for _, seq in v)
        ranks = np.full(n, -1, dtype=np.int32)
        for v in times.values():
            v.sort()
            for r, (_, seq) in enumerate(v):
                ranks[seq] = r
    return ClientPlan(dict(counts), ranks, timed and bool(times))


def build(config: DataConfig, out: str | Path, progress: bool = False) -> dict:
    """Builds (or resumes) the dataset of `config` in folder `out`; returns the summary."""
    from data.population import PopulationConfig, population_around
    from keyboard_sim.io import Rejects
    from keyboard_sim.stats import PairStats

    out = Path(out)
    manifest = Manifest.load(out)
    cfg = config.to_dict()
    if manifest is not None and manifest.data.get("config") != cfg:
        raise BuildError(f"{out} holds a build of another config; use a new folder "
                         f"(or delete it to rebuild)")
    if manifest is None:
        manifest = Manifest(out)
        from kbsim import __version__

        manifest.data.update({"config": cfg, "kbsim_version": __version__,
                              "build_version": BUILD_VERSION, "seed": config.seed})
        manifest.save()
    t0 = time.perf_counter()
    preset = config.typists.preset
    population = PopulationConfig() if preset == "postures" else population_around(preset)
    decider = Decider(config)
    plan = scan(config, decider, progress)
    splits = {c: user_split_of(config, c) for c in plan.counts}
    cap = config.clients.max_messages
    n_eff = {c: n if cap is None else min(n, cap) for c, n in plan.counts.items()}

    profiles: OrderedDict = OrderedDict()  # an LRU of client profiles (bounded memory)

    def profile_of(client: str):
        p = profiles.get(client)
        if p is None:
            p = population.profile(client, config.seed)
            profiles[client] = p
            if len(profiles) > 4096:
                profiles.popitem(last=False)
        else:
            profiles.move_to_end(client)
        return p

    running: Counter = Counter()  # rank in stream order, when the corpus has no times
    block: list[tuple[int, Message, str, str, str, str]] = []
    index = 0
    rejects = Rejects(out / "rejects.jsonl")
    try:
        for seq, m in enumerate(_progress(open_messages(config, rejects), progress, "write")):
            status, client, text = decider.decide(m)
            if status == KEPT:
                rank = int(plan.ranks[seq]) if plan.timed else running[client]
                running[client] += 1
                if cap is not None and rank >= cap:
                    status = OVER_CAP
                    period = ""
                else:
                    period = period_of(rank, n_eff[client], config.splits.late_fraction)
            else:
                period = ""
            block.append((seq, m, status, client, text, period))
            if len(block) == config.shard_size:
                _write_block(manifest, index, block, splits, profile_of, config)
                block, index = [], index + 1
        if block or index == 0:
            _write_block(manifest, index, block, splits, profile_of, config)
            index += 1
    except BaseException:
        rejects.abort()
        raise
    rejects.close()
    manifest.complete("messages", index)
    if config.pairs.materialize:
        manifest.complete("pairs", index)
    acc = Accounting()
    stats = {s: PairStats() for s in ("train", "val", "test")}
    for entry in manifest.shards("messages").values():
        acc = acc + Accounting.from_dict(entry["accounting"])
    for entry in manifest.shards("pairs").values():
        for s, d in entry.get("pair_stats", {}).items():
            stats[s] = stats[s] + _stats_from(d)
    acc.rejected = Counter(rejects_reasons(out / "rejects.jsonl"))
    tok = train_tokenizers(config, out, manifest, progress)
    export_pairs(config, out)
    summary = make_summary(config, plan, n_eff, splits, acc, stats, tok,
                           time.perf_counter() - t0)
    manifest.data["summary"] = summary
    manifest.save()
    return summary


def user_split_of(config: DataConfig, client: str) -> str:
    from data.partition import user_split

    s = config.splits
    return user_split(client, config.seed, (s.train, s.val, s.test))


def period_of(rank: int, n: int, late_fraction: float) -> str:
    from data.partition import time_split_index

    return "late" if time_split_index(rank, n, late_fraction) == "test" else "early"


def _write_block(manifest: Manifest, index: int, block: list, splits: dict, profile_of,
                 config: DataConfig) -> None:
    """Writes block `index`'s messages and pairs shards, unless both are already in place."""
    want_pairs = config.pairs.materialize
    if manifest.valid_shard("messages", index) and (
            not want_pairs or manifest.valid_shard("pairs", index)):
        return
    acc = Accounting()
    rows: dict[str, list] = {f.name: [] for f in messages_schema()}
    for _seq, m, status, client, text, period in block:
        acc.read += 1
        if status != KEPT:
            acc.filtered[status] += 1
            continue
        acc.kept += 1
        rows["id"].append(m.id)
        rows["client"].append(client)
        rows["text"].append(text)
        rows["time"].append(m.time)
        rows["line"].append(m.line)
        rows["label"].append(m.label)
        rows["split"].append(splits[client])
        rows["period"].append(period)
    entry = write_shard(manifest.root, "messages", index, rows, messages_schema())
    entry["accounting"] = acc.to_dict()
    manifest.add_shard("messages", index, entry)
    if want_pairs:
        prow, pstats = simulate_rows(rows, profile_of, config)
        pentry = write_shard(manifest.root, "pairs", index, prow, pairs_schema())
        pentry["pair_stats"] = {s: _stats_to(st) for s, st in pstats.items()}
        manifest.add_shard("pairs", index, pentry)


def simulate_rows(rows: dict[str, list], profile_of, config: DataConfig):
    """The pairs of one shard's kept messages, each client typed by its own profile.

    A client's pairs are seeded by (seed, client, round), exactly as `ClientData.pairs` makes
    them on the client, so materialised and lazily built pairs are the same.
    """
    from data.clients import ClientData
    from keyboard_sim.stats import PairStats

    by_client: dict[str, list[int]] = {}
    for i, c in enumerate(rows["client"]):
        by_client.setdefault(c, []).append(i)
    pairs = [None] * len(rows["id"])
    for client in sorted(by_client):
        idx = by_client[client]
        messages = tuple(Message(rows["id"][i], client, rows["text"][i], rows["time"][i])
                         for i in idx)
        data = ClientData(client, messages, profile_of(client), config.typists.layout)
        ps = data.pairs(config.seed, config.pairs.round)
        for i, p in zip(idx, ps, strict=True):
            pairs[i] = p
    out: dict[str, list] = {"id": rows["id"], "client": rows["client"], "split": rows["split"],
                            "period": rows["period"], "clean": [], "noisy": [], "edits": []}
    stats: dict[str, PairStats] = {}
    for p, split in zip(pairs, rows["split"], strict=True):
        out["clean"].append(p.clean)
        out["noisy"].append(p.noisy)
        out["edits"].append([{"type": e.type.value, "clean_start": e.clean_start,
                              "clean_end": e.clean_end, "noisy_start": e.noisy_start,
                              "noisy_end": e.noisy_end} for e in p.edits])
        stats[split] = stats.get(split, PairStats()) + PairStats.of([p])
    return out, stats


def export_pairs(config: DataConfig, out: Path) -> None:
    """The optional single-file exports of all pairs: pairs.jsonl and pairs.m2 (atomic)."""
    if not config.pairs.materialize or not (config.pairs.jsonl or config.pairs.m2):
        return
    from data.built import BuiltDataset
    from keyboard_sim.io import JsonlWriter, M2Writer

    ds = BuiltDataset.__new__(BuiltDataset)  # the summary is not written yet
    ds.root, ds.config = out, config
    writers = []
    if config.pairs.jsonl:
        writers.append(JsonlWriter(out / "pairs.jsonl"))
    if config.pairs.m2:
        writers.append(M2Writer(out / "pairs.m2"))
    try:
        for _, pair in ds.pairs():
            for w in writers:
                w.write(pair)
    except BaseException:
        for w in writers:
            w.abort()
        raise
    for w in writers:
        w.close()


def _stats_to(s) -> dict:
    d = dataclasses.asdict(s)
    d["edits"] = dict(s.edits)
    return d


def _stats_from(d: dict):
    from keyboard_sim.stats import PairStats

    return PairStats(d["records"], d["changed"], d["clean_chars"], d["distance"],
                     Counter(d["edits"]), d["passthrough"])


def rejects_reasons(path: Path) -> Counter:
    """Reason -> count in a rejects file (reasons are generalised: the text after a colon
    names the record's detail and is dropped)."""
    counts: Counter = Counter()
    if not path.exists():
        return counts
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            counts[str(r.get("reason", "")).split(":")[0]] += 1
    return counts


# --------------------------------------------------------------------------- tokenizers


def _texts(out: Path, split: str, period: str | None = None) -> Iterator[tuple[str, str]]:
    """(id, text) of the kept messages of a user split (and period), in input order."""
    from data.store import iter_rows

    for r in iter_rows(out, "messages", columns=["id", "text", "split", "period"]):
        if r["split"] == split and (period is None or r["period"] == period):
            yield r["id"], r["text"]


def train_tokenizers(config: DataConfig, out: Path, manifest: Manifest, progress: bool) -> dict:
    """The word vocabulary and the subword model, from training users' early messages only.

    Skipped when the manifest already lists both files with their checksums (resume).
    """
    from data.store import sha256_file
    from data.subword import SubwordConfig, train_subword
    from data.tokenize import tokenize
    from data.vocab import WordVocab

    t = config.tokenizers
    done = manifest.data.get("tokenizers")
    if done and all((out / e["path"]).exists() and sha256_file(out / e["path"]) == e["sha256"]
                    for e in done["files"]):
        return done
    vocab = WordVocab.build((tokenize(text) for _, text in _texts(out, "train", "early")),
                            size=t.vocab_size, lowercase=t.lowercase)
    vocab.save(out / "vocab.json")
    files = [out / "vocab.json"]
    if t.subword_vocab_size:
        n_train = sum(1 for _ in _texts(out, "train", "early"))
        share = min(1.0, t.subword_max_messages / max(1, n_train))
        sample = (text for rid, text in _texts(out, "train", "early")
                  if share >= 1.0 or unit_float(config.seed, "subword", rid) < share)
        sp = SubwordConfig(vocab_size=t.subword_vocab_size, model_type=t.subword_model)
        train_subword(sample, out / "subword", sp)
        files += [out / "subword.model", out / "subword.json"]
    coverage = {}
    for split in ("train", "val", "test"):
        hit = total = 0
        for _, text in _texts(out, split):
            h, n = vocab.coverage([tokenize(text)])
            hit, total = hit + h, total + n
        coverage[split] = {"in_vocab": hit, "tokens": total}
    done = {"files": [{"path": f.name, "sha256": sha256_file(f)} for f in files],
            "vocab_words": len(vocab), "coverage": coverage}
    manifest.data["tokenizers"] = done
    manifest.save()
    return done


def make_summary(config: DataConfig, plan: ClientPlan, n_eff: dict[str, int],
                 splits: dict[str, str], acc: Accounting, stats: dict, tok: dict,
                 seconds: float) -> dict:
    """The build's summary: accounting of every record, clients, vocabulary and error rates."""
    per_split: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for c, n in n_eff.items():
        per_split[splits[c]].append(n)
    clients = {}
    for split, ns in per_split.items():
        q = np.quantile(ns, [0, 0.25, 0.5, 0.75, 1.0]).tolist() if ns else [0] * 5
        clients[split] = {"clients": len(ns), "messages": int(sum(ns)),
                          "per_client": dict(zip(("min", "q25", "median", "q75", "max"),
                                                 [float(x) for x in q], strict=True))}
    pairs = {s: {"pairs": st.records, "cer": st.cer,
                 "changed": st.changed / st.records if st.records else 0.0,
                 "edits": dict(st.edits.most_common())}
             for s, st in stats.items()}
    cov = {s: (v["in_vocab"] / v["tokens"] if v["tokens"] else 0.0)
           for s, v in tok["coverage"].items()}
    return {"records": acc.records, "read": acc.read, "kept": acc.kept,
            "filtered": dict(acc.filtered.most_common()),
            "rejected": dict(acc.rejected.most_common()),
            "accounted": acc.balanced(), "clients": clients, "timed": plan.timed,
            "vocab_words": tok["vocab_words"], "vocab_coverage": cov, "pairs": pairs,
            "seconds": round(seconds, 1)}


def format_summary(summary: dict) -> str:
    """The summary as a plain-text table for a terminal."""
    s = summary
    lines = [f"records  {s['records']:,}: kept {s['kept']:,}, filtered "
             f"{sum(s['filtered'].values()):,} ({_reasons(s['filtered'])}), rejected "
             f"{sum(s['rejected'].values()):,} ({_reasons(s['rejected'])})",
             "",
             f"{'split':<6} {'clients':>8} {'messages':>9} {'min':>5} {'q25':>6} "
             f"{'median':>7} {'q75':>6} {'max':>6} {'vocab cov':>9} {'CER':>6} "
             f"{'changed':>8}"]
    for split, c in s["clients"].items():
        q = c["per_client"]
        p = s["pairs"].get(split, {"cer": 0.0, "changed": 0.0})
        lines.append(f"{split:<6} {c['clients']:>8,} {c['messages']:>9,} {q['min']:>5.0f} "
                     f"{q['q25']:>6.1f} {q['median']:>7.1f} {q['q75']:>6.1f} {q['max']:>6.0f} "
                     f"{s['vocab_coverage'].get(split, 0.0):>9.1%} {p['cer']:>6.2%} "
                     f"{p['changed']:>8.1%}")
    lines.append(f"\nvocabulary {s['vocab_words']:,} words; built in {s['seconds']} s")
    return "\n".join(lines)


def _reasons(counts: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items()) or "none"


def _progress(it, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, unit=" msg", mininterval=0.5, smoothing=0.1)


__all__ = ["Accounting", "BuildError", "StoreError", "build", "scan", "unit_float",
           "derive_seed"]
