"""Score kbsim's next-word model and correctors with kebbie's own protocol.

kebbie (FleksySDK/kebbie, PyPI ``kebbie``; MIT) is the open mobile-keyboard benchmark whose
published results include Gboard, SwiftKey and the iOS keyboard. Its protocol types each test
sentence word by word with its own noise model (fuzzy taps on a measured phone layout plus
character typos) and asks the keyboard, at each word, for auto-completion (a prefix of the
noisy word), auto-correction (the whole noisy word) and next-word prediction (after the clean
word), scoring top-1 and top-3 accuracies and an auto-correction F-beta (beta 0.9) where words
typed without a typo must be left alone. `score_with_kebbie` runs that protocol on sentences the
caller passes in (kebbie's default data set, SODA from the Hugging Face hub, cannot be
downloaded here) and returns kebbie's own result dict.

Two environments. kebbie pins numpy 1.26 while kbsim needs numpy 2 and torch, so kebbie runs
in the peers' environment (``.venv-peers``, created by ``benchmarks/peers.py``). This process
is the server: `KebbieServer` answers JSON-lines requests with kbsim's models; the script
``eval/_kebbie_shim.py``, run with the peers' python, subclasses kebbie's `Corrector` and
forwards every call over a pair of pipes. The same server also runs on its own, answering on
stdin/stdout (``python -m eval.kebbie_adapter serve --lm-dir RUN``).

The requests (one JSON object a line, one answer line each):

    {"op": "predict_next_word", "context": "i think "}            -> {"candidates": [...]}
    {"op": "auto_complete", "context": "i ", "word": "thi"}        -> {"candidates": [...]}
    {"op": "auto_correct", "context": "i ", "word": "thonk"}       -> {"candidates": [...]}
    {"op": "resolve_swipe", "context": "i "}                       -> {"candidates": []}

a malformed request or a failing model answers {"error": "..."}. Answers:

- next-word prediction: the model's `k` most likely words after the context (tokenised with
  `data.tokenize`, encoded with the model's vocabulary; PAD, BOS, EOS and OOV never suggested);
- auto-completion: the `k` most likely vocabulary words that start with the typed prefix
  (case-insensitively), written in the prefix's capitalisation;
- auto-correction: the corrector's output for the context followed by the typed word, of which
  the words after the context are the correction, then the typed word itself when it differs
  (keyboards show it as the alternative): with no corrector, or "identity", just the typed word;
- swipe resolution: kbsim has no gesture decoder, so nothing (kebbie scores it 0; its
  ``overall_score`` weighs swipe at 0.25, so compare the per-task scores, not that one).

What differs from kebbie's published runs, and is reported under ``results["kbsim"]``: kebbie's
"common typos" (5% of words replaced by a typo from a tweet corpus that kebbie downloads on
first use) are used only when kebbie's cache of that corpus exists or `common_typos` is given,
since no download is possible here; keystroke coordinates are not forwarded (kbsim's correctors
read the typed string); kebbie's memory and runtime figures measure the round trip through the
pipe, not the model on a phone.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHIM = Path(__file__).resolve().parent / "_kebbie_shim.py"
PEERS_SCRIPT = ROOT / "benchmarks" / "peers.py"
DEFAULT_PEER_VENV = ROOT / ".venv-peers"

# kebbie's own defaults (kebbie/__init__.py DEFAULT_SEED, kebbie/scorer.py DEFAULT_BETA): the
# seed of its noise and the beta of its auto-correction F-score.
KEBBIE_SEED = 42
KEBBIE_BETA = 0.9
# kebbie scores top-1 and top-3 (kebbie/scorer.py: `predicted_words[:3]`).
TOP_K = 3
CORRECTORS = ("identity", "symspell", "noisy_channel")
DEFAULT_DOMAIN = "kbsim"


class KebbieError(ValueError):
    """A request, a setting or a kebbie run that failed; the message says which and why."""


@runtime_checkable
class TextCorrector(Protocol):
    """kbsim's corrector interface (`models.symspell_baseline.SymSpellCorrector` and others)."""

    def correct(self, texts: Sequence[str]) -> list[str]: ...


# ------------------------------------------------------------------------------- the server


