"""The replay seek index: the state a seek rebuilds equals the state reached by playing
the session to that time (the statistics compared field by field), and navigation
between knob changes, marks and errors."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from app.core.bus import EventBus
from app.core.events import (
    EndEvent,
    ErrorEvent,
    Event,
    KnobEvent,
    MarkEvent,
    Sample,
    SessionHeader,
)
from app.core.replay import Replayer
from app.core.replay_index import ReplayIndex
from app.core.session_reader import SessionError
from app.core.stats import LiveStats, StatsSnapshot


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 90 s composite run on the twin with two knob changes, and a mark and an error
    added as a dashboard and a failing engine would write them."""
    d = tmp_path_factory.mktemp("seek")
    raw = d / "raw.jsonl"
    subprocess.run(
        [sys.executable, "-m", "app", "run", "--headless", "--fast", "--duration", "90",
         "--seed", "3", "--at", "30:power_cap=400", "--at", "55:batch_limit=16",
         "--session", str(raw)],
        check=True, capture_output=True, timeout=300)
    lines = raw.read_bytes().splitlines(keepends=True)
    out: list[bytes] = []
    added = {40.0: MarkEvent(t_s=40.0, label="after the cap"),
             70.0: ErrorEvent(t_s=70.0, source="engine", message="a test error")}
    for line in lines:
        t = orjson.loads(line).get("t_s", 0.0)
        for at in sorted(added):
            if t > at:
                out.append(orjson.dumps(added.pop(at).to_dict()) + b"\n")
        out.append(line)
    path = d / "s.jsonl"
    path.write_bytes(b"".join(out))
    return path


def play_to(path: Path, t: float) -> StatsSnapshot:
    """The statistics as a real replay has them at session time `t`: a subscriber of the
    Replayer's bus takes the snapshot when the first event later than `t` arrives (or
    at the end, the end record included, if the replay gets there first)."""
    bus = EventBus()
    stats = LiveStats()
    taken: list[StatsSnapshot] = []
    reach = -math.inf

    def on_event(ev: Event) -> None:
        nonlocal reach
        if taken:
            return
        if ev.kind not in ("session", "end"):
            reach = max(reach, ev.t_s)
            if reach > t:
                taken.append(stats.snapshot())
                return
        stats.on_event(ev)

    bus.subscribe(on_event)
    asyncio.run(Replayer(path, bus, math.inf).run())
    return taken[0] if taken else stats.snapshot()


def assert_same(a: StatsSnapshot, b: StatsSnapshot) -> None:
    for f in dataclasses.fields(StatsSnapshot):
        assert getattr(a, f.name) == getattr(b, f.name), f.name


@pytest.fixture(scope="module")
def index(session: Path) -> ReplayIndex:
    # checkpoints 7 s apart: a seek starts from one of many, most not at a round time
    return ReplayIndex.build(session, checkpoint_s=7.0)


@pytest.mark.parametrize("t", [0.0, 0.5, 6.99, 7.0, 13.3, 30.0, 41.7, 55.0, 89.9, 1e6])
def test_seek_gives_the_statistics_of_playing_to_that_time(
        session: Path, index: ReplayIndex, t: float) -> None:
    assert_same(index.stats_at(t).snapshot(), play_to(session, t))


def test_seek_backwards_and_forwards_leaves_the_index_unchanged(index: ReplayIndex,
                                                                session: Path) -> None:
    late = index.stats_at(80.0).snapshot()
    early = index.stats_at(20.0)
    early.snapshot()
    assert_same(index.stats_at(80.0).snapshot(), late)  # checkpoints were not fed twice
    assert_same(early.snapshot(), play_to(session, 20.0))
    assert index.checkpoints >= 90 / 7


def test_seek_past_the_end_includes_the_end_record(index: ReplayIndex) -> None:
    assert index.end is not None
    last = index.time_of(len(index.events))
    assert not index.ended_at(last - 0.001)
    assert index.ended_at(last) and index.ended_at(index.duration_s)
    snap = index.stats_at(index.duration_s).snapshot()
    assert snap.output_tokens == index.end.summary["output_tokens"] > 0
    assert snap.window_end_s == index.end.summary["window_end_s"]


