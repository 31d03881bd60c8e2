"""Live figures on scripted event streams: tokens/s and J/token from the tokens as they
stream, TTFT at the first token, TPOT of running requests, the windowed views, the knob
segments, per-key groupings, and memory that does not grow with the run."""

from __future__ import annotations

import random
import sys
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest

from app.core.events import (
    EngineStateEvent,
    Event,
    KnobEvent,
    RequestEvent,
    Sample,
    SessionHeader,
)
from app.core.quantiles import BIN_LIMIT, ExactQuantiles, Sketch
from app.core.stats import LiveStats, StatsSnapshot
from app.core.stats_window import POINTS_KEPT, VIEW_SLOTS, Figures


def req(t: float, rid: str, phase: str, stage: str = "gen", **kw: Any) -> RequestEvent:
    return RequestEvent(t_s=t, request_id=rid, phase=phase, stage=stage, workflow_id=rid, **kw)


def feed(stats: LiveStats, events: list[Event], until: float | None = None) -> StatsSnapshot:
    for ev in events:
        if until is not None and ev.t_s > until:
            break
        stats.on_event(ev)
    return stats.snapshot()


def long_requests(n: int = 8, gen_s: float = 100.0, power_w: float = 200.0) -> list[Event]:
    """`n` requests submitted at 0 s, first token at 0.5 s, then 10 tokens/s each until
    they finish at `gen_s`: every one lasts longer than any window. The GPU draws
    `power_w` throughout; the client's token counter is read once a second."""
    evs: list[Event] = [req(0.0, f"r{i}", "submitted") for i in range(n)]
    evs += [req(0.5, f"r{i}", "first_token", ttft_s=0.5) for i in range(n)]
    t = 0.0
    while t <= gen_s:
        evs.append(Sample(t_s=t, device="gpu0", component="gpu", energy_mj=power_w * 1e3 * t))
        if t == int(t):
            per_request = 1 + 10 * (t - 0.5) if t >= 0.5 else 0
            evs.append(EngineStateEvent(t_s=t, source="client",
                                        output_tokens_total=round(n * per_request)))
        t += 0.5
    tokens = 1 + round(10 * (gen_s - 0.5))
    evs += [req(gen_s, f"r{i}", "finished", output_tokens=tokens, latency_s=gen_s,
                ttft_s=0.5, tpot_s=0.1, energy_j={"gpu": power_w * gen_s / n})
            for i in range(n)]
    evs.sort(key=lambda e: e.t_s)  # stable: samples before the counter read at one instant
    return evs


def test_long_requests_show_throughput_and_energy_per_token_from_the_first_tokens() -> None:
    evs = long_requests()
    stats = LiveStats()
    s = feed(stats, evs, until=3.0)
    # 8 requests x 26 tokens by 3 s; 600 J drawn by then
    assert s.streamed_output_tokens == 208
    assert s.streamed_tokens_per_s == pytest.approx(208 / 3.0)
    assert s.j_per_streamed_token == pytest.approx(600.0 / 208)
    assert s.gpu_j_per_streamed_token == pytest.approx(600.0 / 208)
    assert s.recent_tokens_per_s == pytest.approx(208 / 3.0)  # the run is shorter than 10 s
    # TTFT as soon as the first tokens came; TPOT of the requests still running
    assert s.first_tokens == 8 and s.ttft_p50_s == pytest.approx(0.5, rel=0.01)
    assert s.running_tpot_s == pytest.approx(0.1)
    # the finished-request figures say what they count: nothing finished yet
    assert s.requests_finished == 0 and s.output_tokens == 0 and s.tokens_per_s == 0.0
    assert s.j_per_output_token is None and s.latency_p50_s is None and s.tpot_p50_s is None

    s = feed(stats, [e for e in evs if 3.0 < e.t_s <= 30.0])
    assert s.streamed_tokens_per_s == pytest.approx((8 * (1 + 10 * 29.5)) / 30.0)
    ten = s.views["10s"]
    assert ten.tokens_per_s == pytest.approx(80.0) and s.recent_tokens_per_s == ten.tokens_per_s
    assert ten.j_per_token == pytest.approx(200.0 / 80.0)
    assert ten.avg_power_w == pytest.approx(200.0) and ten.duration_s == pytest.approx(10.0)
    assert ten.requests_finished == 0 and ten.latency_p90_s is None
    assert s.views["60s"].start_s == 0.0  # shorter than 60 s so far: the whole run
    assert s.views["knob"].tokens_per_s == pytest.approx(s.streamed_tokens_per_s)
    assert s.running_tpot_s == pytest.approx(0.1)

    s = feed(stats, [e for e in evs if e.t_s > 30.0])
    assert s.requests_finished == 8 and s.running_tpot_s is None
    assert s.tokens_per_s == pytest.approx(8 * 996 / 100.0)
    # once every request has ended, streamed and generated tokens are the same
    assert s.streamed_output_tokens == s.generated_output_tokens == 8 * 996
    assert s.j_per_streamed_token == pytest.approx(s.j_per_generated_token)
    assert s.views["60s"].requests_finished == 8
    assert s.views["60s"].latency_p50_s == pytest.approx(100.0, rel=0.01)


