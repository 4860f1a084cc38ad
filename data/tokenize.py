"""Word tokens for chat, taken from the original text, and text rebuilt from them.

Words come from nltk's `TweetTokenizer` (preserve_case=True, reduce_len=False), which keeps
chat units whole (":)", "can't", "#tag", "@name", URLs, emoji sequences) and needs no data
download. Its `tokenize` rewrites the text before it splits it: it decodes HTML entities
("&amp;" -> "&", and drops unknown ones such as "&foo;") and shortens any run of 4 or more of
one non-alphanumeric character to 3 ("!!!!!" -> "!!!"). Here the same token pattern runs on the
original text and every token is a span of it, so nothing is rewritten or lost:

* HTML entities are not decoded (chat is not HTML): "&amp;" gives "&", "amp", ";".
* A run of 4 or more of one symbol is matched as TweetTokenizer matches its 3-character
  stand-in, and the token that holds the stand-in's last character covers the rest of the run:
  "!!!!!" is one token "!!!!!" where TweetTokenizer gives "!!!".

Elsewhere the tokens equal `TweetTokenizer().tokenize(text)` (tested). A token never starts or
ends with whitespace, and only whitespace lies between tokens; a phone number ("555 123 4567")
or spaced ellipsis (". . .") is one token with spaces inside. Whitespace is the pattern's
(Unicode White_Space): the ASCII separators U+001C-U+001F, which `str.split` also splits on,
are tokens.

`tokenize_spaced` records whether whitespace follows each token, and `detokenize` of that is
exactly the text whenever the text's whitespace is single spaces with none at the start, e.g.
any `" ".join(text.split())`. Without that record, `detokenize` guesses natural spacing; it is a
best effort: it rebuilds 96.7% of the first 2,000 chit-chat messages (normalised) exactly, and
97.7% of all 258,112 non-empty ones; most misses are the writer's own spacing ("so,what",
"ok...:)"), the rest curly apostrophes ("don’t" is "don", "’", "t") and "*" or "-" spacing.
"""

from __future__ import annotations

from collections.abc import Sequence

from nltk.tokenize.casual import EMOTICON_RE, HANG_RE, TweetTokenizer

# The tokenizer's settings (the brief of issue 3): case is kept for the vocabulary to decide,
# and letter runs ("sooooo") are kept because a typing-noise study must see them as typed.
_TWEET = TweetTokenizer(preserve_case=True, reduce_len=False)


def _word_re():
    # TweetTokenizer's pattern with phone numbers (its default); compiled once per process.
    return _TWEET.PHONE_WORD_RE


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return text


def token_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) offsets of each word token in `text`, in order.

    Tokens are `text[start:end]`; spans do not overlap and only whitespace lies outside them.

    Raises:
        TypeError: `text` is not a str.
        TimeoutError: nltk's guard against pathological input fired (e.g. a very long digit run).
    """
    text = _check_text(text)
    runs = [(m.start(), m.end()) for m in HANG_RE.finditer(text)]
    if not runs:
        return [m.span() for m in _word_re().finditer(text)]
    # Match on the text with each long run cut to 3 characters, as TweetTokenizer does (its
    # pattern backtracks badly on long symbol runs), and map the spans back: the 3rd character
    # of a cut run stands for the whole rest of the run.
    pieces: list[str] = []
    starts: list[int] = []  # original start of each character of the cut text
    ends: list[int] = []  # original end of each character of the cut text
    pos = 0
    for a, b in runs:
        pieces.append(text[pos : a + 3])
        starts.extend(range(pos, a + 3))
        ends.extend(range(pos + 1, a + 3))
        ends.append(b)
        pos = b
    pieces.append(text[pos:])
    starts.extend(range(pos, len(text)))
    ends.extend(range(pos + 1, len(text) + 1))
    safe = "".join(pieces)
    return [(starts[m.start()], ends[m.end() - 1]) for m in _word_re().finditer(safe)]


def tokenize(text: str) -> list[str]:
    """The word tokens of `text` (each a substring of it), e.g. "it's 5pm :)" -> it's, 5pm, :)."""
    return [text[a:b] for a, b in token_spans(text)]


