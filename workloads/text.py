"""Deterministic prompt text of a requested length.

Real engines need real language, the simulated twin only the token count. Text is
cut from a small bundled public-domain corpus (workloads/corpus/*.txt) starting at a
seeded offset. Without an engine tokenizer, lengths use a calibrated estimate of
tokens per word for English prose under Llama-3-style BPE tokenizers.
"""

from __future__ import annotations

import random
from functools import lru_cache
from importlib import resources

TOKENS_PER_WORD = 1.33  # English prose, Llama-3 tokenizer: ~0.75 words per token


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


def estimate_tokens(text: str) -> int:
    return max(1, round(len(text.split()) * TOKENS_PER_WORD))


def words_for_tokens(tokens: int) -> int:
    return max(1, round(tokens / TOKENS_PER_WORD))


def passage(tokens: int, rng: random.Random) -> str:
    """About `tokens` tokens of running text from a seeded place in the corpus."""
    words = corpus_words()
    n = words_for_tokens(tokens)
    start = rng.randrange(len(words))
    out = [words[(start + i) % len(words)] for i in range(n)]
    return " ".join(out)
