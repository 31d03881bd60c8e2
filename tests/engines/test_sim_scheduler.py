"""The twin's vLLM-style scheduler, step by step (no time involved)."""

from __future__ import annotations

from engines.base import Request
from engines.sim.scheduler import BLOCK_TOKENS, Scheduler, Seq


def seq(rid: str, prompt: int, out: int, key: str | None = None, shared: int = 0) -> Seq:
    return Seq(req=Request(rid, "", prompt, out, prefix_key=key, prefix_tokens=shared),
               prompt=prompt, max_tokens=out)


def commit(sch: Scheduler, batch: list[tuple[Seq, int]]) -> None:
    """What the engine does after a step: advance, sample, finish."""
    for s, n in batch:
        s.num_computed += n
        sch.register_prefix(s)
        if s.num_computed == s.num_tokens:
            s.num_output += 1
            if s.num_output >= s.max_tokens:
                sch.finish(s)


def make(**kw: int | bool) -> Scheduler:
    args: dict[str, int | bool] = {"max_num_seqs": 256, "max_num_batched_tokens": 8192,
                                   "kv_blocks": 10_000, "prefix_caching": True}
    args.update(kw)
    return Scheduler(**args)  # type: ignore[arg-type]


def test_chunked_prefill_puts_decode_first_and_fills_the_budget() -> None:
    sch = make(max_num_batched_tokens=1000)
    a = seq("a", 10, 100)
    sch.add(a)
    commit(sch, sch.schedule())  # a's prefill -> first token
    big = seq("big", 2500, 5)
    sch.add(big)
    steps = []
    for _ in range(3):
        batch = sch.schedule()
        steps.append([(s.req.request_id, n) for s, n in batch])
        commit(sch, batch)
    assert steps[0] == [("a", 1), ("big", 999)]
    assert steps[1] == [("a", 1), ("big", 999)]
    assert steps[2] == [("a", 1), ("big", 502)]
    assert big.num_output == 1  # the prefill finished in the third chunk


def test_max_num_seqs_limits_admission() -> None:
    sch = make(max_num_seqs=3)
    for i in range(5):
        sch.add(seq(f"r{i}", 20, 10))
    batch = sch.schedule()
    assert len(batch) == 3 and len(sch.waiting) == 2


def test_kv_pressure_preempts_the_newest_and_recomputes_it() -> None:
    sch = make(kv_blocks=10)  # 160 tokens
    old, new = seq("old", 60, 200), seq("new", 60, 200)
    sch.add(old)
    sch.add(new)
    preempted_at = None
    for step in range(200):
        commit(sch, sch.schedule())
        if sch.preempted_total and preempted_at is None:
            preempted_at = step
            assert new in sch.waiting and old in sch.running  # newest goes first
            assert new.num_computed == 0 and new.own_blocks == 0
    assert preempted_at is not None
    assert sch.used_blocks <= sch.total_blocks


def test_prefix_is_shared_once_computed_and_evicted_lru_under_pressure() -> None:
    sch = make(kv_blocks=400)
    first = seq("first", 1000, 1, key="sys", shared=800)
    sch.add(first)
    commit(sch, sch.schedule())
    assert "sys" in sch.prefixes and first.finished
    assert sch.prefixes["sys"].refs == 0  # cached, unreferenced: evictable
    assert sch.kv_usage() == 0.0

    second = seq("second", 1000, 1, key="sys", shared=800)
    sch.add(second)
    batch = sch.schedule()
    assert batch == [(second, 200)]  # only the tokens after the cached prefix
    commit(sch, batch)
    assert sch.prefix_hit_tokens == 800

    # A request too big for the free blocks evicts the unreferenced prefix.
    hog = seq("hog", 390 * BLOCK_TOKENS, 1)
    sch.add(hog)
    sch.schedule()
    assert "sys" not in sch.prefixes


def test_prefix_hit_stays_block_aligned_and_leaves_a_token_to_compute() -> None:
    sch = make()
    a = seq("a", 100, 1, key="k", shared=100)  # whole prompt shared
    sch.add(a)
    commit(sch, sch.schedule())
    assert sch.prefixes["k"].tokens == 96  # full blocks only, never the last token
    b = seq("b", 100, 1, key="k", shared=100)
    sch.add(b)
    assert sch.schedule() == [(b, 4)]


def test_prefix_caching_off_never_hits() -> None:
    sch = make(prefix_caching=False)
    for i in range(3):
        s = seq(f"r{i}", 500, 1, key="k", shared=400)
        sch.add(s)
        batch = sch.schedule()
        assert batch == [(s, 500)]
        commit(sch, batch)
    assert sch.prefix_hit_rate() == 0.0 and not sch.prefixes