def test_landmarks_of_a_real_session(index: ReplayIndex) -> None:
    kinds = [(lm.kind, round(lm.t_s)) for lm in index.landmarks]
    assert kinds == [("knob", 30), ("mark", 40), ("knob", 55), ("error", 70)]
    assert "power_cap" in index.landmarks[0].label and "400" in index.landmarks[0].label
    assert index.landmarks[1].label == "after the cap"


def _synthetic() -> ReplayIndex:
    header = SessionHeader(t_s=0.0, knobs={"power_cap": 700.0})
    evs: list[Event] = [Sample(t_s=float(i), device="gpu0", energy_mj=i * 3e5, power_w=300.0)
                        for i in range(0, 101)]
    evs += [
        KnobEvent(t_s=10.0, knob="power_cap", value=400.0, previous=700.0, source="ui"),
        KnobEvent(t_s=12.0, knob="power_cap", value=400.0, previous=400.0, source="ui"),
        KnobEvent(t_s=15.0, knob="batch_limit", value=8.0, previous=8.0, source="start"),
        MarkEvent(t_s=20.0, label="m1"),
        ErrorEvent(t_s=20.0, source="engine", message="boom"),
        KnobEvent(t_s=60.0, knob="batch_limit", value=16.0, previous=64.0, source="cli"),
        KnobEvent(t_s=99.0, knob="power_cap", value=700.0, previous=400.0, source="restore"),
    ]
    evs.sort(key=lambda e: e.t_s)
    return ReplayIndex.from_events(header, evs, EndEvent(t_s=101.0), checkpoint_s=25.0)


def test_next_and_previous_landmark() -> None:
    ix = _synthetic()
    # not-a-change knob records and the closing restore are no landmarks
    assert [(lm.t_s, lm.kind) for lm in ix.landmarks] == [
        (10.0, "knob"), (20.0, "mark"), (20.0, "error"), (60.0, "knob")]
    nxt = ix.next_landmark(0.0)
    assert nxt is not None and nxt.t_s == 10.0
    # standing on a landmark, `n` goes on to the next instant and `p` back from it
    nxt = ix.next_landmark(10.0)
    assert nxt is not None and (nxt.t_s, nxt.kind) == (20.0, "mark")
    nxt = ix.next_landmark(20.0)
    assert nxt is not None and nxt.t_s == 60.0
    assert ix.next_landmark(60.0) is None
    prev = ix.previous_landmark(60.0)
    assert prev is not None and (prev.t_s, prev.kind) == (20.0, "error")
    prev = ix.previous_landmark(15.0)
    assert prev is not None and prev.t_s == 10.0
    assert ix.previous_landmark(10.0) is None
    only_knobs = ix.next_landmark(10.0, kinds=("knob",))
    assert only_knobs is not None and only_knobs.t_s == 60.0


def test_window_and_counts() -> None:
    ix = _synthetic()
    assert ix.count_at(-1.0) == 0
    got = [ev.t_s for ev in ix.window(50.0, 10.0, kinds=("sample",))]
    assert got == [41.0, 42.0, 43.0, 44.0, 45.0, 46.0, 47.0, 48.0, 49.0, 50.0]
    marks = list(ix.window(50.0, 50.0, kinds=("mark", "error")))
    assert [ev.kind for ev in marks] == ["mark", "error"]
    assert ix.duration_s == 101.0
    assert ix.time_of(ix.count_at(50.5)) == 50.0


def test_events_out_of_order_wait_behind_the_one_before() -> None:
    header = SessionHeader(t_s=0.0)
    evs: list[Event] = [Sample(t_s=1.0, device="gpu0", energy_mj=0.0),
                        Sample(t_s=5.0, device="gpu0", energy_mj=1000.0),
                        MarkEvent(t_s=3.0, label="late"),
                        Sample(t_s=6.0, device="gpu0", energy_mj=2000.0)]
    ix = ReplayIndex.from_events(header, evs, None, checkpoint_s=1.0)
    # the replayer publishes in file order: the mark waits behind the 5 s sample
    assert ix.count_at(4.0) == 1
    assert ix.count_at(5.0) == 3
    assert [ev.kind for ev in ix.window(5.0, 10.0)] == ["sample", "sample", "mark"]


