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
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.config import DataConfig
from data.partition import PartitionError
from data.record import Message, derive_seed, unit_float
from data.store import Manifest, StoreError, messages_schema, pairs_schema, write_shard

BUILD_VERSION = 1
KEPT = "kept"
OVER_CAP = "over_user_cap"
NO_CLIENT = "no_client"  # the partition cannot place the record (no user, no label)


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
        try:
            client = self.partitioner.client_of(m)
        except PartitionError:  # e.g. natural clients and a record without a user
            return NO_CLIENT, "", text
        return KEPT, client, text


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
    """What the scan pass learnt: the clients, their message counts and (with times) ranks.

    The per-record decisions (status and client) are kept on disk, one small file per block
    of `shard_size` records (5 bytes a record), so the write pass need not decide again and
    memory stays bounded.
    """

    clients: list[str]  # client index -> id
    counts: list[int]  # kept messages per client (before the cap)
    statuses: list[str]  # status index -> status
    blocks: int  # blocks of shard_size records read
    work: Path  # where the per-block decisions are
    ranks: np.ndarray | None  # with times: rank of each kept record in its client's time order
    timed: bool

    def decisions(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """(client index or -1, status index) of each record of a block."""
        with np.load(self.work / f"block-{block:05d}.npz") as z:
            return z["client"], z["status"]


def scan(config: DataConfig, decider: Decider, work: Path, progress: bool = False) -> ClientPlan:
    """Pass 1: every record's decision and counts per client, and, when the corpus has times,
    each kept message's rank in its client's time order.

    A message without a time ranks right after the client's message before it, as
    `data.partition.time_order` orders them. The time keys go to the block files on disk;
    only when some message has a time are they read back to rank each client's messages
    (then 20 bytes per kept message in memory), so a corpus without times costs no memory
    per record.
    """
    from array import array

    work.mkdir(parents=True, exist_ok=True)
    index: dict[str, int] = {}
    counts: list[int] = []
    last: list[float] = []  # per client: the time key of its latest kept message so far
    statuses: dict[str, int] = {KEPT: 0}
    timed = False
    block_client, block_status, block_time = array("i"), array("B"), array("d")
    blocks = 0

    def flush() -> None:
        nonlocal blocks, block_client, block_status, block_time
        np.savez(work / f"block-{blocks:05d}.npz", client=np.frombuffer(block_client, np.int32),
                 status=np.frombuffer(block_status, np.uint8),
                 time=np.frombuffer(block_time, np.float64))
        blocks += 1
        block_client, block_status, block_time = array("i"), array("B"), array("d")

    n = 0
    for m in _progress(open_messages(config, _Discard()), progress, "scan"):
        n += 1
        status, client, _ = decider.decide(m)
        code = statuses.setdefault(status, len(statuses))
        ci, key = -1, math.nan
        if status == KEPT:
            ci = index.get(client)
            if ci is None:
                ci = index[client] = len(counts)
                counts.append(0)
                last.append(-math.inf)
            counts[ci] += 1
            if m.time is not None:
                timed = True
                last[ci] = m.time
            key = last[ci]
        block_client.append(ci)
        block_status.append(code)
        block_time.append(key)
        if len(block_status) == config.shard_size:
            flush()
    if block_status or blocks == 0:
        flush()
    plan = ClientPlan(list(index), counts, list(statuses), blocks, work, None, timed)
    if timed:
        plan.ranks = _time_ranks(plan, n, config.shard_size)
    return plan


def _time_ranks(plan: ClientPlan, n: int, shard_size: int) -> np.ndarray:
    """Rank of each kept record in its client's order by (time key, position); -1 elsewhere."""
    clients, keys, seqs = [], [], []
    for k in range(plan.blocks):
        with np.load(plan.work / f"block-{k:05d}.npz") as z:
            c = z["client"]
            kept = np.flatnonzero(c >= 0)
            clients.append(c[kept])
            keys.append(z["time"][kept])
            seqs.append(kept.astype(np.int64) + k * shard_size)
    c, t, q = np.concatenate(clients), np.concatenate(keys), np.concatenate(seqs)
    order = np.lexsort((q, t, c))
    sorted_clients = c[order]
    starts = np.searchsorted(sorted_clients, sorted_clients, side="left")
    ranks = np.full(n, -1, dtype=np.int32)
    ranks[q[order]] = np.arange(len(order)) - starts
    return ranks


def build(config: DataConfig, out: str | Path, progress: bool = False) -> dict:
    """Builds (or resumes) the dataset of `config` in folder `out`; returns the summary."""
    import shutil
    from itertools import islice

    from data.clean import normalize
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
    # What a reader needs to rebuild any client's data without this code's defaults: the
    # partition, the typist population each client's profile is drawn from, and the layout.
    manifest.data["partitioner"] = decider.partitioner.to_dict()
    manifest.data["population"] = population.to_dict()
    manifest.data["layout"] = config.typists.layout
    plan = scan(config, decider, out / ".scan", progress)
    splits = [user_split_of(config, c) for c in plan.clients]
    cap = config.clients.max_messages
    n_eff = [n if cap is None else min(n, cap) for n in plan.counts]

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

    split_of = dict(zip(plan.clients, splits, strict=True))
    running = np.zeros(len(plan.clients), dtype=np.int64)  # ranks in stream order
    late = config.splits.late_fraction
    rejects = Rejects(out / "rejects.jsonl")
    try:
        records = enumerate(_progress(open_messages(config, rejects), progress, "write"))
        for k in range(plan.blocks):
            clients, codes = plan.decisions(k)
            chunk = list(islice(records, len(codes)))
            if len(chunk) != len(codes):
                raise BuildError(f"the corpus changed while it was read: block {k} has "
                                 f"{len(chunk)} records, the scan saw {len(codes)}")
            done = manifest.valid_shard("messages", k) and (
                not config.pairs.materialize or manifest.valid_shard("pairs", k))
            block = []
            for (seq, m), ci, code in zip(chunk, clients.tolist(), codes.tolist(), strict=True):
                status = plan.statuses[code]
                if status != KEPT:
                    block.append((m, status, "", "", ""))
                    continue
                rank = int(plan.ranks[seq]) if plan.timed else int(running[ci])
                running[ci] += 1
                if done:
                    continue
                if cap is not None and rank >= cap:
                    block.append((m, OVER_CAP, "", "", ""))
                else:
                    block.append((m, KEPT, plan.clients[ci], normalize(m.text),
                                  period_of(rank, n_eff[ci], late)))
            if not done:
                _write_block(manifest, k, block, split_of, profile_of, config)
        if next(records, None) is not None:
            raise BuildError("the corpus changed while it was read: more records than the scan "
                             "saw")
    except BaseException:
        rejects.abort()
        raise
    rejects.close()
    shutil.rmtree(out / ".scan", ignore_errors=True)
    manifest.complete("messages", plan.blocks)
    if config.pairs.materialize:
        manifest.complete("pairs", plan.blocks)
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
    acc = Accounting()
    rows: dict[str, list] = {f.name: [] for f in messages_schema()}
    for m, status, client, text, period in block:
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
    by_split: dict[str, list] = {}
    for p, split in zip(pairs, rows["split"], strict=True):
        out["clean"].append(p.clean)
        out["noisy"].append(p.noisy)
        out["edits"].append([{"type": e.type.value, "clean_start": e.clean_start,
                              "clean_end": e.clean_end, "noisy_start": e.noisy_start,
                              "noisy_end": e.noisy_end} for e in p.edits])
        by_split.setdefault(split, []).append(p)
    return out, {split: PairStats.of(ps) for split, ps in by_split.items()}


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
            # The kind of problem, without the record's details ("(byte 0xff at ...)").
            reason = str(r.get("reason", "")).split(":")[0]
            counts[reason.split(" (")[0].strip()] += 1
    return counts


# --------------------------------------------------------------------------- tokenizers


def _texts(out: Path, split: str, period: str | None = None) -> Iterator[tuple[str, str]]:
    """(id, text) of the kept messages of a user split (and period), in input order."""
    from data.store import iter_rows

    for r in iter_rows(out, "messages", columns=["id", "text", "split", "period"]):
        if r["split"] == split and (period is None or r["period"] == period):
            yield r["id"], r["text"]


def _rows(out: Path, columns: list[str]) -> Iterator[dict]:
    from data.store import iter_rows

    return iter_rows(out, "messages", columns=columns)


def _sample(items: Iterator[tuple[str, str]], n: int, cap: int | None, seed: int,
            purpose: str) -> Iterator[str]:
    """The texts of (id, text) items, or a seeded sample of about `cap` of the `n` when there
    are more: each kept with probability cap / n, decided by (seed, purpose, id)."""
    share = 1.0 if cap is None or n <= cap else cap / n
    for rid, text in items:
        if share >= 1.0 or unit_float(seed, purpose, rid) < share:
            yield text


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
    counts = Counter(r["split"] + "/" + r["period"] for r in _rows(out, ["split", "period"]))
    n_train = counts["train/early"]
    vocab_texts = _sample(_texts(out, "train", "early"), n_train, t.vocab_max_messages,
                          config.seed, "vocab")
    vocab = WordVocab.build((tokenize(text) for text in vocab_texts), size=t.vocab_size,
                            lowercase=t.lowercase)
    vocab.save(out / "vocab.json")
    files = [out / "vocab.json"]
    if t.subword_vocab_size:
        sample = _sample(_texts(out, "train", "early"), n_train, t.subword_max_messages,
                         config.seed, "subword")
        sp = SubwordConfig(vocab_size=t.subword_vocab_size, model_type=t.subword_model)
        try:
            train_subword(sample, out / "subword", sp)
        except ValueError as e:
            raise BuildError(f"{e} (set tokenizers.subword_vocab_size lower for a corpus this "
                             f"small, or 0 for no subword model)") from None
        files += [out / "subword.model", out / "subword.json"]
    coverage = {}
    for split in ("train", "val", "test"):
        n = counts[split + "/early"] + counts[split + "/late"]
        texts = _sample(_texts(out, split), n, t.coverage_max_messages, config.seed, "coverage")
        cov = vocab.coverage(tokenize(text) for text in texts)
        coverage[split] = {"in_vocab": cov[0], "tokens": cov[1]}
    done = {"files": [{"path": f.name, "sha256": sha256_file(f)} for f in files],
            "vocab_words": len(vocab), "coverage": coverage}
    manifest.data["tokenizers"] = done
    manifest.save()
    return done


def make_summary(config: DataConfig, plan: ClientPlan, n_eff: list[int], splits: list[str],
                 acc: Accounting, stats: dict, tok: dict, seconds: float) -> dict:
    """The build's summary: accounting of every record, clients, vocabulary and error rates."""
    per_split: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for n, split in zip(n_eff, splits, strict=True):
        per_split[split].append(n)
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
    for split in ("train", "val", "test"):  # a saved summary's keys are sorted
        c = s["clients"][split]
        q = c["per_client"]
        p = s["pairs"].get(split, {"cer": 0.0, "changed": 0.0})
        lines.append(f"{split:<6} {c['clients']:>8,} {c['messages']:>9,} {q['min']:>5.0f} "
                     f"{q['q25']:>6.1f} {q['median']:>7.1f} {q['q75']:>6.1f} {q['max']:>6.0f} "
                     f"{s['vocab_coverage'].get(split, 0.0):>9.1%} {p['cer']:>6.2%} "
                     f"{p['changed']:>8.1%}")
    lines.append(f"\nvocabulary {s['vocab_words']:,} words; built in {s['seconds']} s")
    return "\n".join(lines)


def _reasons(counts: dict) -> str:
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} {v:,}" for k, v in ordered) or "none"


def _progress(it, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, unit=" msg", mininterval=0.5, smoothing=0.1)


__all__ = ["Accounting", "BuildError", "StoreError", "build", "scan", "unit_float",
           "derive_seed"]
