"""Deterministic prompt text of a requested length.

Real engines need real language, the simulated twin only the token count. Text is
cut from a small bundled public-domain corpus (workloads/corpus/*.txt) starting at a
seeded offset. Without an engine tokenizer, lengths use a calibrated estimate of
tokens per word for English prose under Llama-3-style BPE tokenizers
(`engines.tokens`). When the engine declares a tokenizer, the runner installs it here
with `set_tokenizer` for the run (engines never import workloads); passages then hit
their token targets under it and `compose` counts whole prompts with it.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from engines.tokens import TOKENS_PER_WORD, TokenCounter, estimate_tokens

__all__ = ["TOKENS_PER_WORD", "Piece", "Tokenizer", "compose", "count_tokens",
           "estimate_tokens", "passage", "set_tokenizer", "using_tokenizer",
           "words_for_tokens"]


@lru_cache(maxsize=1)
def corpus_words() -> tuple[str, ...]:
    words: list[str] = []
    folder = resources.files("workloads") / "corpus"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".txt"):
            words.extend(entry.read_text(encoding="utf-8").split())
    if not words:
        raise RuntimeError("the bundled prompt corpus is missing (workloads/corpus/*.txt)")
    return tuple(words)


@lru_cache(maxsize=1)
def _joined() -> tuple[str, tuple[int, ...]]:
    """The corpus as one string of its words joined by single spaces, and where each
    word starts in it (one more entry: the length plus one): a passage is then one
    slice instead of a join of thousands of words."""
    words = corpus_words()
    starts = [0]
    for w in words:
        starts.append(starts[-1] + len(w) + 1)
    return " ".join(words), tuple(starts)


def words_for_tokens(tokens: int) -> int:
    return max(1, round(tokens / TOKENS_PER_WORD))


Tokenizer = TokenCounter  # text -> token count

# Process-wide, like the engine it comes from: one engine per run, installed by the runner.
_tokenizer: Tokenizer | None = None


def set_tokenizer(tokenizer: Tokenizer | None) -> None:
    """Count tokens with the engine's tokenizer from now on (None: the estimate)."""
    global _tokenizer
    _tokenizer = tokenizer


@contextlib.contextmanager
def using_tokenizer(tokenizer: Tokenizer | None) -> Iterator[None]:
    previous = _tokenizer
    set_tokenizer(tokenizer)
    try:
        yield
    finally:
        set_tokenizer(previous)


def count_tokens(text: str) -> int:
    """Tokens in `text`: the engine's tokenizer when one is installed, else the estimate."""
    if _tokenizer is not None:
        return _tokenizer(text)
    return estimate_tokens(text)


def passage(tokens: int, rng: random.Random) -> str:
    """About `tokens` tokens of running text from a seeded place in the corpus.

    Exactly one draw from `rng` whatever the tokenizer, so the text chosen for a seed
    does not depend on the engine; with a tokenizer the length is then trimmed or
    extended to the target."""
    words = corpus_words()
    start = rng.randrange(len(words))
    n = words_for_tokens(tokens)
    if _tokenizer is not None:
        n = _fit_words(tokens, start, n)
    return _cut(start, n)


def _cut(start: int, n: int) -> str:
    """`n` words from word `start`, wrapping around the corpus, joined by spaces."""
    # String slices of the joined corpus, not a join of words: this runs for every
    # prompt of a long virtual run, and a snippet is thousands of words.
    text, starts = _joined()
    count = len(starts) - 1
    parts = []
    while n > 0:
        take = min(n, count - start)
        parts.append(text[starts[start] : starts[start + take] - 1])
        n -= take
        start = 0
    return " ".join(parts)


def _fit_words(tokens: int, start: int, n: int) -> int:
    """The word count whose text has `tokens` tokens under the installed tokenizer,
    or the nearest below: a few proportional steps, then a short walk."""
    assert _tokenizer is not None
    for _ in range(4):
        have = _tokenizer(_cut(start, n))
        if have == tokens or have == 0:
            break
        n = max(1, round(n * tokens / have))
    while n > 1 and _tokenizer(_cut(start, n)) > tokens:
        n -= 1
    while _tokenizer(_cut(start, n + 1)) <= tokens:
        n += 1
    return n


@dataclass(frozen=True, slots=True)
class Piece:
    """Part of a prompt whose length is already known: a passage cut to a target, a
    parent's output as the engine counted it, a shared prompt."""

    text: str
    tokens: int


def compose(parts: Sequence[str | Piece]) -> tuple[str, int]:
    """Join prompt parts; return the text and its token count. With a tokenizer the
    whole text is counted; else literal strings are estimated together (one rounding,
    so splitting a literal does not change the count) and pieces add their own."""
    text = "".join(p if isinstance(p, str) else p.text for p in parts)
    if _tokenizer is not None:
        return text, _tokenizer(text)
    literal_words = sum(len(p.split()) for p in parts if isinstance(p, str))
    known = sum(p.tokens for p in parts if isinstance(p, Piece))
    return text, max(1, round(literal_words * TOKENS_PER_WORD) + known)