class KebbieServer:
    """Answers kebbie's Corrector calls with a kbsim next-word model and corrector.

    Args:
        corrector: Any object with `correct(texts) -> list[str]`, or None for no
            auto-correction (the typed word is returned).
        model: A next-word model mapping ids (B, T) to logits (B, T, V), e.g.
            `models.cifg.CIFGLanguageModel`; None answers no next-word and no completion.
        vocab: The model's `data.vocab.WordVocab` (required with `model`).
        k: Candidates returned per call (kebbie reads 3).
        max_context: Most words of context fed to the model.
    """

    def __init__(self, corrector: TextCorrector | None = None, model: Any = None,
                 vocab: Any = None, *, k: int = TOP_K, max_context: int = 20) -> None:
        if corrector is not None and not isinstance(corrector, TextCorrector):
            raise KebbieError(f"corrector {type(corrector).__name__} has no correct(texts)")
        if (model is None) != (vocab is None):
            raise KebbieError("give both the next-word model and its vocabulary, or neither")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise KebbieError(f"k must be an int >= 1, got {k!r}")
        self.corrector = corrector
        self.k = k
        self.prior = None
        self._cache: dict[str, np.ndarray] = {}
        if model is not None:
            from data.vocab import SPECIALS
            from models.noisy_channel import NextWordLMPrior

            n_out = getattr(getattr(model, "config", None), "vocab_size", len(vocab))
            if n_out != len(vocab):
                raise KebbieError(f"the model scores {n_out} ids but the vocabulary has "
                                  f"{len(vocab)}")
            self.prior = NextWordLMPrior(model, vocab, max_context=max_context)
            self._words = np.array(vocab.words, dtype=str)
            self._first = len(SPECIALS)  # id of vocab.words[0]
            self._lowercase = bool(getattr(vocab, "lowercase", False))

    # The three tasks -------------------------------------------------------------------

    def _word_log_probs(self, context: str) -> np.ndarray:
        """log P(next word | context) over `vocab.words` (specials dropped)."""
        hit = self._cache.get(context)
        if hit is None:
            from data.tokenize import tokenize

            lp = self.prior.next_log_probs(tokenize(context))
            hit = lp[self._first:]
            if len(self._cache) >= 256:
                self._cache.clear()
            self._cache[context] = hit
        return hit

    def _top(self, scores: np.ndarray, allowed: np.ndarray | None = None) -> list[str]:
        if allowed is not None:
            scores = np.where(allowed, scores, -np.inf)
        order = np.argsort(-scores, kind="stable")[: self.k]
        return [str(self._words[i]) for i in order if np.isfinite(scores[i])]

    def predict_next_word(self, context: str) -> list[str]:
        """The model's `k` most likely next words (none without a model)."""
        if self.prior is None:
            return []
        return self._top(self._word_log_probs(context))

    def auto_complete(self, context: str, partial: str) -> list[str]:
        """The `k` most likely vocabulary words starting with `partial`, in its capitalisation."""
        if self.prior is None or not partial:
            return []
        from keyboard_sim.lexicon import match_case

        words = np.char.lower(self._words) if not self._lowercase else self._words
        allowed = np.char.startswith(words, partial.lower())
        return [match_case(partial, w) for w in self._top(self._word_log_probs(context),
                                                          allowed)]

    def auto_correct(self, context: str, word: str) -> list[str]:
        """The corrector's choice for `word` after `context`, then `word` if it differs."""
        if self.corrector is None or not word:
            return [word]
        text = context + word
        out = self.corrector.correct([text])
        if len(out) != 1 or not isinstance(out[0], str):
            raise KebbieError(f"corrector returned {out!r} for one text")
        fixed = out[0]
        if fixed.startswith(context):
            choice = fixed[len(context):].strip()
        else:  # the corrector changed the context too: keep the words after it
            choice = " ".join(fixed.split()[len(context.split()):])
        choice = choice or word
        return [choice] if choice == word else [choice, word]

    # The protocol ------------------------------------------------------------------------

    def handle(self, request: Any) -> dict:
        """One request (a decoded JSON object) -> its answer; errors are answered, not raised."""
        try:
            if not isinstance(request, dict):
                raise KebbieError(f"a request must be a JSON object, got {request!r}")
            op, context = request.get("op"), request.get("context", "")
            word = request.get("word", "")
            if not isinstance(context, str) or not isinstance(word, str):
                raise KebbieError(f"context and word must be strings in {request!r}")
            if op == "predict_next_word":
                out = self.predict_next_word(context)
            elif op == "auto_complete":
                out = self.auto_complete(context, word)
            elif op == "auto_correct":
                out = self.auto_correct(context, word)
            elif op == "resolve_swipe":
                out = []
            else:
                raise KebbieError(f"unknown op {op!r} in {request!r}")
            return {"candidates": out}
        except Exception as e:  # noqa: BLE001 - reported to the client, which raises it
            return {"error": f"{type(e).__name__}: {e}"}

    def serve(self, reader: IO[bytes], writer: IO[bytes]) -> int:
        """Answers JSON lines from `reader` on `writer` until end of input (or the reader's
        peer is gone); returns how many requests were answered."""
        n = 0
        for line in reader:
            try:
                request = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                reply = {"error": f"request {n + 1} is not JSON ({e})"}
            else:
                reply = self.handle(request)
            try:
                writer.write((json.dumps(reply) + "\n").encode("utf-8"))
                writer.flush()
            except BrokenPipeError:
                break
            n += 1
        return n