def test_bad_input_is_a_session_error(tmp_path: Path) -> None:
    p = tmp_path / "x.jsonl"
    p.write_text("hello\n")
    with pytest.raises(SessionError, match="not a wattflow session"):
        ReplayIndex.build(p)
    with pytest.raises(ValueError, match="positive"):
        ReplayIndex.from_events(SessionHeader(t_s=0.0), [], None, checkpoint_s=0.0)


def test_statistics_with_an_unpicklable_grouping_are_checkpointed_too(session: Path) -> None:
    def make() -> LiveStats:
        return LiveStats(groupings={"endpoint": lambda r: r.endpoint})  # a lambda: no pickle

    ix = ReplayIndex.build(session, checkpoint_s=10.0, make_stats=make)
    reference = make()
    for ev in [ix.header, *ix.events[: ix.count_at(33.0)]]:
        reference.on_event(ev)
    assert_same(ix.stats_at(33.0).snapshot(), reference.snapshot())


# -- the Replayer seeking over the index -----------------------------------------------


class Listener:
    """A replay's listener that rebuilds its statistics from the index on a seek."""

    def __init__(self, index: ReplayIndex) -> None:
        self.index = index
        self.stats = LiveStats()
        self.times: list[float] = []
        self.ends = 0

    def on_event(self, ev: Event) -> None:
        self.stats.on_event(ev)
        if ev.kind == "end":
            self.ends += 1
        elif ev.kind != "session":
            self.times.append(ev.t_s)

    def seek(self, r: Replayer, t: float) -> None:
        r.seek(t)
        self.stats = self.index.stats_at(t)
        self.times.clear()


def test_seek_while_playing_goes_on_from_there(session: Path, index: ReplayIndex) -> None:
    bus = EventBus()
    listener = Listener(index)
    bus.subscribe(listener.on_event)

    async def main() -> None:
        r = Replayer(session, bus, 2.0, index=index)
        task = asyncio.create_task(r.run())
        for _ in range(500):  # playing the first seconds at 2x
            await asyncio.sleep(0.01)
            if r.position_s > 0:
                break
        assert 0 < r.position_s < 5.0
        listener.seek(r, 60.0)
        assert r.now_s() == pytest.approx(60.0, abs=0.1)
        for _ in range(500):
            await asyncio.sleep(0.01)
            if listener.times:
                break
        assert r.position_s > 60.0 and listener.times and min(listener.times) > 60.0
        assert_same(listener.stats.snapshot(), index.stats_after(r.events).snapshot())
        listener.seek(r, 10.0)  # and back
        r.set_speed(math.inf)
        await task

    asyncio.run(main())
    assert min(listener.times) > 10.0
    assert listener.ends == 1
    # seeking about left no trace: the end state is the whole file's
    assert_same(listener.stats.snapshot(), index.stats_at(index.duration_s).snapshot())


def test_a_held_replay_waits_at_the_end_for_a_seek_back(session: Path,
                                                       index: ReplayIndex) -> None:
    bus = EventBus()
    listener = Listener(index)
    bus.subscribe(listener.on_event)

    async def main() -> None:
        r = Replayer(session, bus, math.inf, index=index, hold_at_end=True)
        task = asyncio.create_task(r.run())
        for _ in range(200):
            await asyncio.sleep(0.01)
            if r.at_end:
                break
        assert r.at_end and listener.ends == 1 and not task.done()
        listener.seek(r, 0.0)  # home: from the start again
        for _ in range(200):
            await asyncio.sleep(0.01)
            if listener.ends == 2:
                break
        assert listener.ends == 2 and not task.done()
        # the events at time 0 count as published by a seek to 0; every other again
        assert len(listener.times) == len(index.events) - index.count_at(0.0)
        assert_same(listener.stats.snapshot(), index.stats_at(index.duration_s).snapshot())
        task.cancel()

    asyncio.run(main())


def test_seek_needs_an_index(session: Path) -> None:
    with pytest.raises(ValueError, match="index"):
        Replayer(session, EventBus()).seek(3.0)
