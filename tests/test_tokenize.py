"""Tests for data.tokenize: goldens, spans from the original text, and exact round trips."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nltk.tokenize import TweetTokenizer

from data.chitchat import iter_messages
from data.tokenize import detokenize, token_spans, tokenize, tokenize_spaced


@pytest.fixture(scope="module")
def chat():
    return [" ".join(m["text"].split()) for m in iter_messages(limit=2000)]


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("I can't believe it's 5pm :)", ["I", "can't", "believe", "it's", "5pm", ":)"]),
        ("Hello, world!", ["Hello", ",", "world", "!"]),
        (
            "@bob see #fun at https://x.com/a?b=1 <3",
            ["@bob", "see", "#fun", "at", "https://x.com/a?b=1", "<3"],
        ),
        ("call 555 123 4567 now", ["call", "555 123 4567", "now"]),
        ("wait. . . what", ["wait", ". . .", "what"]),
        ("ok 👍🏽 🇺🇸", ["ok", "👍🏽", "🇺🇸"]),
        # Not decoded, unlike TweetTokenizer ("&"): tokens are spans of the text.
        ("Tom &amp; Jerry", ["Tom", "&", "amp", ";", "Jerry"]),
        # TweetTokenizer cuts the run to "!!!" and gives "!", "!", "!"; the last covers the rest.
        ("wow!!!!! ok", ["wow", "!", "!", "!!!", "ok"]),
        ("", []),
        ("   ", []),
    ],
)
def test_goldens(text, tokens):
    assert tokenize(text) == tokens


def test_spaced_golden():
    assert tokenize_spaced("Hi , you!  ok ") == [
        ("Hi", True),
        (",", True),
        ("you", False),
        ("!", True),
        ("ok", True),
    ]


def test_separator_controls_are_tokens_and_round_trip():
    # Python counts \x1c-\x1f as whitespace, the tokenizer's pattern does not: they are tokens.
    text = "a\x1cb c"
    assert tokenize(text) == ["a", "\x1c", "b", "c"]
    assert detokenize(tokenize_spaced(text)) == text


def test_spans_are_the_tokens_and_only_whitespace_lies_between():
    text = "  so,what?!!!!  555-123-4567 \t :-) "
    spans = token_spans(text)
    assert [text[a:b] for a, b in spans] == tokenize(text)
    pos = 0
    for a, b in spans:
        assert a >= pos and b > a
        assert text[pos:a].strip() == ""
        pos = b
    assert text[pos:].strip() == ""


def test_long_symbol_run_is_one_token_and_fast():
    text = "no" + "!" * 20000 + " way"
    t0 = time.perf_counter()
    toks = tokenize(text)
    assert time.perf_counter() - t0 < 2.0
    assert toks == ["no", "!", "!", "!" * 19998, "way"]


normal_text = st.text(max_size=80).map(lambda t: " ".join(t.split()))
chatty_text = st.text(
    alphabet=st.sampled_from(list("aAbz09 .,!?'\"-:;()/@#&$*…’😀👍🏽") + ["\u200d"]), max_size=60
).map(lambda t: " ".join(t.split()))


@settings(max_examples=300, deadline=None)
@given(st.one_of(normal_text, chatty_text))
def test_spaced_round_trip_is_exact(text):
    assert detokenize(tokenize_spaced(text)) == text
    toks = tokenize(text)
    spaced = tokenize_spaced(text)
    assert [t for t, _ in spaced] == toks
    assert detokenize(toks, [s for _, s in spaced]) == text
    assert "".join(toks) == text.replace(" ", "") or any(" " in t for t in toks)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_other_whitespace_comes_back_as_single_spaces(text):
    # Exact only where the text's whitespace is single spaces; otherwise normalised.
    rebuilt = detokenize(tokenize_spaced(text))
    assert rebuilt.split() == " ".join(text.split()).split() or any(
        " " in t for t in tokenize(text)
    )


@settings(max_examples=200, deadline=None)
@given(chatty_text.filter(lambda t: "&" not in t))
def test_equals_tweet_tokenizer_without_entities_or_long_runs(text):
    if any(text[i] == text[i + 1] == text[i + 2] == text[i + 3] for i in range(len(text) - 3)):
        return  # runs of 4+ are handled apart (test_goldens)
    assert tokenize(text) == TweetTokenizer(preserve_case=True, reduce_len=False).tokenize(text)


def test_chat_round_trip(chat):
    assert all(detokenize(tokenize_spaced(t)) == t for t in chat)
    # Plain detokenization is a best effort: 96.7% exact on this slice when written.
    exact = sum(detokenize(tokenize(t)) == t for t in chat)
    assert exact / len(chat) >= 0.95, exact


@pytest.mark.parametrize(
    "tokens, text",
    [
        (["Hello", ",", "world", "!"], "Hello, world!"),
        (["I", "said", '"', "hi", '"', "."], 'I said "hi".'),
        (["it", "costs", "$", "5", "(", "or", "so", ")", "..."], "it costs $5 (or so)..."),
        (["spring", "/", "summer", "50", "%"], "spring/summer 50%"),
        (["nice", ":)", "ok", ":"], "nice :) ok:"),
        (["I", "can't", "believe", "it's", "5pm", ":)"], "I can't believe it's 5pm :)"),
        ([], ""),
    ],
)
def test_plain_detokenize_goldens(tokens, text):
    assert detokenize(tokens) == text


def test_bad_input():
    with pytest.raises(TypeError):
        tokenize(b"bytes")
    with pytest.raises(ValueError, match="2 flags for 1 tokens"):
        detokenize(["a"], [True, False])
    with pytest.raises(ValueError):
        detokenize([("a", True)], [True])
    with pytest.raises(TypeError):
        detokenize([("a", True), "b"])
