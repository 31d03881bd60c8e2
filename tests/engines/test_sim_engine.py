"""Behaviour of the simulated twin as an engine: what a researcher relies on it for.

Every test runs on virtual time (app.core.clock.run_async(virtual=True)), so simulated
minutes take milliseconds.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import pytest

from app.core.clock import LoopClock, run_async
from app.core.events import EngineStateEvent, Event
from engines.base import EngineContext, EngineError, Request, TokenEvent
from engines.sim.engine import SimEngine, SimOptionError


@dataclass
class Run:
    engine: SimEngine
    elapsed_s: float
    energy_j: float
    events: dict[str, list[TokenEvent]]
    submitted: dict[str, float]
    emitted: list[Event] = field(default_factory=list)

    @property
    def output_tokens(self) -> int:
        return sum(sum(e.decode_tokens for e in evs) for evs in self.events.values())

    @property
    def j_per_token(self) -> float:
        return self.energy_j / self.output_tokens

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.elapsed_s

    @property
    def avg_power_w(self) -> float:
        return self.energy_j / self.elapsed_s

    def latency_s(self, rid: str) -> float:
        return self.events[rid][-1].t_s - self.submitted[rid]


def drive(
    requests: list[Request],
    *,
    concurrency: int,
    options: dict[str, Any] | None = None,
    cap_w: float | None = None,
) -> Run:
    """Send `requests` with at most `concurrency` in flight (a client semaphore)."""

    async def main() -> Run:
        emitted: list[Event] = []
        ctx = EngineContext(clock=LoopClock(), emit=emitted.append)
        engine = SimEngine.from_options(ctx, options or {})
        await engine.start()
        if cap_w is not None:
            engine.twin.set_power_limit(cap_w)
        sem = asyncio.Semaphore(concurrency)
        events: dict[str, list[TokenEvent]] = {}
        submitted: dict[str, float] = {}

        async def one(r: Request) -> None:
            async with sem:
                submitted[r.request_id] = ctx.clock.now()
                events[r.request_id] = [ev async for ev in engine.generate(r)]

        t0 = ctx.clock.now()
        await asyncio.gather(*(one(r) for r in requests))
        t1 = ctx.clock.now()
        energy = engine.twin.energy_j(t1) - engine.twin.energy_j(t0)
        await engine.stop()
        return Run(engine, t1 - t0, energy, events, submitted, emitted)

    result: Run = run_async(main(), virtual=True)
    return result


def reqs(n: int, prompt: int, out: int, prefix: str = "r") -> list[Request]:
    return [Request(f"{prefix}{i}", "", prompt, out) for i in range(n)]


def test_token_events_first_coalesced_and_final() -> None:
    run = drive([Request("a", "", 300, 120)], concurrency=1)
    evs = run.events["a"]
    first, last = evs[0], evs[-1]
    assert first.prefill_tokens == 300 and first.decode_tokens == 1 and not first.finished
    assert last.finished and last.finish_reason == "length"
    assert last.output_tokens == 120 and last.prompt_tokens == 300
    assert sum(e.decode_tokens for e in evs) == 120
    assert all(not e.finished for e in evs[:-1])
    # Coalesced: far fewer events than tokens, and never two within the interval
    # (except the final one, which is always sent).
    assert len(evs) < 120 / 3
    gaps = [b.t_s - a.t_s for a, b in itertools.pairwise(evs[1:-1])]
    assert min(gaps) >= 0.05 - 1e-9
    assert all(b.t_s >= a.t_s for a, b in itertools.pairwise(evs))


def test_one_event_per_token_when_interval_is_zero() -> None:
    run = drive([Request("a", "", 50, 20)], concurrency=1,
                options={"token_event_interval_s": 0})
    assert [e.decode_tokens for e in run.events["a"]] == [1] * 20


def test_deterministic_for_a_seed_and_seed_matters() -> None:
    def once(seed: int) -> list[tuple[str, float, int]]:
        rs = [*reqs(12, 180, 60), Request("late", "", 900, 30, prefix_key="p", prefix_tokens=600)]
        run = drive(rs, concurrency=5, options={"seed": seed})
        return [(rid, e.t_s, e.decode_tokens) for rid, evs in sorted(run.events.items())
                for e in evs] + [("energy", run.energy_j, 0)]

    a, b, c = once(3), once(3), once(4)
    assert a == b
    assert a != c  # the seed drives the small step-time jitter


def test_batching_raises_throughput_and_cuts_energy_per_token() -> None:
    work = reqs(64, 150, 100)
    serial = drive(work, concurrency=1)
    batched = drive(work, concurrency=32)
    assert batched.output_tokens == serial.output_tokens == 6400
    assert batched.tokens_per_s > 5 * serial.tokens_per_s
    assert batched.j_per_token < 0.5 * serial.j_per_token
    assert batched.avg_power_w > serial.avg_power_w  # a busier GPU draws more


def test_power_cap_saves_energy_on_decode_at_a_smaller_latency_cost() -> None:
    work = reqs(32, 120, 400)
    full = drive(work, concurrency=32)
    capped = drive(work, concurrency=32, cap_w=0.6 * 700)
    power_drop = 1 - capped.avg_power_w / full.avg_power_w
    latency_rise = capped.elapsed_s / full.elapsed_s - 1
    assert capped.avg_power_w <= 420 * 1.001
    assert power_drop > 0.1
    assert capped.j_per_token < full.j_per_token
    assert 0 <= latency_rise < power_drop


def test_power_cap_slows_compute_bound_prefill() -> None:
    work = reqs(16, 4000, 1)  # prefill only: compute-bound
    full = drive(work, concurrency=16)
    capped = drive(work, concurrency=16, cap_w=300)
    assert capped.elapsed_s > 1.3 * full.elapsed_s
    assert capped.avg_power_w < full.avg_power_w


def test_energy_grows_linearly_with_output_length() -> None:
    lengths = [100, 200, 400]
    energies = [drive(reqs(16, 200, n), concurrency=16).energy_j for n in lengths]
    # Least-squares line through the three points; every point within 3% of it.
    mx = sum(lengths) / 3
    my = sum(energies) / 3
    slope = sum((x - mx) * (y - my) for x, y in zip(lengths, energies, strict=True)) / sum(
        (x - mx) ** 2 for x in lengths)
    for x, y in zip(lengths, energies, strict=True):
        assert abs(y - (my + slope * (x - mx))) / y < 0.03
    assert energies[2] > 3 * energies[0]  # and it does grow


def test_sequential_chain_gains_nothing_from_a_higher_cap() -> None:
    async def chain(max_num_seqs: int) -> float:
        ctx = EngineContext(clock=LoopClock(), emit=lambda _e: None)
        engine = SimEngine.from_options(ctx, {"max_num_seqs": max_num_seqs})
        await engine.start()
        summary = 0
        for i in range(15):  # each step needs the previous step's summary
            async for ev in engine.generate(Request(f"s{i}", "", 1024 + summary, 50)):
                summary = ev.output_tokens or 0
        t = ctx.clock.now()
        await engine.stop()
        return t

    t1 = run_async(chain(1), virtual=True)
    t64 = run_async(chain(64), virtual=True)
    assert abs(t64 - t1) / t1 < 0.02


def test_tiny_kv_cache_preempts_and_still_finishes_everything() -> None:
    # 0.05 GiB holds 409 tokens: far less than 8 requests x 260 tokens.
    run = drive(reqs(8, 100, 160), concurrency=8, options={"kv_cache_gb": 0.05})
    assert run.engine.sched.preempted_total > 0
    for evs in run.events.values():
        assert evs[-1].finished and evs[-1].output_tokens == 160
        assert sum(e.decode_tokens for e in evs) == 160
    # Recomputation is real work: more prefill than the prompts alone.
    prefill = sum(e.prefill_tokens for evs in run.events.values() for e in evs)
    assert prefill > 8 * 100
    states = [e for e in run.emitted if isinstance(e, EngineStateEvent)]
    assert max(s.preempted_total or 0 for s in states) > 0
    roomy = drive(reqs(8, 100, 160), concurrency=8)
    assert roomy.engine.sched.preempted_total == 0


def test_fast_forwarded_decode_never_overdraws_a_tight_kv_pool(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of decode steps are planned several steps at once, their KV blocks checked
    against the pool as a sum: in a pool too small for every request's next 16 tokens,
    no request ever holds blocks the pool lacks, each holds exactly the blocks its
    tokens fill after every commit, and everything finishes."""
    checks: list[tuple[int, int, int, bool]] = []  # (requests, steps, free blocks, room)
    commits: list[int] = []  # steps committed at once
    room_for, commit = SimEngine._room_for, SimEngine._commit_decode

    def checked_room(self: SimEngine, batch: Any, k: int) -> bool:
        room = room_for(self, batch, k)
        checks.append((len(batch), k, self.sched.free_blocks, room))
        return room

    def checked_commit(self: SimEngine, batch: Any, k: int, t: float) -> None:
        commit(self, batch, k, t)
        sch = self.sched
        held = 0
        for seq in sch.running:
            assert seq.own_blocks == -(-seq.num_computed // 16), "blocks of its tokens"
            held += seq.own_blocks
        assert sch.used_blocks == held <= sch.total_blocks
        commits.append(k)

    monkeypatch.setattr(SimEngine, "_room_for", checked_room)
    monkeypatch.setattr(SimEngine, "_commit_decode", checked_commit)
    # 0.1 GiB holds 819 tokens (51 blocks): 5 requests of 100 + 60 tokens (10 blocks
    # each) fit, and decode runs fill it to the last few blocks; 100 + 80 tokens (12
    # blocks each) outgrow it as they decode (token events every 5 s: long runs).
    for out, interval in ((60, None), (80, 5.0)):
        run = drive(reqs(5, 100, out), concurrency=5,
                    options={"kv_cache_gb": 0.1, "token_event_interval_s": interval})
        for evs in run.events.values():
            assert evs[-1].finished and evs[-1].output_tokens == out
    assert max(commits) > 1  # decode runs were fast-forwarded
    # Too tight for the quick bound, the blocks were counted request by request: some
    # runs fitted, some did not (one step, then the scheduler preempts).
    tight = [room for n, k, free, room in checks if n * -(-(k - 1) // 16) > free]
    assert True in tight and False in tight
    assert run.engine.sched.preempted_total > 0


def test_prefix_caching_skips_shared_prefix_compute() -> None:
    def shared(n: int) -> list[Request]:
        return [Request(f"q{i}", "", 3000, 5, prefix_key="system", prefix_tokens=2800)
                for i in range(n)]

    cached = drive(shared(10), concurrency=1)
    uncached = drive(shared(10), concurrency=1, options={"prefix_caching": False})
    pc = sum(e.prefill_tokens for evs in cached.events.values() for e in evs)
    pu = sum(e.prefill_tokens for evs in uncached.events.values() for e in evs)
    assert pu == 10 * 3000
    assert pc == 3000 + 9 * (3000 - 2800)  # 2800 is a whole number of 16-token blocks
    assert cached.elapsed_s < 0.6 * uncached.elapsed_s
    assert cached.energy_j < uncached.energy_j
    ttft = [cached.events[f"q{i}"][0].t_s - cached.submitted[f"q{i}"] for i in range(10)]
    assert max(ttft[1:]) < 0.5 * ttft[0]
    states = [e for e in cached.emitted if isinstance(e, EngineStateEvent)]
    assert states[-1].prefix_hit_pct is not None and states[-1].prefix_hit_pct > 50


def test_new_arrival_is_admitted_promptly_during_a_long_decode() -> None:
    async def main() -> tuple[float, float]:
        ctx = EngineContext(clock=LoopClock(), emit=lambda _e: None)
        engine = SimEngine.from_options(ctx, {})
        await engine.start()

        async def consume(r: Request) -> list[TokenEvent]:
            return [ev async for ev in engine.generate(r)]

        long = asyncio.create_task(consume(Request("long", "", 100, 2000)))
        await asyncio.sleep(1.2345)  # mid fast-forward
        t_sub = ctx.clock.now()
        short = await consume(Request("short", "", 100, 5))
        await long
        await engine.stop()
        return t_sub, short[0].t_s

    t_sub, t_first = run_async(main(), virtual=True)
    assert 0 < t_first - t_sub < 0.03  # one in-flight step + its own prefill step


def test_abandoned_request_frees_its_slot_and_kv() -> None:
    async def main() -> SimEngine:
        ctx = EngineContext(clock=LoopClock(), emit=lambda _e: None)
        engine = SimEngine.from_options(ctx, {})
        await engine.start()
        gen = engine.generate(Request("a", "", 500, 1000))
        assert isinstance(gen, AsyncGenerator)
        async for ev in gen:
            if (ev.output_tokens or 0) > 10:
                break
        await gen.aclose()
        await asyncio.sleep(0.1)
        assert engine.sched.running == [] and engine.sched.kv_usage() == 0.0
        # The engine keeps serving.
        evs = [ev async for ev in engine.generate(Request("b", "", 10, 3))]
        assert evs[-1].finished
        await engine.stop()
        return engine

    run_async(main(), virtual=True)


def test_engine_state_reported_about_once_per_second() -> None:
    run = drive(reqs(16, 200, 600), concurrency=16)
    states = [e for e in run.emitted if isinstance(e, EngineStateEvent)]
    busy = [s for s in states if s.running]
    assert len(busy) >= int(run.elapsed_s) - 1
    times = [s.t_s for s in busy]
    assert all(0.99 <= b - a <= 1.1 for a, b in itertools.pairwise(times))
    assert max(s.running or 0 for s in states) == 16
    assert all(0 <= (s.kv_cache_pct or 0) <= 100 for s in states)


def test_a100_twin_is_slower_and_draws_less() -> None:
    work = reqs(16, 200, 200)
    h100 = drive(work, concurrency=16)
    a100 = drive(work, concurrency=16, options={"gpu": "a100"})
    assert a100.elapsed_s > 1.3 * h100.elapsed_s
    assert a100.avg_power_w < h100.avg_power_w
    assert a100.engine.info().details["gpu"].startswith("NVIDIA A100")


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"gpu": "v100"}, "unknown simulated GPU"),
        ({"model": "gpt-9"}, "unknown simulated model"),
        ({"model": {"params_b": 7}}, "lacks"),
        ({"max_num_seqs": 0}, "max_num_seqs"),
        ({"max_num_seqs": "many"}, "max_num_seqs"),
        ({"kv_cache_gb": -1}, "kv_cache_gb"),
        ({"prefix_caching": "yes"}, "prefix_caching"),
        ({"bogus": 1}, "sim engine: unknown option 'bogus'"),
        ({"token_event_interval_s": float("nan")}, "must be a finite number"),
        ({"kv_cache_gb": "inf"}, "kv_cache_gb must be a finite number"),
        ({"model": {"params_b": 100, "layers": 80, "hidden": 8192, "kv_heads": 8,
                    "head_dim": 128}}, "leaves no KV cache"),
    ],
)
def test_bad_options_are_one_line_errors(options: dict[str, Any], needle: str) -> None:
    ctx = EngineContext(clock=LoopClock(asyncio.new_event_loop()), emit=lambda _e: None)
    with pytest.raises(SimOptionError) as exc:
        SimEngine.from_options(ctx, options)
    assert needle in str(exc.value) and "\n" not in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_custom_model_dict_and_info() -> None:
    ctx = EngineContext(clock=LoopClock(asyncio.new_event_loop()), emit=lambda _e: None)
    engine = SimEngine.from_options(ctx, {"model": {
        "name": "tiny", "params_b": 1.1, "layers": 22, "hidden": 2048, "kv_heads": 4,
        "head_dim": 64}, "max_num_seqs": 7})
    info = engine.info()
    assert info.name == "sim" and info.model == "tiny" and info.max_num_seqs == 7
    assert engine.twin.model.kv_bytes_per_token == 2 * 22 * 4 * 64 * 2


