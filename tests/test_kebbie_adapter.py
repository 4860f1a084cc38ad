"""eval.kebbie_adapter: the JSON-lines server worked by hand, and real kebbie runs (in the peers'
environment, built from PyPI on first use; skipped when it cannot be built) of a tiny trained
CIFG model with kbsim's correctors."""

from __future__ import annotations

import io
import json
import math
import subprocess

import pytest
import torch
from torch import nn

from data.tokenize import tokenize
from data.vocab import WordVocab
from eval import kebbie_adapter as ka
from models.checkpoint import save_step_checkpoint
from models.cifg import CIFGConfig, CIFGLanguageModel
from models.nwp import nwp_loss
from models.symspell_baseline import SymSpellCorrector

SENTENCES = [
    "I think we should meet at the coffee shop tomorrow morning",
    "did you finish reading the book about mountains",
    "my brother is visiting from california next weekend",
    "we should probably order pizza for dinner tonight",
    "the weather has been absolutely beautiful this week",
    "can you send me the pictures from the wedding",
    "I forgot my umbrella at the restaurant yesterday",
    "are you coming to the basketball game on saturday",
    "she started learning spanish because of her new job",
    "let me know when you get home safely",
    "the professor cancelled class because of the snow",
    "I really enjoyed the concert last night",
    "how was your interview with the marketing company",
    "we need to buy groceries before the store closes",
    "my computer keeps crashing whenever I open the browser",
    "they are planning a surprise party for their grandmother",
    "remember to water the plants while I am travelling",
    "the train was delayed for almost two hours",
    "I think the movie was better than the original novel",
    "would you like to go hiking with us on sunday",
]


# ------------------------------------------------------------------ a model worked by hand