def test_without_a_token_counter_progress_comes_from_the_requests_that_ended() -> None:
    evs: list[Event] = []
    for i in range(10):
        evs.append(Sample(t_s=float(i), device="gpu0", component="gpu", energy_mj=1e5 * i))
        evs.append(req(float(i), f"r{i}", "finished", output_tokens=50, latency_s=1.0))
    s = feed(LiveStats(), evs)
    assert s.streamed_output_tokens == 500
    assert s.streamed_tokens_per_s == pytest.approx(500 / 9.0)
    assert s.j_per_streamed_token == pytest.approx(900.0 / 500)


def knob_run() -> list[Event]:
    """40 s: 50 tokens/s at 100 W until the power cap goes 700 -> 300 W at 20 s, then
    40 tokens/s at 50 W. One request finishes every second, latency 2 s before the
    change and about 3 s from it on (a segment holds [start, end))."""
    evs: list[Event] = [SessionHeader(t_s=0.0, knobs={"power_cap": 700.0, "batch_limit": 64})]
    energy = tokens = 0.0
    for t in range(41):
        if t:
            energy += 100.0 if t <= 20 else 50.0
            tokens += 50 if t <= 20 else 40
        evs.append(Sample(t_s=float(t), device="gpu0", component="gpu", energy_mj=energy * 1e3))
        evs.append(EngineStateEvent(t_s=float(t), source="client",
                                    output_tokens_total=round(tokens)))
        if t == 20:
            evs.append(KnobEvent(t_s=20.0, knob="power_cap", value=300.0, previous=700.0,
                                 source="ui"))
        if t:
            evs.append(req(t - 0.001, f"q{t}", "first_token", ttft_s=0.1 * (1 + t % 3)))
            evs.append(req(float(t), f"q{t}", "finished", output_tokens=40,
                           latency_s=2.0 if t < 20 else 3.0 + 0.01 * t, ttft_s=0.1))
    return evs