# ------------------------------------------------------------------------ models by name


def load_lm(lm_dir: str | os.PathLike, vocab: Any = None) -> tuple[Any, Any]:
    """The next-word model of a training run folder (`models.train.load_trained_lm`) and its
    vocabulary: `vocab` as given (a `WordVocab` or a path to its JSON), else the run's dataset
    folder's ``vocab.json`` (from the run's ``config.json``).

    Raises:
        KebbieError: The vocabulary cannot be found.
        models.checkpoint.CheckpointError: No usable checkpoint in `lm_dir`.
    """
    from data.vocab import WordVocab
    from models.train import CONFIG_JSON, load_trained_lm

    lm_dir = Path(lm_dir)
    model = load_trained_lm(lm_dir)
    if vocab is None:
        try:
            data = json.loads((lm_dir / CONFIG_JSON).read_text(encoding="utf-8"))["data"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise KebbieError(f"{lm_dir / CONFIG_JSON}: no dataset folder to find the "
                              f"vocabulary in ({e}); pass vocab=") from e
        tries = [Path(data) / "vocab.json", lm_dir / data / "vocab.json"]
        found = next((p for p in tries if p.is_file()), None)
        if found is None:
            raise KebbieError(f"{lm_dir}: no vocabulary at {' or '.join(map(str, tries))}; "
                              "pass vocab=")
        vocab = found
    if not isinstance(vocab, WordVocab):
        vocab = WordVocab.load(vocab)
    return model, vocab


def make_corrector(name: str | TextCorrector | None, model: Any = None,
                   vocab: Any = None) -> TextCorrector | None:
    """A corrector by name (`CORRECTORS`), or the object given.

    "identity" (or None) corrects nothing; "symspell" is `models.SymSpellCorrector`;
    "noisy_channel" is `models.NoisyChannelCorrector` with the next-word model as its prior, the
    model's vocabulary as its candidates and the "raw" typist's keyboard likelihood.
    """
    if name is None or name == "identity":
        return None
    if not isinstance(name, str):
        if not isinstance(name, TextCorrector):
            raise KebbieError(f"corrector {type(name).__name__} has no correct(texts)")
        return name
    if name == "symspell":
        from models.symspell_baseline import SymSpellCorrector

        return SymSpellCorrector()
    if name == "noisy_channel":
        if model is None:
            raise KebbieError("corrector 'noisy_channel' needs a next-word model (lm_dir= or "
                              "model= and vocab=)")
        from models.keyboard_likelihood import KeyboardLikelihood
        from models.noisy_channel import NextWordLMPrior, NoisyChannelCorrector

        counts = dict(zip(vocab.words, vocab.counts, strict=True))
        return NoisyChannelCorrector(NextWordLMPrior(model, vocab), counts,
                                     KeyboardLikelihood("en-US", "raw"))
    raise KebbieError(f"unknown corrector {name!r}; known: {', '.join(CORRECTORS)}, or pass "
                      "an object with correct(texts)")


def ensure_peer_python(venv: str | os.PathLike | None = None, quiet: bool = True) -> Path:
    """The peers' python with kebbie, creating the environment with ``benchmarks/peers.py``'s
    `ensure_peer_venv` (from PyPI) when it is missing.

    Raises:
        KebbieError: No environment and no ``benchmarks/peers.py`` to make one (an installed
            kbsim): pass `peer_python=` to `score_with_kebbie` instead.
        subprocess.CalledProcessError: Creating the environment failed (e.g. no network).
    """
    venv = Path(venv) if venv is not None else DEFAULT_PEER_VENV
    if not PEERS_SCRIPT.is_file():
        python = venv / "bin" / "python"
        if python.exists():
            return python
        raise KebbieError(f"no kebbie environment at {venv} and no {PEERS_SCRIPT} to make one: "
                          "create a venv with kebbie==0.5.1 and 'pyarrow<21' and pass its python")
    spec = importlib.util.spec_from_file_location("_kbsim_bench_peers", PEERS_SCRIPT)
    peers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peers)
    return Path(peers.ensure_peer_venv(venv, quiet=quiet))


