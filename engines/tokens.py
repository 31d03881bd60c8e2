"""Token counts of text: the type of a tokenizer and the estimate used without one.

Here, not in workloads, because both sides count: workloads size prompts, and an
engine whose API returns no token counts (Parrot) counts its outputs. An engine with a
real tokenizer declares it (`engines.base.HasTokenizer`); the runner hands it on.
"""

from __future__ import annotations

from collections.abc import Callable

TOKENS_PER_WORD = 1.33  # English prose, Llama-3 tokenizer: ~0.75 words per token

TokenCounter = Callable[[str], int]  # text -> token count


def estimate_tokens(text: str) -> int:
    return max(1, round(len(text.split()) * TOKENS_PER_WORD))