def test_knob_segments_and_the_view_since_the_last_change() -> None:
    stats = LiveStats()
    s = feed(stats, knob_run(), until=19.5)
    (only,) = s.knob_segments
    assert only.changes == [] and only.knobs == {"power_cap": 700.0, "batch_limit": 64}
    s = feed(stats, [e for e in knob_run() if e.t_s > 19.5])
    before, after = s.knob_segments
    assert (before.start_s, before.end_s, after.start_s) == (0.0, 20.0, 20.0)
    assert after.end_s == 40.0
    assert after.changes == ["power_cap 700 W -> 300 W"] and after.knobs["power_cap"] == 300.0
    assert before.tokens_per_s == pytest.approx(50.0) and after.tokens_per_s == pytest.approx(40.0)
    assert before.j_per_token == pytest.approx(2.0) and after.j_per_token == pytest.approx(1.25)
    assert before.avg_power_w == pytest.approx(100.0) and after.avg_power_w == pytest.approx(50.0)
    assert (before.requests_finished, after.requests_finished) == (19, 21)
    assert before.latency_p90_s == pytest.approx(2.0, rel=0.01)
    assert after.latency_p90_s == pytest.approx(
        exact_of([3.0 + 0.01 * t for t in range(20, 41)]).q(0.9), rel=0.01)
    knob = s.views["knob"]
    assert knob.start_s == 20.0 and knob.tokens_per_s == pytest.approx(40.0)
    assert knob.j_per_token == pytest.approx(1.25) and knob.requests_finished == 21
    assert knob.latency_p90_s == after.latency_p90_s
    # the whole run is both segments together
    run = s.views["run"]
    assert run.streamed_tokens == before.streamed_tokens + after.streamed_tokens  # type: ignore[operator]
    assert run.energy_j == pytest.approx(before.energy_j + after.energy_j)  # type: ignore[operator]


def exact_of(values: list[float]) -> ExactQuantiles:
    q = ExactQuantiles()
    for v in values:
        q.add(v)
    return q


def test_a_change_between_two_counter_readings_is_interpolated() -> None:
    evs = [e for e in knob_run() if not isinstance(e, KnobEvent)]
    change = KnobEvent(t_s=10.5, knob="batch_limit", value=32, previous=64, source="cli")
    evs.insert(next(i for i, e in enumerate(evs) if e.t_s > 10.5), change)
    stats = LiveStats()
    s = feed(stats, evs, until=10.9)
    assert s.views["knob"].tokens_per_s is None  # its start is known at the next reading
    before, after = feed(stats, [e for e in evs if e.t_s > 10.9]).knob_segments
    assert before.end_s == after.start_s == 10.5
    assert before.streamed_tokens == 525 and before.tokens_per_s == pytest.approx(50.0)
    assert before.energy_j == pytest.approx(1050.0)
    assert after.changes == ["batch_limit 64 -> 32"]


def test_changes_at_one_instant_make_one_segment() -> None:
    evs = knob_run()
    evs.insert(evs.index(next(e for e in evs if isinstance(e, KnobEvent))) + 1,
               KnobEvent(t_s=20.0, knob="batch_limit", value=8, previous=64, source="ui"))
    segs = feed(LiveStats(), evs).knob_segments
    assert len(segs) == 2 and segs[1].changes == ["power_cap 700 W -> 300 W",
                                                  "batch_limit 64 -> 8"]
    assert segs[1].knobs == {"power_cap": 300.0, "batch_limit": 8}


def test_a_starting_value_is_not_a_segment() -> None:
    evs = knob_run()
    evs.insert(1, KnobEvent(t_s=0.0, knob="rate", value=2.0, previous=None, source="start"))
    segs = feed(LiveStats(), evs).knob_segments
    assert len(segs) == 2 and segs[0].knobs["rate"] == 2.0


