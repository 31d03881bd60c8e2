"""Seeking in the dashboard's replay: a seek gives the panels the state that playing to
that time gives (the statistics field by field, the event log, the power chart's
window), `n` / `p` go from knob change to mark to error, the arrows, `home`, `end`,
`g 1:10` and a click on the timeline move the replay."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.core.bus import EventBus
from app.core.clock import run_async
from app.core.events import ErrorEvent, MarkEvent
from app.core.knobs import ScheduledChange
from app.core.replay import Replayer
from app.core.replay_index import ReplayIndex
from app.core.runner import RunConfig, Runner
from app.core.session_writer import SessionRecorder
from app.core.stats import LiveStats, StatsSnapshot
from app.ui.app import DashboardApp
from app.ui.backends import ReplayBackend
from app.ui.feed import Frame
from app.ui.replay_app import ReplayDashboardApp
from app.ui.replay_seek import SeekableReplayBackend, format_time, parse_time
from app.ui.widgets.timeline import Timeline

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 150 s session (fake engine, virtual time) with two knob changes, and a
    mark and an error added where a dashboard and a failing engine would write them."""
    d = tmp_path_factory.mktemp("seek")
    raw = d / "raw.jsonl"
    cfg = RunConfig(workload="sequential",
                    workload_params={"variant": "mapreduce", "chunks": 4, "output_tokens": 20,
                                     "reduce_tokens": 20},
                    engine="fake", meters=["fake"], batch_limit=4, duration_s=150.0,
                    session_path=raw,
                    schedule=[ScheduledChange(40.0, "batch_limit", 2.0),
                              ScheduledChange(100.0, "batch_limit", 8.0)])
    run_async(Runner(cfg).run(), virtual=True)
    added = {70.0: MarkEvent(t_s=70.0, label="look here"),
             120.0: ErrorEvent(t_s=120.0, source="engine", message="a hiccup")}
    out = []
    for line in raw.read_bytes().splitlines(keepends=True):
        t = orjson.loads(line).get("t_s", 0.0)
        for at in sorted(added):
            if t > at:
                out.append(orjson.dumps(added.pop(at).to_dict()) + b"\n")
        out.append(line)
    path = d / "s.jsonl"
    path.write_bytes(b"".join(out))
    return path


def seekable_app(path: Path, speed: float = 1.0) -> tuple[ReplayDashboardApp,
                                                           SeekableReplayBackend, Replayer]:
    index = ReplayIndex.build(path, checkpoint_s=20.0)
    bus = EventBus()
    holder: dict[str, LiveStats] = {"stats": LiveStats()}
    bus.subscribe(lambda ev: holder["stats"].on_event(ev))
    replayer = Replayer(path, bus, speed=speed, index=index, hold_at_end=True)
    backend = SeekableReplayBackend(replayer, holder["stats"], index,
                                    on_stats=lambda s: holder.__setitem__("stats", s))
    return ReplayDashboardApp(backend, handle_signals=False), backend, replayer


def played_to(path: Path, t: float, tmp: Path) -> Frame:
    """The frame of the plain dashboard after playing, to its end, a copy of the
    session holding what a replay has published by `t` (no end record)."""
    index = ReplayIndex.build(path)
    part = tmp / f"upto-{t}.jsonl"
    rec = SessionRecorder(part)
    rec.open(index.header)
    for ev in index.events[: index.count_at(t)]:
        rec.write(ev)
    rec.abort()
    bus = EventBus()
    stats = LiveStats()
    bus.subscribe(stats.on_event)
    backend = ReplayBackend(Replayer(part, bus, speed=math.inf), stats)
    app = DashboardApp(backend, handle_signals=False)
    frames: list[Frame] = []

    async def main() -> None:
        async with app.run_test(size=(140, 44)) as pilot:
            await backend.wait_done()
            await pilot.pause(0.1)
            assert app.frame is not None
            frames.append(app.frame)

    asyncio.run(main())
    return frames[0]


def assert_same_stats(a: StatsSnapshot, b: StatsSnapshot) -> None:
    for f in dataclasses.fields(StatsSnapshot):
        assert getattr(a, f.name) == getattr(b, f.name), f.name


