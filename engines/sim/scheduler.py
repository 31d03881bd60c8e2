"""vLLM-style continuous batching (the v1 scheduler's policy), without time.

Each step has a token budget (max_num_batched_tokens). Running requests are served
first, in admission order: one token for a decoding request, the next prompt chunk
for one still in prefill (chunked prefill). Waiting requests are then admitted in
arrival order while the budget, max_num_seqs and the KV cache allow. The KV cache is
counted in blocks of 16 tokens; when a running request cannot get a block, the
newest running request is preempted (its blocks freed, recomputed from scratch
later, prompt and output so far). Prefix caching: a request carrying
`prefix_key`/`prefix_tokens` registers its prefix's full blocks once computed; a
later request with the same key starts with those tokens already computed and
shares their blocks. Unreferenced cached prefixes are evicted LRU under pressure.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from engines.base import Progress, Request, TokenEvent

BLOCK_TOKENS = 16


@dataclass(slots=True, eq=False)
class PrefixEntry:
    key: str
    tokens: int
    blocks: int
    refs: int = 0


@dataclass(slots=True, eq=False)
class Seq:
    """One request inside the engine."""

    req: Request
    prompt: int
    max_tokens: int
    num_output: int = 0
    num_computed: int = 0  # tokens whose KV is in the cache
    own_blocks: int = 0
    prefix: PrefixEntry | None = None
    prefix_hit: int = 0  # leading tokens covered by `prefix`'s shared blocks
    pending_prefill: int = 0  # prompt tokens computed since the last event
    pending_decode: int = 0  # output tokens since the last event
    last_event_t: float = 0.0
    finished: bool = False
    aborted: bool = False
    preemptions: int = 0
    events: list[TokenEvent] = field(default_factory=list)
    waiter: asyncio.Future[None] | None = None
    progress: Progress | None = None  # InlineProgress's callback, if the consumer gave one
    first_sent: bool = False  # an event with output tokens has gone into `events`

    @property
    def num_tokens(self) -> int:
        return self.prompt + self.num_output

    @property
    def shared_len(self) -> int:
        """Prompt tokens that can come from (or go into) the prefix cache: full
        blocks only, and never the whole prompt (the last token is always computed)."""
        if self.req.prefix_key is None or self.req.prefix_tokens <= 0:
            return 0
        n = min(self.req.prefix_tokens, self.prompt - 1)
        return (n // BLOCK_TOKENS) * BLOCK_TOKENS

    def push(self, ev: TokenEvent) -> None:
        self.events.append(ev)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


def _blocks(tokens: int) -> int:
    return -(-tokens // BLOCK_TOKENS)


class Scheduler:
    def __init__(
        self,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        kv_blocks: int,
        prefix_caching: bool,
    ) -> None:
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.total_blocks = kv_blocks
        self.prefix_caching = prefix_caching
        self.waiting: deque[Seq] = deque()
        self.running: list[Seq] = []
        self.used_blocks = 0
        self.prefixes: OrderedDict[str, PrefixEntry] = OrderedDict()
        self.preempted_total = 0
        self.aborted_pending = 0  # abort() calls since the last reap_aborted()
        self.prefix_queried_tokens = 0
        self.prefix_hit_tokens = 0

    # ---- bookkeeping ----------------------------------------------------------------

    @property
    def free_blocks(self) -> int:
        return self.total_blocks - self.used_blocks

    @property
    def evictable_blocks(self) -> int:
        return sum(e.blocks for e in self.prefixes.values() if e.refs == 0)

    def kv_usage(self) -> float:
        """Fraction of blocks held by live requests (cached-but-free prefixes count as
        free, as in vLLM's kv_cache_usage)."""
        if self.total_blocks == 0:
            return 0.0
        return (self.used_blocks - self.evictable_blocks) / self.total_blocks

    def prefix_hit_rate(self) -> float:
        if self.prefix_queried_tokens == 0:
            return 0.0
        return self.prefix_hit_tokens / self.prefix_queried_tokens

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def add(self, seq: Seq) -> None:
        self.waiting.append(seq)

    def abort(self, seq: Seq) -> None:
        """The request's consumer went away: `reap_aborted` frees it before the next step."""
        seq.aborted = True
        self.aborted_pending += 1

    def reap_aborted(self) -> None:
        if not self.aborted_pending:
            return  # the common case: nothing to scan
        self.aborted_pending = 0
        if any(s.aborted for s in self.running):
            for s in [s for s in self.running if s.aborted]:
                self._release(s)
                self.running.remove(s)
        if any(s.aborted for s in self.waiting):
            self.waiting = deque(s for s in self.waiting if not s.aborted)

    def _need_blocks(self, seq: Seq, n: int) -> int:
        return _blocks(seq.num_computed + n - seq.prefix_hit) - seq.own_blocks

    def _reserve(self, need: int) -> bool:
        """Make `need` blocks free, evicting unreferenced cached prefixes (LRU)."""
        if need <= self.free_blocks:
            return True
        if need > self.free_blocks + self.evictable_blocks:
            return False
        for key in list(self.prefixes):
            e = self.prefixes[key]
            if e.refs == 0:
                del self.prefixes[key]
                self.used_blocks -= e.blocks
                if need <= self.free_blocks:
                    return True
        return need <= self.free_blocks

    def _alloc(self, seq: Seq, need: int) -> None:
        if need > 0:
            seq.own_blocks += need
            self.used_blocks += need

    def _release(self, seq: Seq) -> None:
        self.used_blocks -= seq.own_blocks
        seq.own_blocks = 0
        if seq.prefix is not None:
            seq.prefix.refs -= 1
            seq.prefix = None
        seq.prefix_hit = 0

    def _preempt(self, seq: Seq) -> None:
        self._release(seq)
        # Recompute: prompt and the output so far are prefilled again.
        seq.num_computed = 0
        seq.preemptions += 1
        self.preempted_total += 1
        self.waiting.appendleft(seq)

    def _lookup_prefix(self, seq: Seq) -> None:
        self.prefix_queried_tokens += seq.prompt
        shared = seq.shared_len
        if not self.prefix_caching or shared == 0 or seq.num_computed > 0:
            return
        entry = self.prefixes.get(seq.req.prefix_key or "")
        if entry is None:
            return
        hit = min(entry.tokens, shared)
        seq.prefix, seq.prefix_hit, seq.num_computed = entry, hit, hit
        entry.refs += 1
        self.prefixes.move_to_end(entry.key)
        self.prefix_hit_tokens += hit

    def _unlookup_prefix(self, seq: Seq) -> None:
        self.prefix_queried_tokens -= seq.prompt
        if seq.prefix is not None:
            self.prefix_hit_tokens -= seq.prefix_hit
            seq.prefix.refs -= 1
            seq.prefix, seq.prefix_hit, seq.num_computed = None, 0, 0

    def register_prefix(self, seq: Seq) -> None:
        """After a step: cache the prefix blocks this request has just computed."""
        shared = seq.shared_len
        key = seq.req.prefix_key
        if (not self.prefix_caching or key is None or shared == 0 or seq.prefix is not None
                or seq.num_computed < shared or key in self.prefixes):
            return
        entry = PrefixEntry(key=key, tokens=shared, blocks=shared // BLOCK_TOKENS, refs=1)
        self.prefixes[key] = entry
        # The blocks move from the request to the cache entry: no new memory.
        seq.own_blocks -= entry.blocks
        seq.prefix, seq.prefix_hit = entry, shared

    # ---- one step -------------------------------------------------------------------

    def schedule(self) -> list[tuple[Seq, int]]:
        """Pick the next step's (request, tokens to compute) pairs."""
        budget = self.max_num_batched_tokens
        out: list[tuple[Seq, int]] = []
        preempted = False
        i = 0
        running = self.running
        n_running = len(running)
        append = out.append
        while i < n_running and budget > 0:
            seq = running[i]
            computed = seq.num_computed
            n = seq.prompt + seq.num_output - computed
            if n > budget:
                n = budget
            need = (computed + n - seq.prefix_hit + BLOCK_TOKENS - 1) // BLOCK_TOKENS \
                - seq.own_blocks
            if need > 0:
                self_preempted = False
                while not self._reserve(need):
                    victim = running.pop()
                    n_running -= 1
                    self._preempt(victim)
                    preempted = True
                    if victim is seq:
                        self_preempted = True
                        break
                if self_preempted:
                    break  # `seq` was the newest: nothing after it is running
                seq.own_blocks += need
                self.used_blocks += need
            append((seq, n))
            budget -= n
            i += 1
        if preempted:
            return out  # vLLM admits nothing in a step that had to preempt
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            self._lookup_prefix(seq)
            n = min(seq.num_tokens - seq.num_computed, budget)
            need = self._need_blocks(seq, n)
            if not self._reserve(need):
                self._unlookup_prefix(seq)
                break
            self.waiting.popleft()
            self._alloc(seq, need)
            self.running.append(seq)
            out.append((seq, n))
            budget -= n
        return out

    def clear(self) -> None:
        """Drop every request (the engine stopped); cached prefixes stay evictable."""
        for seq in self.running:
            self._release(seq)
        self.running.clear()
        self.waiting.clear()

    def finish(self, seq: Seq) -> None:
        seq.finished = True
        self._release(seq)
        self.running.remove(seq)