class UnigramLM(nn.Module):
    """A next-word model whose logits ignore the context: (B, T) -> (B, T, V) = fixed scores."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.config = CIFGConfig(vocab_size=len(scores), embed_dim=1, hidden_dim=1)
        self.register_buffer("scores", torch.tensor(scores))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores.expand(*x.shape, -1).clone()


@pytest.fixture(scope="module")
def hand_server():
    # Counts the 3, cat 2, car 1, dog 1 give ids the=4, cat=5, car=6, dog=7 (ties by string).
    vocab = WordVocab.build([["the", "the", "the", "cat", "cat", "car", "dog"]])
    assert vocab.words == ("the", "cat", "car", "dog")
    # PAD, BOS, EOS, OOV, the, cat, car, dog: EOS and OOV score highest but are never offered.
    model = UnigramLM([0.0, 0.0, 5.0, 4.0, 1.0, 3.0, 2.0, -1.0])
    return ka.KebbieServer(None, model, vocab)


@pytest.fixture(scope="module")
def symspell():
    return SymSpellCorrector()


def test_next_word_and_completion_by_hand(hand_server):
    # Words by score: cat 3 > car 2 > the 1 > dog -1; top 3 = cat, car, the.
    assert hand_server.predict_next_word("the ") == ["cat", "car", "the"]
    assert hand_server.predict_next_word("") == ["cat", "car", "the"]
    # Words starting with "ca": cat (3), car (2), in the prefix's capitalisation.
    assert hand_server.auto_complete("", "ca") == ["cat", "car"]
    assert hand_server.auto_complete("my ", "Ca") == ["Cat", "Car"]
    assert hand_server.auto_complete("my ", "CA") == ["CAT", "CAR"]
    assert hand_server.auto_complete("my ", "d") == ["dog"]
    assert hand_server.auto_complete("my ", "zz") == []
    # No corrector: the typed word stands.
    assert hand_server.auto_correct("my ", "cst") == ["cst"]


def test_auto_correct_takes_the_words_after_the_context(symspell):
    server = ka.KebbieServer(symspell)
    assert server.auto_correct("I ", "thonk") == ["think", "thonk"]
    assert server.auto_correct("I ", "think") == ["think"]
    assert server.auto_correct("", "Tomorow") == ["Tomorrow", "Tomorow"]
    # The corrector fixes the context too ("teh"): the answer is still the last word.
    assert server.auto_correct("teh ", "cta") == ["cat", "cta"]
    assert server.predict_next_word("I ") == [] and server.auto_complete("I ", "th") == []


def test_protocol_answers_errors_and_serves_lines(hand_server):
    assert hand_server.handle({"op": "auto_complete", "context": "", "word": "ca"}) == {
        "candidates": ["cat", "car"]}
    assert hand_server.handle({"op": "resolve_swipe", "context": ""}) == {"candidates": []}
    assert "unknown op 'swipe'" in hand_server.handle({"op": "swipe"})["error"]
    assert "JSON object" in hand_server.handle(["auto_correct"])["error"]
    assert "must be strings" in hand_server.handle({"op": "auto_correct", "word": 3})["error"]
    requests = (b'{"op": "predict_next_word", "context": "a "}\nnot json\n'
                b'{"op": "auto_correct", "context": "", "word": "dgo"}\n')
    out = io.BytesIO()
    assert hand_server.serve(io.BytesIO(requests), out) == 3
    answers = [json.loads(x) for x in out.getvalue().splitlines()]
    assert answers[0] == {"candidates": ["cat", "car", "the"]}
    assert "request 2 is not JSON" in answers[1]["error"]
    assert answers[2] == {"candidates": ["dgo"]}


def test_bad_settings():
    vocab = WordVocab.build([["a", "b"]])
    with pytest.raises(ka.KebbieError, match="both the next-word model and its vocabulary"):
        ka.KebbieServer(None, UnigramLM([0.0] * 6))
    with pytest.raises(ka.KebbieError, match="scores 5 ids but the vocabulary has 6"):
        ka.KebbieServer(None, UnigramLM([0.0] * 5), vocab)
    with pytest.raises(ka.KebbieError, match="has no correct"):
        ka.KebbieServer(object())
    with pytest.raises(ka.KebbieError, match="unknown corrector 'gboard'"):
        ka.make_corrector("gboard")
    with pytest.raises(ka.KebbieError, match="needs a next-word model"):
        ka.make_corrector("noisy_channel")
    assert ka.make_corrector("identity") is None
    with pytest.raises(ka.KebbieError, match="sentence 1: expected a non-empty str"):
        ka.score_with_kebbie(["fine", " "], corrector=None)
    with pytest.raises(ka.KebbieError, match="domain 'chat': no sentences"):
        ka.score_with_kebbie({"chat": []})
    with pytest.raises(ka.KebbieError, match="n_proc"):
        ka.score_with_kebbie(["fine"], n_proc=0)
    with pytest.raises(ka.KebbieError, match="cannot run the peers' python /nowhere/python"):
        ka.score_with_kebbie(["fine"], corrector=None, peer_python="/nowhere/python")


# ----------------------------------------------------------------- a tiny trained CIFG model


@pytest.fixture(scope="module")
def tiny_lm():
    """A CIFG model trained for 40 full-batch steps on the test sentences (it learns them)."""
    tokens = [tokenize(s) for s in SENTENCES]
    vocab = WordVocab.build(tokens)
    model = CIFGLanguageModel(CIFGConfig(vocab_size=len(vocab), embed_dim=24, hidden_dim=32),
                              generator=torch.Generator().manual_seed(0))
    seqs = [[vocab.bos_id, *vocab.encode(t), vocab.eos_id] for t in tokens]
    width = max(map(len, seqs))
    batch = torch.full((len(seqs), width), vocab.pad_id, dtype=torch.int64)
    for i, s in enumerate(seqs):
        batch[i, : len(s)] = torch.tensor(s)
    x, y = batch[:, :-1], batch[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(40):
        opt.zero_grad()
        nwp_loss(model(x), y, vocab.pad_id).backward()
        opt.step()
    return model.eval(), vocab


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_lm):
    """The tiny model saved as a next-word training run folder, with its dataset's vocab."""
    model, vocab = tiny_lm
    root = tmp_path_factory.mktemp("nwp")
    vocab.save(root / "data" / "vocab.json")
    run = root / "run"
    save_step_checkpoint(run / "checkpoints", 40, model, state={
        "model_kind": "cifg", "model_config": model.config.to_dict()})
    (run / "config.json").write_text(json.dumps({"data": str(root / "data")}))
    return run


def test_load_lm_reads_a_run_folder(tmp_path, tiny_lm, run_dir):
    model, vocab = tiny_lm
    loaded, loaded_vocab = ka.load_lm(run_dir)
    assert loaded_vocab == vocab
    x = torch.tensor([[vocab.bos_id, *vocab.encode(["the", "train"])]])
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert ka.load_lm(run_dir, run_dir.parent / "data" / "vocab.json")[1] == vocab
    (tmp_path / "checkpoints").symlink_to(run_dir / "checkpoints")
    (tmp_path / "config.json").write_text(json.dumps({"data": str(tmp_path / "gone")}))
    with pytest.raises(ka.KebbieError, match="no vocabulary at"):
        ka.load_lm(tmp_path)


# --------------------------------------------------------------------------- real kebbie runs


@pytest.fixture(scope="session")
def kebbie_python():
    try:
        return ka.ensure_peer_python(quiet=True)
    except (subprocess.CalledProcessError, OSError, ka.KebbieError) as e:
        pytest.skip(f"the peers' environment with kebbie could not be made ({e})")


