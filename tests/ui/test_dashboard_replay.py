"""The dashboard on a replay: space pauses, < and > change speed, knobs are refused
with a notice, q stops the replay."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from app.core.bus import EventBus
from app.core.clock import run_async
from app.core.replay import Replayer
from app.core.runner import RunConfig, Runner
from app.core.stats import LiveStats
from app.ui.app import DashboardApp
from app.ui.backends import ReplayBackend
from tests.ui.screen_text import screen_text

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short real session: the fake engine on virtual time, 60 s of run."""
    path = tmp_path_factory.mktemp("replay") / "s.jsonl"
    cfg = RunConfig(workload="sequential",
                    workload_params={"variant": "mapreduce", "chunks": 4, "output_tokens": 20,
                                     "reduce_tokens": 20},
                    engine="fake", meters=["fake"], batch_limit=4, duration_s=60.0,
                    session_path=path)
    run_async(Runner(cfg).run(), virtual=True)
    return path


def _app(session: Path, speed: float = 1.0) -> tuple[DashboardApp, ReplayBackend, Replayer]:
    bus = EventBus()
    stats = LiveStats()
    bus.subscribe(stats.on_event)
    replayer = Replayer(session, bus, speed=speed)
    backend = ReplayBackend(replayer, stats)
    return DashboardApp(backend, handle_signals=False), backend, replayer


def test_space_pauses_and_resumes_and_speed_keys_halve_and_double(session: Path) -> None:
    app, backend, replayer = _app(session)
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("space")
            seen["paused"] = replayer.paused
            seen["header_paused"] = "PAUSED" in screen_text(app)
            pos = replayer.now_s()
            await pilot.pause(0.3)
            seen["frozen"] = replayer.now_s() == pos
            await pilot.press("space")
            seen["resumed"] = not replayer.paused
            await pilot.press("greater_than_sign")
            seen["faster"] = replayer.speed
            await pilot.press("greater_than_sign", "less_than_sign", "less_than_sign",
                              "less_than_sign")
            seen["slower"] = replayer.speed
            await pilot.press("q")
            await pilot.pause(0.2)
            seen["running"] = app.is_running

    asyncio.run(main())
    assert seen == {"paused": True, "header_paused": True, "frozen": True, "resumed": True,
                    "faster": 2.0, "slower": 0.5, "running": False}
    assert backend.done and not backend.finished


def test_knob_keys_in_a_replay_give_a_notice_and_change_nothing(session: Path) -> None:
    app, _, _ = _app(session)
    messages: list[str] = []

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            await pilot.press("right_square_bracket", "comma", "k", "m")
            await pilot.pause(0.2)
            messages.extend(n.message for n in app._notifications)
            assert "read-only" in screen_text(app)

    asyncio.run(main())
    assert messages.count("knobs are read-only in a replay") == 3
    assert "marks are recorded in live runs only" in messages


def test_fast_replay_reaches_the_end_and_shows_the_recorded_totals(session: Path) -> None:
    app, backend, _ = _app(session, speed=float("inf"))

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            deadline = time.monotonic() + 10
            while not backend.done and time.monotonic() < deadline:
                await pilot.pause(0.05)
            await pilot.pause(0.2)
            assert app.is_running  # stays open on the final state until q
            assert app.frame is not None and app.frame.ended is not None
            assert app.frame.snapshot.requests_finished > 0
            assert "replay finished" in screen_text(app)
            stages = app.query_one("#stages")
            assert stages.row_count == 2  # type: ignore[attr-defined]  # map, reduce

    asyncio.run(main())
    assert backend.finished


@pytest.fixture(scope="module")
def marked_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 s of run with a mark at 20 s and the batch limit halved at 30 s."""
    path = tmp_path_factory.mktemp("replay-marks") / "s.jsonl"
    cfg = RunConfig(workload="sequential",
                    workload_params={"variant": "mapreduce", "chunks": 4, "output_tokens": 20,
                                     "reduce_tokens": 20},
                    engine="fake", meters=["fake"], batch_limit=4, duration_s=60.0,
                    session_path=path)
    runner = Runner(cfg)

    async def main() -> None:
        async def later() -> None:
            await asyncio.sleep(20.0)
            runner.mark("before the cut")
            await asyncio.sleep(10.0)
            runner.set_knob("batch_limit", 2, source="ui")

        task = asyncio.create_task(later())
        await runner.run()
        await task

    run_async(main(), virtual=True)
    return path


def test_replay_end_shows_marks_and_details_that_fit(marked_session: Path) -> None:
    app, backend, _ = _app(marked_session, speed=float("inf"))

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            deadline = time.monotonic() + 10
            while not backend.done and time.monotonic() < deadline:
                await pilot.pause(0.05)
            await pilot.pause(0.3)
            text = screen_text(app)
            lines = text.splitlines()
            log = app.query_one("#log")
            assert any("mark: before the cut" in str(line.text) for line in
                       log.lines)  # type: ignore[attr-defined]  # in the events panel
            assert "marks before the cut 20.0 s" in text  # on its border, in sight
            chart = app.query_one("#chart")
            axis = lines[chart.region.bottom - 2]  # the chart's time axis
            assert "m" in axis and "k" in axis  # ticks of the whole run
            assert "whole run" in lines[chart.region.y]
            totals = app.query_one("#totals").region
            for row in lines[totals.y:totals.bottom]:
                assert "…" not in row[totals.x:totals.right], row  # no column cut

    asyncio.run(main())