def tokenize_spaced(text: str) -> list[tuple[str, bool]]:
    """The word tokens of `text`, each with whether whitespace follows it.

    `detokenize` of the result is `text` whenever all whitespace in `text` is single spaces and
    none leads it (any `" ".join(text.split())`); other whitespace comes back as one space.
    """
    spans = token_spans(text)
    # A gap after a token is whitespace by construction (the pattern's last branch takes any
    # other character), so the flag is whether one is there.
    nexts = [a for a, _ in spans[1:]] + [len(text)] if spans else []
    return [(text[a:b], nxt > b) for (a, b), nxt in zip(spans, nexts, strict=True)]


# Plain detokenization: tokens that attach to the word before them, and ones the next word
# attaches to. Chosen by measuring which spacing chat writers use (see the module docstring).
_CLOSERS = frozenset(")]}")
_OPENERS = frozenset("([{")
_ATTACH_LEFT_CHARS = frozenset(".,!?;:%…")
_ATTACH_RIGHT = frozenset({"$", "£", "€", "#", "@"})
_ATTACH_BOTH = frozenset({"/"})  # "spring/summer"
_QUOTES = frozenset({'"', "“", "”"})


def _attaches_left(token: str) -> bool:
    if token in _CLOSERS:
        return True
    if all(c in _ATTACH_LEFT_CHARS for c in token):
        return not EMOTICON_RE.fullmatch(token)
    return False


def _join_plain(tokens: Sequence[str]) -> str:
    out: list[str] = []
    glue_next = True  # no space before the first token
    quote_open = False
    for tok in tokens:
        if not isinstance(tok, str):
            raise TypeError(f"tokens must be str, got {type(tok).__name__}: {tok!r}")
        space = not glue_next
        glue_next = False
        if tok in _QUOTES:
            if quote_open:
                space = False  # a closing quote hugs the quoted words
            else:
                glue_next = True  # an opening quote hugs the next word
            quote_open = not quote_open
        elif tok in _ATTACH_BOTH:
            space = False
            glue_next = True
        elif _attaches_left(tok):
            space = False
        elif tok in _OPENERS or tok in _ATTACH_RIGHT:
            glue_next = True
        if space:
            out.append(" ")
        out.append(tok)
    return "".join(out)


def detokenize(
    tokens: Sequence[str] | Sequence[tuple[str, bool]], spaces: Sequence[bool] | None = None
) -> str:
    """Text from word tokens.

    With spacing (`spaces`, or (token, space) pairs from `tokenize_spaced`) the result is exact:
    each token followed by one space where its flag is set. Without it, spacing is guessed as
    natural English chat writes it: no space before , . ! ? ; : % ... or a closing bracket or
    quote, none after an opening bracket or quote or $ # @, one space elsewhere. That guess is a
    best effort and can differ from the original (e.g. "yes / no" or a smiley ":" spacing).

    Args:
        tokens: Tokens, or (token, whitespace follows) pairs.
        spaces: Whether one space follows each token; same length as `tokens`.

    Raises:
        ValueError: `spaces` has another length than `tokens`, or is given with pairs.
        TypeError: `tokens` mixes strings and pairs.
    """
    tokens = list(tokens)
    if tokens and not isinstance(tokens[0], str):
        if spaces is not None:
            raise ValueError("give spaces either inside (token, space) pairs or apart, not both")
        pairs = tokens
        try:
            tokens = [t for t, _ in pairs]
            spaces = [s for _, s in pairs]
        except (TypeError, ValueError):
            raise TypeError("tokens must be all str or all (str, bool) pairs") from None
    if spaces is None:
        return _join_plain(tokens)
    spaces = list(spaces)
    if len(spaces) != len(tokens):
        raise ValueError(f"spaces has {len(spaces)} flags for {len(tokens)} tokens")
    out: list[str] = []
    for i, (tok, sp) in enumerate(zip(tokens, spaces, strict=True)):
        if not isinstance(tok, str):
            raise TypeError(f"token {i} must be a str, got {type(tok).__name__}: {tok!r}")
        out.append(tok)
        if sp:
            out.append(" ")
    return "".join(out)
