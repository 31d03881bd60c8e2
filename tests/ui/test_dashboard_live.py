"""The dashboard driving a real Runner on the simulated twin: keys go through
Runner.set_knob, `q` closes the session; on wall time (runner on the UI's loop) and on
virtual time (runner on its own thread)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from textual.pilot import Pilot

from app.core.events import Event, KnobEvent, MarkEvent
from app.core.runner import RunConfig, Runner, RunOutcome
from app.ui.app import DashboardApp
from app.ui.backends import LiveBackend
from app.ui.screens.knob_input import KnobInputScreen
from tests.ui.screen_text import screen_text

pytestmark = pytest.mark.timeout(60)

Script = Callable[[Pilot[None], DashboardApp, LiveBackend], Awaitable[None]]


def _config(tmp_path: Path, **kw: Any) -> RunConfig:
    base: dict[str, Any] = dict(
        workload="sequential",
        workload_params={"variant": "mapreduce", "chunks": 4, "output_tokens": 30,
                         "reduce_tokens": 30},
        engine="sim", meters=["sim"], batch_limit=8, duration_s=120.0,
        session_path=tmp_path / "run.jsonl",
    )
    base.update(kw)
    return RunConfig(**base)


async def until(pilot: Pilot[None], cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.02)


def drive(tmp_path: Path, script: Script, *, virtual: bool = False,
          **cfg: Any) -> tuple[RunOutcome, list[Event], DashboardApp]:
    runner = Runner(_config(tmp_path, **cfg))
    events: list[Event] = []
    runner.bus.subscribe(events.append)  # the test's own observer of what the runner did
    backend = LiveBackend(runner, virtual=virtual)
    app = DashboardApp(backend, handle_signals=False)

    async def main() -> RunOutcome:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: backend.ready)
            await script(pilot, app, backend)
            if not backend.done:
                await pilot.press("q")
                await until(pilot, lambda: backend.done)
        await backend.wait_done()
        return backend.result()

    outcome = asyncio.run(main())
    return outcome, events, app


def knob_events(events: list[Event]) -> list[tuple[str, Any, Any, str]]:
    """The changes made from the dashboard (the run's starting values are knob events
    too, with sources `cli` and `start`)."""
    return [(e.knob, e.previous, e.value, e.source) for e in events
            if isinstance(e, KnobEvent) and e.source == "ui"]


def test_power_cap_keys_step_25_watts_through_set_knob(tmp_path: Path) -> None:
    async def script(pilot: Pilot[None], app: DashboardApp, backend: LiveBackend) -> None:
        await pilot.press("left_square_bracket", "left_square_bracket", "right_square_bracket")
        await until(pilot, lambda: backend.runner.knobs["power_cap"] == 675.0)

    _, events, _ = drive(tmp_path, script)
    # The H100 twin starts at its 700 W limit.
    assert knob_events(events) == [("power_cap", 700.0, 675.0, "ui"),
                                   ("power_cap", 675.0, 650.0, "ui"),
                                   ("power_cap", 650.0, 675.0, "ui")]


def test_power_cap_up_at_the_device_limit_changes_nothing(tmp_path: Path) -> None:
    async def script(pilot: Pilot[None], app: DashboardApp, backend: LiveBackend) -> None:
        await pilot.press("right_square_bracket")
        await pilot.pause(0.2)
        assert any("stays at 700 W" in n.message for n in app._notifications)

    _, events, _ = drive(tmp_path, script)
    assert knob_events(events) == []


def test_batch_keys_halve_and_double(tmp_path: Path) -> None:
    async def script(pilot: Pilot[None], app: DashboardApp, backend: LiveBackend) -> None:
        for key, expected in (("comma", 4), ("comma", 2), ("full_stop", 4)):
            await pilot.press(key)

            def reached(e: int = expected) -> bool:
                return backend.runner.knobs["batch_limit"] == e

            await until(pilot, reached)
        assert backend.runner.admission.limit == 4

    _, events, _ = drive(tmp_path, script)
    assert knob_events(events) == [("batch_limit", 8, 4, "ui"), ("batch_limit", 4, 2, "ui"),
                                   ("batch_limit", 2, 4, "ui")]


def test_knob_modal_sets_rate_and_rejects_a_bad_value(tmp_path: Path) -> None:
    async def script(pilot: Pilot[None], app: DashboardApp, backend: LiveBackend) -> None:
        await pilot.press("k")
        await until(pilot, lambda: isinstance(app.screen, KnobInputScreen))
        await pilot.press(*"rate=fast", "enter")
        await pilot.pause(0.1)
        error = str(app.screen.query_one("#knob-error").render())
        assert "rate: 'fast' is not a number" in error
        assert isinstance(app.screen, KnobInputScreen)  # still open, nothing applied
        assert backend.runner.knobs["rate"] is None
        app.screen.query_one("#knob-entry").value = ""  # type: ignore[attr-defined]
        await pilot.press(*"rate=2", "enter")
        await until(pilot, lambda: not isinstance(app.screen, KnobInputScreen))

    _, events, _ = drive(tmp_path, script)
    assert knob_events(events) == [("rate", None, 2.0, "ui")]


def test_mark_key_records_a_mark_and_q_closes_the_session(tmp_path: Path) -> None:
    async def script(pilot: Pilot[None], app: DashboardApp, backend: LiveBackend) -> None:
        await pilot.press("m")
        await pilot.press("m")
        await until(pilot, lambda: app.frame is not None and app.frame.snapshot.requests_finished
                    > 0)

    outcome, events, app = drive(tmp_path, script)
    assert [e.label for e in events if isinstance(e, MarkEvent)] == ["m1", "m2"]
    assert outcome.reason == "interrupted"
    assert outcome.message == "quit from the dashboard"
    lines = (tmp_path / "run.jsonl").read_bytes().splitlines()
    end = orjson.loads(lines[-1])
    assert end["kind"] == "end" and end["reason"] == "interrupted"
    assert any(orjson.loads(x)["kind"] == "mark" for x in lines)
    assert app.frames_painted > 0


def test_run_that_ends_by_itself_leaves_the_dashboard_open_until_q(tmp_path: Path) -> None:
    async def script(pilot: Pilot[None], app: DashboardApp, backend: LiveBackend) -> None:
        await until(pilot, lambda: backend.done, timeout_s=20)
        await pilot.pause(0.3)
        assert app.is_running
        assert "completed; q to leave" in screen_text(app)
        await pilot.press("right_square_bracket")  # the run is over: refused, no crash
        await pilot.pause(0.1)
        assert any("has ended" in n.message for n in app._notifications)
        await pilot.press("q")
        await pilot.pause(0.2)
        assert not app.is_running

    outcome, _, _ = drive(tmp_path, script, duration_s=None, workflows=1)
    assert outcome.reason == "completed"


def test_virtual_time_runner_on_its_own_thread_takes_keys_and_quits(tmp_path: Path) -> None:
    wall: dict[str, float] = {}

    async def script(pilot: Pilot[None], app: DashboardApp, backend: LiveBackend) -> None:
        t0 = time.monotonic()
        await pilot.press("left_square_bracket")
        # Pilot.press waits for the screen to settle, slow while the runner's thread races;
        # the second change goes straight to the action the key is bound to.
        await app.run_action("batch(-1)")
        await until(pilot, lambda: backend.runner.knobs["batch_limit"] == 4)
        await until(pilot, lambda: app.frame is not None and app.frame.now_s > 60.0)
        wall["elapsed"] = time.monotonic() - t0
        wall["virtual"] = app.frame.now_s if app.frame else 0.0
        assert "virtual (wall" in screen_text(app)

    # Ten virtual hours, so that the run is still going when the script quits it (an hour
    # of the twin takes ~5 s of wall time).
    outcome, events, _ = drive(tmp_path, script, virtual=True, duration_s=36000.0)
    assert knob_events(events) == [("power_cap", 700.0, 675.0, "ui"),
                                   ("batch_limit", 8, 4, "ui")]
    assert wall["virtual"] > 5 * wall["elapsed"]  # time jumped: not paced by the UI
    assert outcome.reason == "interrupted"
    end = orjson.loads((tmp_path / "run.jsonl").read_bytes().splitlines()[-1])
    assert end["kind"] == "end"


def test_a_slow_dashboard_does_not_hold_the_runner_back(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Painting takes 300 ms here; the runner's virtual time must keep racing meanwhile and
    # the dashboard just paints the latest frame (stale frames are replaced in the queue).
    original = DashboardApp.on_frame_ready

    def slow_paint(self: DashboardApp, message: Any) -> None:
        time.sleep(0.3)
        original(self, message)

    monkeypatch.setattr(DashboardApp, "on_frame_ready", slow_paint)
    progress: dict[str, float] = {}

    async def script(pilot: Pilot[None], app: DashboardApp, backend: LiveBackend) -> None:
        await pilot.pause(1.5)
        progress["painted"] = app.frames_painted
        progress["runner_t"] = backend.runner.clock.now()

    drive(tmp_path, script, virtual=True, duration_s=3600.0)
    assert progress["painted"] <= 8  # at most ~1.5 s / 0.3 s paints, plus the first
    assert progress["runner_t"] > 30.0


def test_a_run_that_cannot_start_closes_the_dashboard_with_its_error(tmp_path: Path) -> None:
    # A bad engine option is refused before the run starts: the dashboard must not sit on
    # "ended; q to leave" with no reason; it closes and the error reaches the command.
    runner = Runner(_config(tmp_path, engine_options={"bogus": 1}))
    backend = LiveBackend(runner)
    app = DashboardApp(backend, handle_signals=False)

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: backend.done)
            await until(pilot, lambda: not app.is_running, timeout_s=5.0)

    asyncio.run(main())
    with pytest.raises(Exception, match="unknown option 'bogus'"):
        backend.result()
    assert not (tmp_path / "run.jsonl").exists()
