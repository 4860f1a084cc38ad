"""A noisy-channel corrector, the way keyboard decoders work: keyboard likelihood x LM prior.

For each typed word the corrector proposes vocabulary words within `max_edit` edits (a
SymSpell-style index of deletions: two strings within distance d share a string reached by at
most d deletions from each), scores each candidate c by

    log P(typed | c) + lm_weight * log P(c | previous words)

with the keyboard's own error model (`models.keyboard_likelihood`) as the channel and a
language model as the prior, and decodes each message left to right keeping the `beam` best
hypotheses. The typed word is always a candidate: as a vocabulary word when it is one, otherwise
"as typed" with the prior's out-of-vocabulary probability (names and slang survive).

Only word tokens (letters, with apostrophes inside) are corrected; punctuation, numbers, emoji
and URLs pass through but still feed the prior's context. A candidate is written in the typed
word's capitalisation (lower, Title or UPPER): the corrector fixes typing errors, it does not
restore case. Messages are split with `data.tokenize.tokenize_spaced` and rebuilt with
`detokenize`, so spacing is kept exactly.

Priors implement `LMPrior`: `BigramPrior` (interpolated absolute discounting over word counts;
numpy only) and `NextWordLMPrior` (an adapter over a next-word model such as
`models.cifg.CIFGLanguageModel`, whose `forward` returns logits over a `data.vocab.WordVocab`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

import numpy as np

from data.tokenize import detokenize, tokenize, tokenize_spaced
from keyboard_sim.lexicon import match_case
from keyboard_sim.unicode_tables import APOSTROPHES
from models.keyboard_likelihood import KeyboardLikelihood

BOS_WORD = "<bos>"  # the context word standing for the start of a message
# Defaults measured on chit-chat (BigramPrior over the first 28,000 messages, 10,000 words; the
# next 400 messages typed with the "raw" preset): word error rate 0.347 typed, 0.120 corrected,
# and 0.009 on the clean messages (over-correction). A sweep of lm_weight in {0.7, 1, 1.5} and
# the OOV penalty in {-3, -6, -9, -12, -15, -20}: the penalty helps down to about -15 (a typed
# string is one of thousands of unknown words, not the whole OOV mass); a heavier LM corrects
# more typos and more correct words.
DEFAULT_LM_WEIGHT = 0.7
DEFAULT_OOV_LOG_PENALTY = -15.0


class CorrectorError(ValueError):
    """A corrector setting or input that cannot be used (names the item and the reason)."""


@runtime_checkable
class LMPrior(Protocol):
    """A next-word prior over a fixed word vocabulary.

    `word_id` maps a word (any case) to its index in the score arrays, or to `oov_id` when the
    prior does not know it; `next_log_probs_batch` gives, for each context (the message's words
    so far, oldest first), natural-log probabilities of the next word over all indices.
    """

    oov_id: int

    def word_id(self, word: str) -> int: ...

    def next_log_probs(self, context_words: Sequence[str]) -> np.ndarray: ...

    def next_log_probs_batch(self, contexts: Sequence[Sequence[str]]) -> np.ndarray: ...


class BigramPrior:
    """A word bigram model with interpolated absolute discounting (Ney, Essen & Kneser 1994).

    P(w | v) = max(c(v, w) - d, 0) / c(v) + d * N1+(v, .) / c(v) * P1(w), where P1 is the
    add-one unigram over the vocabulary plus one OOV slot; an unseen context falls back to P1.
    Words are lowercased. Usable without torch (tests, quick baselines).

    Args:
        unigrams: Word -> count (the vocabulary: every word gets an index, by descending count).
        bigrams: (previous word or BOS_WORD, word) -> count; words outside `unigrams` count as
            OOV.
        oov_count: Tokens seen that are not in the vocabulary (the OOV slot's count).
        discount: d in (0, 1); 0.75 is the usual choice (Chen & Goodman 1999).
    """

    def __init__(self, unigrams: Mapping[str, int], bigrams: Mapping[tuple[str, str], int],
                 oov_count: int = 0, discount: float = 0.75) -> None:
        if not 0.0 < discount < 1.0:
            raise CorrectorError(f"discount must be in (0, 1), got {discount}")
        ranked = sorted(((w.lower(), int(c)) for w, c in unigrams.items()),
                        key=lambda wc: (-wc[1], wc[0]))
        self.words: tuple[str, ...] = tuple(w for w, _ in ranked)
        self._index = {w: i for i, w in enumerate(self.words)}
        if len(self._index) != len(self.words):
            raise CorrectorError("unigrams hold the same word twice (after lowercasing)")
        self.oov_id = len(self.words)
        counts = np.array([c for _, c in ranked] + [int(oov_count)], dtype=np.float64)
        if (counts < 0).any():
            raise CorrectorError("counts must be >= 0")
        self._uni = np.log((counts + 1.0) / (counts.sum() + len(counts)))
        self.discount = float(discount)
        rows: dict[int, dict[int, float]] = {}
        for (v, w), c in bigrams.items():
            if c <= 0:
                continue
            vi = -1 if v == BOS_WORD else self.word_id(v)
            row = rows.setdefault(vi, {})
            wi = self.word_id(w)
            row[wi] = row.get(wi, 0.0) + float(c)
        self._rows = {v: (np.fromiter(r.keys(), dtype=np.int64),
                          np.fromiter(r.values(), dtype=np.float64)) for v, r in rows.items()}

    @classmethod
    def from_texts(cls, texts: Iterable[str], *, max_words: int | None = None,
                   tokenizer: Callable[[str], list[str]] = tokenize,
                   discount: float = 0.75) -> BigramPrior:
        """Counts words and bigrams of messages (each starts after BOS_WORD), lowercased.

        Args:
            max_words: Keep the most frequent words (ties by the word); others count as OOV.
        """
        uni: Counter[str] = Counter()
        big: Counter[tuple[str, str]] = Counter()
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i}: expected a str, got {type(text).__name__}")
            words = [t.lower() for t in tokenizer(text)]
            uni.update(words)
            big.update(zip([BOS_WORD, *words], words, strict=False))  # BOS, w1, ..., w(n-1)
        kept = dict(sorted(uni.items(), key=lambda wc: (-wc[1], wc[0]))[:max_words])
        oov = sum(c for w, c in uni.items() if w not in kept)
        return cls(kept, big, oov_count=oov, discount=discount)

    def word_id(self, word: str) -> int:
        """Index of `word` (lowercased), or `oov_id`."""
        return self._index.get(word.lower(), self.oov_id)

    def next_log_probs(self, context_words: Sequence[str]) -> np.ndarray:
        """log P(next word | last context word) over every index (OOV last)."""
        prev = -1 if not context_words else self.word_id(context_words[-1])
        row = self._rows.get(prev)
        if row is None:
            return self._uni.copy()
        ids, cnt = row
        total = cnt.sum()
        p = np.exp(self._uni) * (self.discount * len(ids) / total)
        p[ids] += np.maximum(cnt - self.discount, 0.0) / total
        return np.log(p)

    def next_log_probs_batch(self, contexts: Sequence[Sequence[str]]) -> np.ndarray:
        """`next_log_probs` for each context, stacked (contexts, vocabulary)."""
        return np.stack([self.next_log_probs(c) for c in contexts])


class NextWordLMPrior:
    """An `LMPrior` over a next-word language model whose `forward(x[B, T]) -> logits[B, T, V]`
    scores a `data.vocab.WordVocab` (e.g. `models.cifg.CIFGLanguageModel`).

    A context is encoded as the model was trained (`data.torch_data.NextWordDataset`): BOS, then
    the message's word ids; contexts longer than `max_context` words keep their last ones.
    PAD and BOS are masked out of the distribution, and it is renormalised.

    Args:
        model: The language model (put in eval mode; no gradients are taken).
        vocab: Its word vocabulary.
        max_context: Most words of context fed (the training sequence length).
    """

    def __init__(self, model: Any, vocab: Any, max_context: int = 20) -> None:
        from data.vocab import BOS, OOV, PAD

        if max_context < 1:
            raise CorrectorError(f"max_context must be >= 1, got {max_context}")
        self.model = model
        self.vocab = vocab
        self.max_context = int(max_context)
        self.oov_id = OOV
        self._bos, self._pad = BOS, PAD

    def word_id(self, word: str) -> int:
        """The vocabulary id of `word` (OOV if unknown)."""
        return self.vocab.encode([word])[0]

    def next_log_probs(self, context_words: Sequence[str]) -> np.ndarray:
        """log P(next word id | context) over the model's vocabulary."""
        return self.next_log_probs_batch([context_words])[0]

    def next_log_probs_batch(self, contexts: Sequence[Sequence[str]]) -> np.ndarray:
        """One forward pass for all contexts (right-padded): (contexts, vocabulary)."""
        import torch

        seqs = [[self._bos, *self.vocab.encode(list(c))[-self.max_context:]] for c in contexts]
        width = max(len(s) for s in seqs)
        x = torch.full((len(seqs), width), self._pad, dtype=torch.int64)
        for i, s in enumerate(seqs):
            x[i, : len(s)] = torch.tensor(s, dtype=torch.int64)
        last = torch.tensor([len(s) - 1 for s in seqs], dtype=torch.int64)
        was_training = getattr(self.model, "training", False)
        self.model.eval()
        try:
            with torch.no_grad():
                logits = self.model(x)  # [B, T, V]
        finally:
            if was_training:
                self.model.train()
        out = logits[torch.arange(len(seqs)), last].double()  # [B, V]
        out[:, self._pad] = -math.inf
        out[:, self._bos] = -math.inf
        return torch.log_softmax(out, dim=-1).numpy()


def _is_word(token: str) -> bool:
    """A token the corrector may change: letters, with apostrophes only between letters."""
    if not token[:1].isalpha() or not token[-1:].isalpha():
        return False
    return all(c.isalpha() or c in APOSTROPHES for c in token)


def _deletes(word: str, depth: int) -> set[str]:
    """Every string reached from `word` by at most `depth` single-character deletions."""
    out = {word}
    frontier = {word}
    for _ in range(depth):
        frontier = {w[:i] + w[i + 1:] for w in frontier for i in range(len(w))} - out
        out |= frontier
    return out


def osa_distance(a: str, b: str, limit: int) -> int:
    """Optimal string alignment distance (Damerau-Levenshtein with adjacent swaps, each
    substring edited once), or `limit + 1` when it exceeds `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d = min(d, prev2[j - 2] + 1)
            cur[j] = d
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return min(prev[-1], limit + 1)


class NoisyChannelCorrector:
    """Corrects typed messages with a keyboard likelihood and a next-word prior.

    Args:
        prior: The language-model prior (`LMPrior`).
        vocab: Candidate words with their counts (e.g. `dict(zip(v.words, v.counts))` of a
            `WordVocab`); only word tokens (see module docstring) become candidates.
        likelihood: The keyboard model of the typist (`KeyboardLikelihood`).
        beam: Hypotheses kept per message.
        max_candidates: Candidates per typed word kept for the beam, the best by channel score
            plus unigram log frequency (the typed word itself is always kept).
        max_edit: Edit distance (OSA) within which candidates are proposed.
        lm_weight: Weight of the prior's log probability.
        oov_log_penalty: Added to the prior's OOV log probability when an unknown typed word is
            kept as typed (0: the whole OOV mass; more negative: keep unknown words less often).
        name: Reported name.
    """

    def __init__(self, prior: LMPrior, vocab: Mapping[str, int], likelihood: KeyboardLikelihood,
                 *, beam: int = 4, max_candidates: int = 16, max_edit: int = 2,
                 lm_weight: float = DEFAULT_LM_WEIGHT,
                 oov_log_penalty: float = DEFAULT_OOV_LOG_PENALTY,
                 name: str = "noisy-channel") -> None:
        if not isinstance(prior, LMPrior):
            raise CorrectorError(f"prior {type(prior).__name__} does not implement LMPrior")
        for field, value, low in (("beam", beam, 1), ("max_candidates", max_candidates, 1),
                                  ("max_edit", max_edit, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise CorrectorError(f"{field} must be an int >= {low}, got {value!r}")
        if not math.isfinite(lm_weight) or lm_weight < 0:
            raise CorrectorError(f"lm_weight must be a finite number >= 0, got {lm_weight!r}")
        self.prior = prior
        self.likelihood = likelihood
        self.beam = beam
        self.max_candidates = max_candidates
        self.max_edit = max_edit
        self.lm_weight = float(lm_weight)
        self.oov_log_penalty = float(oov_log_penalty)
        self.name = name
        counts: dict[str, int] = {}
        for w, c in vocab.items():
            integer = isinstance(c, (int, np.integer)) and not isinstance(c, bool)
            if not isinstance(w, str) or not integer:
                raise CorrectorError(f"vocab entry {w!r}: {c!r} is not a word with an int count")
            if c < 0:
                raise CorrectorError(f"vocab entry {w!r}: negative count {c}")
            if w and _is_word(w):
                key = w.lower()
                counts[key] = counts.get(key, 0) + int(c)
        self._counts = counts
        total = sum(counts.values()) + len(counts)
        self._log_freq = {w: math.log((c + 1) / total) for w, c in counts.items()}
        self._cand_cache: dict[str, list[tuple[str, int, float, float]]] = {}

    def __repr__(self) -> str:
        return (f"NoisyChannelCorrector({self.name!r}, {len(self._counts)} words, "
                f"beam={self.beam}, lm_weight={self.lm_weight})")

    @cached_property
    def _index(self) -> dict[str, list[str]]:
        """Deletion string -> vocabulary words reaching it (built on first use)."""
        index: dict[str, list[str]] = {}
        for w in self._counts:
            for d in _deletes(w, self.max_edit):
                index.setdefault(d, []).append(w)
        return index

    def candidates(self, typed: str) -> list[tuple[str, int, float, float]]:
        """(output word, prior id, log P(typed | word), log frequency) for a typed word token,
        best first; the typed word itself (as typed) is always among them."""
        hit = self._cand_cache.get(typed)
        if hit is not None:
            return hit
        low = typed.lower()
        found: set[str] = set()
        index = self._index
        for d in _deletes(low, self.max_edit):
            found.update(index.get(d, ()))
        found.discard(low)
        scored = []
        for w in found:
            if osa_distance(low, w, self.max_edit) > self.max_edit:
                continue
            out = match_case(typed, w)
            ll = self.likelihood.log_prob(typed, out)
            if ll > -math.inf:
                scored.append((out, self.prior.word_id(w), ll, self._log_freq[w]))
        scored.sort(key=lambda c: (-(c[2] + c[3]), c[0]))
        scored = scored[: self.max_candidates]
        freq = self._log_freq.get(low, -math.inf)
        keep = (typed, self.prior.word_id(low), self.likelihood.log_prob(typed, typed), freq)
        result = [keep, *scored]
        if len(self._cand_cache) > 200_000:
            self._cand_cache.clear()
        self._cand_cache[typed] = result
        return result

    def _lm_score(self, row: np.ndarray, wid: int, known: bool) -> float:
        lp = float(row[wid])
        if wid == self.prior.oov_id and not known:
            lp += self.oov_log_penalty
        return self.lm_weight * lp

    def correct_message(self, text: str) -> str:
        """The most probable intended message for one typed message (see class docstring)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        spaced = tokenize_spaced(text)
        if not any(_is_word(t) for t, _ in spaced):
            return text
        # Hypothesis: (score, output tokens, lowercased context words).
        hyps: list[tuple[float, list[str], list[str]]] = [(0.0, [], [])]
        for token, _ in spaced:
            rows = self.prior.next_log_probs_batch([h[2] for h in hyps])
            if not _is_word(token):
                wid = self.prior.word_id(token)
                hyps = [(s + self._lm_score(rows[k], wid, False), [*out, token],
                         [*ctx, token.lower()]) for k, (s, out, ctx) in enumerate(hyps)]
                continue
            options = self.candidates(token)
            expanded = []
            for k, (s, _, _) in enumerate(hyps):
                for word, wid, ll, freq in options:
                    score = s + ll + self._lm_score(rows[k], wid, freq > -math.inf)
                    expanded.append((score, word, k))
            expanded.sort(key=lambda e: -e[0])
            new = []
            for score, word, k in expanded[: self.beam]:
                _, out, ctx = hyps[k]
                new.append((score, [*out, word], [*ctx, word.lower()]))
            hyps = new
        best = hyps[0][1]
        if best == [t for t, _ in spaced]:
            return text  # unchanged: keep the original whitespace too
        return detokenize(best, [sp for _, sp in spaced])

    def correct(self, texts: Sequence[str]) -> list[str]:
        """Corrects a batch of typed messages (the common corrector interface).

        Raises:
            TypeError: A text is not a str (its index is named).
        """
        out = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i}: expected a str, got {type(text).__name__}")
            out.append(self.correct_message(text))
        return out