def test_groupings_by_key_and_merged_groups() -> None:
    # `node` stands in for a field only the end of a request names (like an endpoint):
    # the first token event has none, so the TTFT is counted in that group at the end.
    def endpoint(r: RequestEvent) -> str | None:
        return r.node or None

    stats = LiveStats(groupings={"endpoint": endpoint})
    rnd = random.Random(2)
    for i in range(300):
        ep = "a" if i % 3 else "b"
        t = float(i)
        stats.on_event(req(t, f"x{i}", "submitted"))
        stats.on_event(req(t + 0.1, f"x{i}", "first_token", ttft_s=0.1 + i % 2))
        stats.on_event(req(t + 1, f"x{i}", "finished", node=ep, output_tokens=10,
                           latency_s=rnd.lognormvariate(0, 1), ttft_s=0.1 + i % 2))
    s = stats.snapshot()
    rows = {g.stage: g for g in s.groups["endpoint"]}
    assert set(rows) == {"a", "b"} and (rows["a"].count, rows["b"].count) == (200, 100)
    assert rows["a"].output_tokens == 2000 and rows["b"].ttft_p50_s is not None
    both = stats.combined("endpoint", ["a", "b"])
    assert both.count == 300 and both.output_tokens == 3000
    # merged sketches are the sketch of every value: the run's own quantiles
    assert both.latency_p90_s == s.latency_p90_s and both.ttft_p50_s == s.ttft_p50_s
    assert [st.stage for st in s.stages] == ["gen"]  # stages are there as before


# -- memory flat in run length ----------------------------------------------------------


def synthetic_run(requests: int, rate_per_s: float = 1.0, knob_every_s: float = 500.0,
                  knob_changes: int = 3) -> Iterator[Event]:
    """A steady load: a request every 1/rate s lasting 20 s, a sample and a counter read
    every second, `knob_changes` knob changes."""
    rnd = random.Random(9)
    dt = 1.0 / rate_per_s
    ends: deque[tuple[float, str]] = deque()
    tokens = 0
    changes = 0
    next_tick = 0.0
    for i in range(requests):
        t = i * dt
        while ends and ends[0][0] <= t:
            te, rid = ends.popleft()
            yield req(te, rid, "finished", output_tokens=100, latency_s=20.0 * rnd.uniform(0.5, 1.5),
                      ttft_s=0.2, tpot_s=0.05 * rnd.uniform(0.5, 1.5), energy_j={"gpu": 3.0})
        while next_tick <= t:
            tokens += round(100 * rate_per_s)
            yield Sample(t_s=next_tick, device="gpu0", component="gpu", energy_mj=3e5 * next_tick)
            yield EngineStateEvent(t_s=next_tick, source="client", output_tokens_total=tokens)
            if next_tick and next_tick % knob_every_s == 0 and changes < knob_changes:
                changes += 1
                yield KnobEvent(t_s=next_tick, knob="power_cap", value=300.0 + changes,
                                previous=300.0 + changes - 1, source="schedule")
            next_tick += 1.0
        rid = f"r{i}"
        yield req(t, rid, "submitted")
        yield req(t + 0.2, rid, "first_token", ttft_s=0.2 * rnd.uniform(0.5, 2.0))
        ends.append((t + 20.0, rid))


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes held by an object graph (containers, slots, instance dicts)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, type):
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set | frozenset | deque):
        size += sum(deep_size(x, seen) for x in obj)
    else:
        for name in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, name):
                size += deep_size(getattr(obj, name), seen)
        if hasattr(obj, "__dict__"):
            size += deep_size(vars(obj), seen)
    return size


def sketches(obj: Any, seen: set[int] | None = None) -> Iterator[Sketch | ExactQuantiles]:
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, Sketch | ExactQuantiles):
        yield obj
        return
    if isinstance(obj, dict):
        for v in obj.values():
            yield from sketches(v, seen)
    elif isinstance(obj, list | tuple | deque):
        for x in obj:
            yield from sketches(x, seen)
    elif hasattr(type(obj), "__slots__") or hasattr(obj, "__dict__"):
        names = list(getattr(type(obj), "__slots__", ())) + list(getattr(obj, "__dict__", {}))
        for name in names:
            if hasattr(obj, name):
                yield from sketches(getattr(obj, name), seen)