def test_request_too_long_fails_with_one_line() -> None:
    async def main() -> None:
        ctx = EngineContext(clock=LoopClock(), emit=lambda _e: None)
        engine = SimEngine.from_options(ctx, {"kv_cache_gb": 0.01})
        await engine.start()
        with pytest.raises(EngineError, match="exceeds"):
            async for _ in engine.generate(Request("big", "", 5000, 10)):
                pass
        with pytest.raises(EngineError, match="max_tokens"):
            async for _ in engine.generate(Request("zero", "", 10, 0)):
                pass
        await engine.stop()

    run_async(main(), virtual=True)


def test_stop_fails_requests_in_flight() -> None:
    async def main() -> None:
        ctx = EngineContext(clock=LoopClock(), emit=lambda _e: None)
        engine = SimEngine.from_options(ctx, {})
        await engine.start()

        async def consume() -> None:
            async for _ in engine.generate(Request("a", "", 100, 100000)):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.5)
        await engine.stop()
        with pytest.raises(EngineError, match="stopped"):
            await task

    run_async(main(), virtual=True)


def test_engine_state_counts_tokens() -> None:
    run = drive(reqs(4, 100, 50), concurrency=4)
    last = [e for e in run.emitted if isinstance(e, EngineStateEvent)][-1]
    assert last.output_tokens_total == 200
    assert last.prompt_tokens_total == 400
    assert last.running == 0 and last.waiting == 0