# ------------------------------------------------------------------------------ scoring


def _dataset(sentences: Sequence[str] | Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    domains = (dict(sentences) if isinstance(sentences, Mapping)
               else {DEFAULT_DOMAIN: sentences})
    if not domains:
        raise KebbieError("no sentences to score")
    out = {}
    for domain, texts in domains.items():
        if not isinstance(domain, str) or isinstance(texts, str) or not isinstance(
                texts, Sequence):
            raise KebbieError(f"domain {domain!r}: expected a name and a list of sentences")
        if not texts:
            raise KebbieError(f"domain {domain!r}: no sentences")
        for i, s in enumerate(texts):
            if not isinstance(s, str) or not s.strip():
                raise KebbieError(f"domain {domain!r}, sentence {i}: expected a non-empty "
                                  f"str, got {s!r}")
        out[domain] = list(texts)
    return out


def score_with_kebbie(
    sentences: Sequence[str] | Mapping[str, Sequence[str]],
    *,
    lm_dir: str | os.PathLike | None = None,
    model: Any = None,
    vocab: Any = None,
    corrector: str | TextCorrector | None = "symspell",
    peer_python: str | os.PathLike | None = None,
    lang: str = "en-US",
    seed: int = KEBBIE_SEED,
    beta: float = KEBBIE_BETA,
    n_proc: int = 1,
    common_typos: Mapping[str, Sequence[str]] | None = None,
    track_mistakes: bool = False,
    timeout_s: float | None = None,
) -> dict:
    """Runs kebbie's evaluation protocol on `sentences` against kbsim's models.

    Args:
        sentences: Clean test sentences, or a mapping domain -> sentences (kebbie scores each
            domain too).
        lm_dir: A next-word training run folder (`load_lm`); or give `model` and `vocab`.
        model: A next-word model (ids -> logits); with `vocab`, its `data.vocab.WordVocab`
            (with `lm_dir`, `vocab` may override the run's vocabulary, as a WordVocab or path).
        corrector: "identity", "symspell", "noisy_channel" (`make_corrector`) or any object
            with `correct(texts)`.
        peer_python: The python of an environment with kebbie (default: `ensure_peer_python()`).
        lang: kebbie's language (it supports "en-US").
        seed: kebbie's noise seed (its default, 42).
        beta: The auto-correction F-beta's beta (kebbie's default, 0.9).
        n_proc: kebbie's worker processes; they share one server, so more mainly overlaps
            kebbie's own noise generation. Scores do not depend on it.
        common_typos: Correct word -> typos for kebbie's common-typo channel (default:
            kebbie's cached tweet corpus if present, else none; see the module docstring).
        track_mistakes: Ask kebbie for its most common mistakes per task.
        timeout_s: Stop kebbie (and fail) after this many seconds.

    Returns:
        kebbie's result dict ("next_word_prediction", "auto_completion", "auto_correction",
        "swipe_resolution", "overall_score", ...) with one more key, "kbsim": what was run
        (corrector, model, sentences, kebbie version, common typos used, requests answered).

    Raises:
        KebbieError: Bad arguments, or kebbie failed (its stderr's end is in the message).
    """
    dataset = _dataset(sentences)
    if isinstance(n_proc, bool) or not isinstance(n_proc, int) or n_proc < 1:
        raise KebbieError(f"n_proc must be an int >= 1, got {n_proc!r}")
    if not math.isfinite(beta) or beta <= 0:
        raise KebbieError(f"beta must be a positive number, got {beta!r}")
    if lm_dir is not None:
        if model is not None:
            raise KebbieError("give lm_dir or model, not both")
        model, vocab = load_lm(lm_dir, vocab)
    server = KebbieServer(make_corrector(corrector, model, vocab), model, vocab)
    python = Path(peer_python) if peer_python is not None else ensure_peer_python()
    typos = ({str(w): [str(t) for t in ts] for w, ts in common_typos.items()}
             if common_typos is not None else None)

    with tempfile.TemporaryDirectory(prefix="kbsim-kebbie-") as tmp:
        tmp = Path(tmp)
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        job = {"dataset": dataset, "lang": lang, "seed": int(seed), "beta": float(beta),
               "n_proc": n_proc, "track_mistakes": bool(track_mistakes),
               "common_typos": typos, "req_fd": req_w, "resp_fd": resp_r,
               "out": str(tmp / "results.json")}
        (tmp / "job.json").write_text(json.dumps(job), encoding="utf-8")
        log = (tmp / "kebbie.log").open("wb")
        try:
            proc = subprocess.Popen(
                [str(python), "-I", str(SHIM), str(tmp / "job.json")],
                pass_fds=(req_w, resp_r), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=tmp, start_new_session=True,
            )
        except OSError as e:
            os.close(req_r)
            os.close(resp_w)
            raise KebbieError(f"cannot run the peers' python {python}: {e}") from e
        finally:
            os.close(req_w)
            os.close(resp_r)
            log.close()
        timer, timed_out = None, threading.Event()
        if timeout_s is not None:
            # kebbie's pool workers are in the shim's session: kill them all, which closes
            # the pipes and ends `serve`.
            def expire() -> None:
                timed_out.set()
                _kill_group(proc)

            timer = threading.Timer(timeout_s, expire)
            timer.start()
        try:
            with os.fdopen(req_r, "rb") as reader, os.fdopen(resp_w, "wb") as writer:
                answered = server.serve(reader, writer)
            code = proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()
        out = tmp / "results.json"
        if code != 0 or not out.is_file():
            tail = (tmp / "kebbie.log").read_text(encoding="utf-8", errors="replace")[-3000:]
            why = f"timed out after {timeout_s} s" if timed_out.is_set() else f"exit {code}"
            raise KebbieError(f"kebbie run failed ({why}) with {python}:\n{tail}")
        payload = json.loads(out.read_text(encoding="utf-8"))

    results = payload["results"]
    results["kbsim"] = {
        "corrector": ("identity" if server.corrector is None
                      else getattr(server.corrector, "name", type(server.corrector).__name__)),
        "model": None if model is None else type(model).__name__,
        "lm_dir": None if lm_dir is None else str(lm_dir),
        "vocab_words": None if vocab is None else len(vocab.words),
        "sentences": {d: len(s) for d, s in dataset.items()},
        "requests": answered,
        "seed": int(seed),
        "n_proc": n_proc,
        **payload["meta"],
    }
    return results


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m eval.kebbie_adapter serve``: the server on stdin/stdout."""
    ap = argparse.ArgumentParser(prog="python -m eval.kebbie_adapter",
                                 description="Answer kebbie Corrector calls as JSON lines.")
    sub = ap.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="answer JSON-line requests on stdin/stdout")
    serve.add_argument("--lm-dir", help="a next-word training run folder")
    serve.add_argument("--vocab", help="the vocabulary JSON (default: the run's)")
    serve.add_argument("--corrector", default="symspell",
                       help=f"one of {', '.join(CORRECTORS)} (default: %(default)s)")
    args = ap.parse_args(argv)
    model = vocab = None
    if args.lm_dir:
        model, vocab = load_lm(args.lm_dir, args.vocab)
    server = KebbieServer(make_corrector(args.corrector, model, vocab), model, vocab)
    server.serve(sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