def test_memory_does_not_grow_with_the_run() -> None:
    held = []
    for n in (2_000, 20_000):  # both past the 15 minutes the window split looks back
        stats = LiveStats()
        for ev in synthetic_run(n):
            stats.on_event(ev)
        s = stats.snapshot()
        assert s.requests_finished >= n - 25 and len(s.knob_segments) == 4
        assert len(stats._progress.points) <= POINTS_KEPT
        assert len(stats._running) <= 25  # in flight only
        found = list(sketches(stats))
        assert found and all(isinstance(q, Sketch) for q in found)
        assert all(q.bins <= 2 * (BIN_LIMIT + 128) for q in found)  # type: ignore[union-attr]
        held.append((deep_size(stats), max(q.bins for q in found),  # type: ignore[union-attr]
                     len(found)))
    (small, small_bins, small_n), (big, big_bins, big_n) = held
    assert big_n == small_n  # the same structures: slots, segments, stages
    assert big_bins <= small_bins + 128  # a sketch's size follows the values' span
    assert big <= small * 1.1, (small, big)


def test_exact_mode_keeps_every_value() -> None:
    stats = LiveStats(exact=True)
    for ev in synthetic_run(300):
        stats.on_event(ev)
    found = list(sketches(stats))
    assert found and all(isinstance(q, ExactQuantiles) for q in found)
    assert len(stats._all.figs.latency) == stats.snapshot().requests_finished


def test_slot_ring_is_fixed_and_drops_old_slots() -> None:
    stats = LiveStats()
    for ev in synthetic_run(400):
        stats.on_event(ev)
    ring = stats._slots
    assert len(ring._figs) == len(ring._ids) == VIEW_SLOTS
    assert ring.at(0.0) is None  # older than the ring: counted in the whole run only
    assert isinstance(ring.at(stats._t), Figures)


def test_a_finish_published_after_the_change_counts_in_the_segment_it_happened_in() -> None:
    evs = knob_run()
    change = evs.index(next(e for e in evs if isinstance(e, KnobEvent)))
    evs.insert(change + 1, req(19.95, "late", "finished", output_tokens=1, latency_s=9.0))
    before, after = feed(LiveStats(), evs).knob_segments
    assert (before.requests_finished, after.requests_finished) == (20, 21)
    assert before.latency_p99_s is not None and before.latency_p99_s > 2.0


def test_the_headless_progress_line_shows_the_live_figures() -> None:
    from app.headless import progress_line

    stats = LiveStats()
    s = feed(stats, long_requests(), until=30.0)
    line = progress_line(s)
    assert "80 tok/s" in line and "2.534 J/tok" in line and "req      0 done" in line


def test_a_recorded_real_gpu_session_shows_live_figures_before_any_request_finishes() -> None:
    # 64 requests on an H100 (transformers engine), each taking over 80 s: the case where
    # figures of finished requests say nothing for the first minute and more.
    from pathlib import Path

    from app.core.session_reader import open_session

    path = Path(__file__).resolve().parents[2] / "sessions" / (
        "sample-interactive-transformers-h100-b64.jsonl")
    stream = open_session(path)
    stats = LiveStats()
    stats.on_event(stream.header)
    for ev in stream:
        if ev.t_s > 30.0:
            break
        stats.on_event(ev)
    s = stats.snapshot()
    assert s.requests_finished == 0 and s.tokens_per_s == 0.0 and s.j_per_output_token is None
    assert s.streamed_output_tokens > 1000 and s.streamed_tokens_per_s
    assert s.j_per_streamed_token and s.views["10s"].tokens_per_s
    assert s.views["10s"].j_per_token and s.first_tokens > 20
    assert s.ttft_p50_s and s.running_tpot_s


def test_the_power_limit_put_back_at_the_end_is_not_a_segment() -> None:
    evs = knob_run()
    evs.append(KnobEvent(t_s=40.0, knob="power_cap", value=700.0, previous=300.0,
                         source="restore"))
    stats = LiveStats()
    segs = feed(stats, evs).knob_segments
    assert len(segs) == 2 and segs[-1].knobs["power_cap"] == 300.0  # in force during it
    assert stats.snapshot().knobs["power_cap"] == 700.0  # in force at the end
