"""The autopilot in the dashboard, on a real Runner on virtual time: its state on the
knobs panel's title, each knob's setter beside it, its decisions in the event log, `a`
turns it off and on; a run without one says how to start it."""

from __future__ import annotations

from pathlib import Path

from textual.pilot import Pilot

from app.core.events import AutopilotEvent, KnobEvent
from app.ui.app import DashboardApp
from app.ui.backends import LiveBackend
from tests.ui.screen_text import screen_text
from tests.ui.test_dashboard_live import drive, until


def test_autopilot_state_setters_and_the_a_key(tmp_path: Path) -> None:
    seen: dict[str, str] = {}

    async def script(pilot: Pilot[None], app: DashboardApp, backend: LiveBackend) -> None:
        pilot_ = backend.runner.autopilot
        assert pilot_ is not None
        # Wait for its first knob change (virtual time races ahead of the UI).
        # (Its first move waits for a few epochs of load; with the dashboard painting,
        # virtual time runs slower at the start.)
        await until(pilot, lambda: any(
            s == "autopilot" for s in (app.frame.knob_sources.values() if app.frame else ())),
            timeout_s=60)
        await pilot.pause(0.3)
        knobs = app.query_one("#knobs")
        seen["title"] = str(knobs.border_title)
        seen["screen"] = screen_text(app)
        await pilot.press("a")
        await until(pilot, lambda: not pilot_.enabled)
        await until(pilot, lambda: bool(app.frame and app.frame.autopilot
                                        and app.frame.autopilot.state == "off"))
        await pilot.pause(0.3)
        seen["off_title"] = str(knobs.border_title)
        # Pilot.press waits for the screen to settle, slow while the runner's thread
        # races: on again through the action the key is bound to.
        await app.run_action("autopilot")
        await until(pilot, lambda: pilot_.enabled)

    # Ten virtual hours: the twin must not finish them before the script is done (a
    # virtual hour takes ~5 s of wall time, less on a quiet machine).
    _, events, _ = drive(tmp_path, script, virtual=True, duration_s=36000.0,
                         autopilot="ttft_p90=2s,tpot_p90=80ms",
                         autopilot_bounds=["power_cap=300..700"])
    assert "autopilot" in seen["title"]
    assert "by autopilot" in seen["screen"]
    assert "autopilot" in seen["screen"]  # its decisions in the event log
    assert "autopilot off" in seen["off_title"]
    states = [e.state for e in events if isinstance(e, AutopilotEvent)]
    assert "off" in states and states.index("off") < len(states) - 1  # then on again
    assert any(isinstance(e, KnobEvent) and e.source == "autopilot" and e.reason for e in events)


def test_the_a_key_without_an_autopilot_says_how_to_start_one(tmp_path: Path) -> None:
    async def script(pilot: Pilot[None], app: DashboardApp, backend: LiveBackend) -> None:
        await pilot.press("a")
        await pilot.pause(0.3)
        assert any("--autopilot" in n.message for n in app._notifications)

    drive(tmp_path, script)


def test_the_title_shows_the_windows_met_from_the_last_decision_when_wide() -> None:
    """The count rides on decisions only: a change of state after one keeps it."""
    from app.core.bus import EventBus
    from app.core.stats import LiveStats
    from app.ui.feed import Feed
    from app.ui.widgets.knobs_panel import autopilot_title

    feed = Feed(EventBus(), LiveStats())
    objective = "ttft_p90=2s,tpot_p90=80ms"
    feed.digest(AutopilotEvent(t_s=60.0, state="holding", objective=objective,
                                 reason="holding", measured={"windows_met": "104/110"}))
    feed.digest(AutopilotEvent(t_s=61.0, state="settling", objective=objective,
                                 reason="turned on"))
    frame = feed.frame(61.0)
    assert autopilot_title(frame, 100) == (
        "knobs · autopilot settling · ttft_p90=2s,tpot_p90=80ms · met 104/110")
    # Narrower: the objective first, else the count (the knobs panel is ~54 wide).
    assert autopilot_title(frame, 57) == "knobs · autopilot settling · ttft_p90=2s,tpot_p90=80ms"
    assert autopilot_title(frame, 54) == "knobs · autopilot settling · met 104/110"
    assert autopilot_title(frame, 30) == "knobs · autopilot settling"