def assert_same_panels(seek: Frame, play: Frame) -> None:
    assert_same_stats(seek.snapshot, play.snapshot)
    assert [(x.t_s, x.level, x.text) for x in seek.log] == \
        [(x.t_s, x.level, x.text) for x in play.log]
    assert seek.engine_state == play.engine_state
    assert seek.header == play.header and seek.devices == play.devices
    assert [g.device for g in seek.gpus] == [g.device for g in play.gpus]
    for a, b in zip(seek.gpus, play.gpus, strict=True):
        assert a.points == b.points  # the chart's window
        assert (a.limit_w, a.util_pct, a.temp_c) == (b.limit_w, b.util_pct, b.temp_c)


@pytest.mark.parametrize("t", [55.0, 125.5])
def test_seek_gives_the_panels_of_playing_to_that_time(session: Path, tmp_path: Path,
                                                       t: float) -> None:
    app, backend, _replayer = seekable_app(session)
    got: list[Frame] = []

    async def main() -> None:
        async with app.run_test(size=(140, 44)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("space")  # paused: the frame is the state at t exactly
            backend.seek(t)
            await pilot.pause(0.3)
            assert app.frame is not None
            got.append(app.frame)

    asyncio.run(main())
    assert_same_panels(got[0], played_to(session, t, tmp_path))


def test_seek_back_after_the_end_and_play_on_matches_the_whole_file(session: Path) -> None:
    app, backend, replayer = seekable_app(session, speed=math.inf)
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with app.run_test(size=(140, 44)) as pilot:
            for _ in range(600):
                await pilot.pause(0.05)
                if replayer.at_end:
                    break
            seen["at_end"] = replayer.at_end
            await pilot.press("home")
            for _ in range(600):
                await pilot.pause(0.05)
                if replayer.at_end:
                    break
            assert replayer.at_end
            backend.request_frame()  # the end state now, not at the next tick
            await pilot.pause(0.3)
            assert app.frame is not None
            seen["frame"] = app.frame

    asyncio.run(main())
    assert seen["at_end"]
    index = ReplayIndex.build(session)
    # played again from the start after a seek: the whole file's statistics
    assert_same_stats(seen["frame"].snapshot, index.stats_at(index.duration_s).snapshot())


def test_n_and_p_go_from_landmark_to_landmark(session: Path) -> None:
    app, _backend, replayer = seekable_app(session)
    times: list[tuple[str, float]] = []

    async def main() -> None:
        async with app.run_test(size=(140, 44)) as pilot:
            await pilot.pause(0.2)
            await pilot.press("space")  # paused: positions are exact
            for key in ("n", "n", "n", "n", "n", "p", "p", "p", "p", "p"):
                await pilot.press(key)
                await pilot.pause(0.05)
                times.append((key, round(replayer.now_s(), 3)))

    asyncio.run(main())
    ix = ReplayIndex.build(session)
    lms = [round(lm.t_s, 3) for lm in ix.landmarks]
    assert [lm.kind for lm in ix.landmarks] == ["knob", "mark", "knob", "error"]
    assert [t for _, t in times] == [
        lms[0], lms[1], lms[2], lms[3],
        lms[3],  # no later one: it stays (with a notice)
        lms[2], lms[1], lms[0],
        lms[0], lms[0]]  # none before the first


@pytest.mark.parametrize("within_s", [60.0, 0.0])
def test_p_right_after_n_while_playing_goes_to_the_one_before(session: Path,
                                                              within_s: float) -> None:
    """`p` soon after `n` (while playing on) goes to the landmark before the one `n`
    went to; later, to that one. The window is widened (narrowed) here so that a loaded
    host's slow key presses cannot move the press out of (into) it."""
    app, backend, replayer = seekable_app(session, speed=2.0)
    backend.previous_within_s = within_s
    got: list[float] = []

    async def main() -> None:
        async with app.run_test(size=(140, 44)) as pilot:
            await pilot.pause(0.2)
            await pilot.press("n")  # the knob change at 40 s
            for _ in range(200):  # each seek done before the next key (a loaded host)
                if replayer.now_s() >= 39.0:
                    break
                await pilot.pause(0.01)
            await pilot.press("n")  # the mark at 70 s; playing on past it
            for _ in range(200):
                if replayer.now_s() >= 69.0:
                    break
                await pilot.pause(0.01)
            await pilot.press("p")  # within its 2 s of the jump
            got.append(replayer.now_s())

    asyncio.run(main())
    # Playing on at 2x, the clock moves on between the seek and its reading (by over a
    # second on a loaded host): what tells the two landmarks apart is where it landed.
    if within_s:
        assert 39.0 <= got[0] < 50.0  # the knob change at 40 s, before the mark
    else:
        assert 69.0 <= got[0] < 80.0  # the mark itself at 70 s, played past


def test_arrows_home_end_and_goto(session: Path) -> None:
    app, _backend, replayer = seekable_app(session)
    pos: dict[str, float] = {}

    async def main() -> None:
        async with app.run_test(size=(140, 44)) as pilot:
            await pilot.pause(0.2)
            await pilot.press("space")
            await pilot.press("g")
            await pilot.pause(0.1)
            await pilot.press(*"1:1x", "enter")  # a bad time: the dialog says so, stays
            await pilot.pause(0.1)
            pos["dialog_stays"] = len(app.screen_stack) > 1
            await pilot.press("backspace", "0", "enter")
            await pilot.pause(0.1)
            pos["goto"] = replayer.now_s()
            await pilot.press("right")
            pos["right"] = replayer.now_s()
            await pilot.press("shift+left")
            pos["shift_left"] = replayer.now_s()
            await pilot.press("left")
            pos["left"] = replayer.now_s()
            await pilot.press("end")
            pos["end"] = replayer.now_s()
            await pilot.press("shift+right")
            pos["past_end"] = replayer.now_s()
            await pilot.press("home")
            pos["home"] = replayer.now_s()
            await pilot.press("left")
            pos["before_start"] = replayer.now_s()

    asyncio.run(main())
    dur = ReplayIndex.build(session).duration_s
    assert pos == {"dialog_stays": True, "goto": 70.0, "right": 80.0, "shift_left": 20.0,
                   "left": 10.0, "end": dur, "past_end": dur, "home": 0.0,
                   "before_start": 0.0}


def test_timeline_shows_ticks_and_a_click_seeks(session: Path) -> None:
    app, _backend, replayer = seekable_app(session)
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with app.run_test(size=(140, 44)) as pilot:
            await pilot.pause(0.2)
            await pilot.press("space")
            tl = app.query_one(Timeline)
            text = tl.render().plain
            seen["ticks"] = text.splitlines()[0]
            seen["times"] = text.splitlines()[1]
            # a click at the middle of the strip: half the session
            width = tl.content_size.width
            await pilot.click(Timeline, offset=(tl.gutter.left + width // 2, 0))
            await pilot.pause(0.1)
            seen["clicked"] = replayer.now_s()

    asyncio.run(main())
    ticks = seen["ticks"]
    assert ticks.count("│") == 2 and ticks.count("▲") == 1 and ticks.count("✗") == 1
    assert ticks.index("│") < ticks.index("▲") < ticks.rindex("│") < ticks.index("✗")
    dur = ReplayIndex.build(session).duration_s
    assert seen["times"].lstrip().startswith("0:00") and format_time(dur) in seen["times"]
    assert seen["clicked"] == pytest.approx(dur / 2, abs=dur / 100)


def test_times_typed() -> None:
    assert parse_time("5:30") == 330.0
    assert parse_time("1:02:03") == 3723.0
    assert parse_time(" 330 ") == 330.0
    assert parse_time("90s") == 90.0
    assert parse_time("5m") == 300.0
    assert parse_time("1.5h") == 5400.0
    assert parse_time("0:07.5") == 7.5
    for bad in ("", "5:75", "abc", "-3", "1:2:3:4"):
        with pytest.raises(ValueError):
            parse_time(bad)
    assert format_time(330.0) == "5:30" and format_time(3723.0) == "1:02:03"
    assert parse_time(format_time(4000.0)) == 4000.0


def test_the_command_palette_has_the_seek_actions(session: Path) -> None:
    app, _backend, _replayer = seekable_app(session)
    titles: list[str] = []

    async def main() -> None:
        async with app.run_test(size=(140, 44)) as pilot:
            await pilot.pause(0.1)
            titles.extend(c.title for c in app.get_system_commands(app.screen))

    asyncio.run(main())
    assert {"Go to a time", "Next knob change, mark or error",
            "Previous knob change, mark or error", "Pause or play the replay"} <= set(titles)
