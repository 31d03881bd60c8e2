"""Deterministic stand-in prompt ids, for engines whose model folder has no tokenizer.

The ids depend on the seed and the prompt text (or request id); the first
`prefix_tokens` depend only on the prefix key, so requests that share a prefix share its
ids and an engine's prefix cache can reuse them, as it would with real text.
"""

from __future__ import annotations

import random

from engines.base import Request

FIRST_PLAIN_ID = 3  # ids below this are special tokens (pad, BOS, EOS) in Llama-style vocabularies


def synthetic_prompt(request: Request, vocab_size: int, seed: int) -> list[int]:
    """`prompt_tokens` deterministic ids (at least one)."""
    n = max(1, request.prompt_tokens)
    hi = max(FIRST_PLAIN_ID + 1, vocab_size)
    ids: list[int] = []
    if request.prefix_key and request.prefix_tokens > 0:
        prng = random.Random(f"{seed}\0prefix\0{request.prefix_key}")
        ids = [prng.randrange(FIRST_PLAIN_ID, hi) for _ in range(min(n, request.prefix_tokens))]
    rng = random.Random(f"{seed}\0{request.prompt or request.request_id}")
    ids.extend(rng.randrange(FIRST_PLAIN_ID, hi) for _ in range(n - len(ids)))
    return ids