def _numbers(tree, path=""):
    """Every number in a nested result dict, with its path."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _numbers(v, f"{path}/{k}")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


SCORE_KEYS = {
    "next_word_prediction": {"accuracy", "top3_accuracy", "n"},
    "auto_completion": {"accuracy", "top3_accuracy", "n"},
    "auto_correction": {"accuracy", "precision", "recall", "fscore", "top3_accuracy",
                        "top3_precision", "top3_recall", "top3_fscore", "n_typo", "n"},
    "swipe_resolution": {"accuracy", "top3_accuracy", "n"},
}


@pytest.fixture(scope="module")
def runs(kebbie_python, tiny_lm, symspell):
    model, vocab = tiny_lm
    common = {"model": model, "vocab": vocab, "peer_python": kebbie_python, "timeout_s": 120}
    return {
        "symspell": ka.score_with_kebbie(SENTENCES, corrector=symspell, **common),
        "identity": ka.score_with_kebbie(SENTENCES, corrector="identity", **common),
    }


def test_kebbie_scores_the_model_and_corrector(runs):
    r = runs["symspell"]
    for task, keys in SCORE_KEYS.items():
        assert keys <= set(r[task]["score"]), task
        assert r[task]["per_domain"].keys() == {ka.DEFAULT_DOMAIN}
    assert all(math.isfinite(v) for _, v in _numbers(r))
    assert 0 <= r["overall_score"] <= 1
    assert r["kbsim"]["corrector"] == "symspell" and r["kbsim"]["model"] == "CIFGLanguageModel"
    assert r["kbsim"]["kebbie_version"] == "0.5.1"
    # Each word is asked for a correction, most for a completion, all but the last for a
    # next word: every one of them went through the server.
    nwp, acp, acr = (r[t]["score"]["n"] for t in
                     ("next_word_prediction", "auto_completion", "auto_correction"))
    assert r["kbsim"]["requests"] >= nwp + acp + acr - r["kbsim"]["sentences"]["kbsim"]
    # The model was trained on these sentences: its suggestions hold the next word often.
    assert r["next_word_prediction"]["score"]["top3_accuracy"] > 0.5
    assert r["auto_completion"]["score"]["top3_accuracy"] > 0.5


def test_a_corrector_that_fixes_typos_beats_the_identity(runs):
    fixed, kept = runs["symspell"]["auto_correction"], runs["identity"]["auto_correction"]
    # Same sentences, same seed: kebbie typed the same typos for both.
    assert fixed["score"]["n_typo"] == kept["score"]["n_typo"] > 0
    assert fixed["score"]["n"] == kept["score"]["n"]
    assert fixed["score"]["fscore"] > kept["score"]["fscore"]
    assert fixed["score"]["recall"] > 0


def test_identity_scores_as_worked_by_hand(runs):
    # The identity returns the typed word: kebbie's words typed without a typo are all true
    # negatives, those with one all false negatives, so TP = FP = 0, precision and recall are 0
    # and accuracy = (n - n_typo) / n, which kebbie rounds to 2 significant digits.
    s = runs["identity"]["auto_correction"]["score"]
    n, n_typo = s["n"], s["n_typo"]
    assert s["precision"] == s["recall"] == s["fscore"] == 0
    assert s["accuracy"] == float(f"{(n - n_typo) / n:.2g}")


def test_worker_count_does_not_change_the_counts(kebbie_python, runs, run_dir):
    # kebbie seeds each sentence's noise from its hash and adds per-sentence counts, so two
    # workers sharing the server must give the single worker's scores exactly (the model
    # loaded from its run folder is the same model).
    two = ka.score_with_kebbie(SENTENCES, lm_dir=run_dir, corrector="identity",
                               peer_python=kebbie_python, n_proc=2, timeout_s=120)
    assert two["kbsim"]["lm_dir"] == str(run_dir) and two["kbsim"]["n_proc"] == 2
    one = runs["identity"]
    for task in SCORE_KEYS:
        assert two[task]["score"] == one[task]["score"], task
    assert two["kbsim"]["requests"] == one["kbsim"]["requests"]


def test_domains_and_a_failing_run(kebbie_python):
    r = ka.score_with_kebbie({"a": SENTENCES[:2], "b": SENTENCES[2:4]}, corrector=None,
                             peer_python=kebbie_python, timeout_s=120)
    assert r["auto_correction"]["per_domain"].keys() == {"a", "b"}
    assert r["next_word_prediction"]["score"]["accuracy"] == 0  # no model: no suggestions
    with pytest.raises(ka.KebbieError, match="kebbie run failed"):
        ka.score_with_kebbie(SENTENCES[:1], corrector=None, peer_python=kebbie_python,
                             lang="xx-XX")
