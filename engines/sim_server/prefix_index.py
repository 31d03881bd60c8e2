"""Which leading part of a prompt the server has seen before, for the twin's prefix cache.

Over HTTP a prompt carries no prefix key: like vLLM's automatic prefix caching, the
server hashes the prompt block by block (each hash chained to the ones before it) and
takes the longest run of leading blocks seen in an earlier prompt as the shared prefix,
named by its last block's hash. The twin caches a prefix once a request naming it has
computed it, so the first two prompts sharing a prefix compute it and the third on
reuse it (vLLM reuses from the second: a small pessimism, on long-shared prompts only).
"""

from __future__ import annotations

from collections import OrderedDict

from engines.tokens import TOKENS_PER_WORD

WORDS_PER_BLOCK = 12  # ~16 tokens, vLLM's block size
IDS_PER_BLOCK = 16
MAX_BLOCKS = 200_000  # hashes remembered (LRU): bounded memory on a long-running server


class PrefixIndex:
    def __init__(self, max_blocks: int = MAX_BLOCKS) -> None:
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._max = max_blocks

    def lookup(self, text: str, token_ids: list[int] | None) -> tuple[str | None, int]:
        """(prefix key, prefix tokens) of the longest leading run of blocks seen before
        (None, 0 if none); remembers this prompt's blocks."""
        if token_ids is not None:
            units: list[object] = list(token_ids)
            per_block, tokens_per_unit = IDS_PER_BLOCK, 1.0
        else:
            units = list(text.split())
            per_block, tokens_per_unit = WORDS_PER_BLOCK, TOKENS_PER_WORD
        seen = self._seen
        h = 0
        shared_blocks = 0
        shared_hash = 0
        matching = True
        # Only full blocks, never the whole prompt (its last token is always computed).
        for k in range((len(units) - 1) // per_block):
            h = hash((h, tuple(units[k * per_block:(k + 1) * per_block])))
            if matching and h in seen:
                shared_blocks, shared_hash = k + 1, h
                seen.move_to_end(h)
            else:
                matching = False
                seen[h] = None
        while len(seen) > self._max:
            seen.popitem(last=False)
        if not shared_blocks:
            return None, 0
        return f"b{shared_hash & 0xFFFFFFFFFFFF:x}", round(shared_blocks * per_block *
                                                           tokens_per_unit)