def test_inline_progress_carries_the_same_events_as_the_stream() -> None:
    """generate_inline (engines.base.InlineProgress) yields the first token and the end;
    every event between goes to the callback, at the same instants, with the same work
    as `generate` streams."""

    async def main(inline: bool) -> list[tuple[str, float, int, int, int | None, bool]]:
        ctx = EngineContext(clock=LoopClock(), emit=lambda _: None)
        engine = SimEngine.from_options(ctx, {})
        await engine.start()
        seen: list[tuple[str, float, int, int, int | None, bool]] = []

        async def one(r: Request) -> None:
            rid = r.request_id

            def progress(prefill: int, decode: int, output: int) -> None:
                calls.append(rid)
                seen.append((rid, ctx.clock.now(), prefill, decode, output, False))

            stream = engine.generate_inline(r, progress) if inline else engine.generate(r)
            async for ev in stream:
                seen.append((rid, ev.t_s, ev.prefill_tokens, ev.decode_tokens,
                             ev.output_tokens, ev.finished))

        await asyncio.gather(*(one(r) for r in reqs(40, 3000, 300)))
        await engine.stop()
        return sorted(seen)

    calls: list[str] = []
    streamed = run_async(main(False), virtual=True)
    assert not calls
    inline = run_async(main(True), virtual=True)
    assert len(calls) > 40 * 3
    assert inline == streamed
