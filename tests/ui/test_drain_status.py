"""The truth about a knob change that takes time: "draining 46 -> 2" after the batch
limit falls, until the engine runs no more than the limit; "restarting -> 128" while a
max_num_seqs restart is under way. Fed events directly, then on a real run."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot

from app.core.bus import EventBus
from app.core.events import EndEvent, EngineStateEvent, ErrorEvent, KnobEvent, MarkEvent
from app.core.stats import LiveStats
from app.ui.app import DashboardApp
from app.ui.backends import LiveBackend
from app.ui.feed import Feed
from tests.ui.screen_text import screen_text
from tests.ui.test_dashboard_live import drive, until

pytestmark = pytest.mark.timeout(60)


def _feed() -> Feed:
    bus = EventBus()
    return Feed(bus, LiveStats())


def test_draining_shows_until_the_engine_runs_no_more_than_the_limit() -> None:
    feed = _feed()
    feed.digest(EngineStateEvent(t_s=1.0, source="client", running=46, waiting=30))
    feed.digest(EngineStateEvent(t_s=1.0, running=46, waiting=0))
    feed.digest(KnobEvent(t_s=2.0, knob="batch_limit", value=2, previous=64, source="ui"))
    assert feed.frame(2.0).knob_status == {"batch_limit": "draining 46 -> 2"}
    feed.digest(EngineStateEvent(t_s=3.0, running=10, waiting=0))
    assert feed.frame(3.0).knob_status == {"batch_limit": "draining 10 -> 2"}
    feed.digest(EngineStateEvent(t_s=4.0, running=2, waiting=0))
    assert feed.frame(4.0).knob_status == {}
    # The engine then running more again is not a drain: only a lower limit starts one.
    feed.digest(EngineStateEvent(t_s=4.2, running=3, waiting=0))
    assert feed.frame(4.2).knob_status == {}
    # A drain the end of the run cut short is not shown as going on.
    feed.digest(KnobEvent(t_s=4.5, knob="batch_limit", value=1, previous=2, source="ui"))
    assert feed.frame(4.5).knob_status == {"batch_limit": "draining 3 -> 1"}
    feed.digest(EndEvent(t_s=4.6))
    assert feed.frame(4.6).knob_status == {}


def test_a_limit_above_what_runs_is_no_drain_and_a_client_count_serves_without_engine() -> None:
    feed = _feed()
    feed.digest(EngineStateEvent(t_s=1.0, source="client", running=5, waiting=0))
    feed.digest(KnobEvent(t_s=2.0, knob="batch_limit", value=8, previous=16, source="ui"))
    assert feed.frame(2.0).knob_status == {}
    # An engine that reports no counts: wattflow's own count of requests inside it.
    feed.digest(KnobEvent(t_s=3.0, knob="batch_limit", value=4, previous=8, source="ui"))
    assert feed.frame(3.0).knob_status == {"batch_limit": "draining 5 -> 4"}
    feed.digest(EngineStateEvent(t_s=4.0, source="client", running=4, waiting=3))
    assert feed.frame(4.0).knob_status == {}


def test_restart_shows_restarting_then_the_new_value_or_clears_on_its_error() -> None:
    feed = _feed()
    feed.digest(EngineStateEvent(t_s=1.0, source="client",
                                 note="draining to restart with max_num_seqs=128"))
    assert feed.frame(1.0).knob_status == {"max_num_seqs": "restarting -> 128"}
    feed.digest(KnobEvent(t_s=5.0, knob="max_num_seqs", value=128, previous=256, source="ui"))
    frame = feed.frame(5.0)
    assert frame.knob_status == {}
    feed.digest(EngineStateEvent(t_s=6.0, source="client",
                                 note="draining to restart with max_num_seqs=64"))
    feed.digest(ErrorEvent(t_s=9.0, source="engine",
                           message="max_num_seqs=64: 3 requests did not finish within 30 s"))
    frame = feed.frame(9.0)
    assert frame.knob_status == {}
    assert any("did not finish" in line.text for line in frame.log)


def test_marks_and_knob_changes_become_chart_ticks() -> None:
    feed = _feed()
    feed.digest(MarkEvent(t_s=10.0, label="m1"))
    feed.digest(KnobEvent(t_s=200.0, knob="power_cap", value=500.0, previous=700.0,
                          source="ui"))
    # Asked for what was there already: a record, not a change, so no tick.
    feed.digest(KnobEvent(t_s=201.0, knob="rate", value=2.0, previous=2.0, source="ui"))
    ticks = feed.frame(220.0).ticks
    assert [(t.t_s, t.kind, t.label) for t in ticks] == [(10.0, "mark", "m1"),
                                                         (200.0, "knob", "power_cap=500 W")]


def test_an_ended_run_is_charted_whole() -> None:
    from app.core.events import EndEvent, Sample

    feed = _feed()
    for i in range(3000):  # 300 s at 10 readings a second, cap 700 then 400 W
        feed.digest(Sample(t_s=i / 10, device="gpu0", power_w=300.0 + (i >= 1500) * 100,
                           power_limit_w=700.0 if i < 2000 else 400.0))
    live = feed.frame(300.0)
    assert live.span_s is None and live.gpus[0].points[0][0] >= 178.0  # the last 2 min
    feed.digest(EndEvent(t_s=300.0))
    ended = feed.frame(300.0)
    assert ended.span_s == pytest.approx(300.0)
    points = ended.gpus[0].points
    assert len(points) == 300 and points[0] == (0.5, 300.0) and points[-1] == (299.5, 400.0)
    assert ended.gpus[0].limit_steps == [(0.0, 700.0), (200.0, 400.0)]


def test_draining_appears_after_comma_on_a_real_run_and_clears_at_the_limit(
        tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    async def script(pilot: Pilot[None], app: DashboardApp, backend: LiveBackend) -> None:
        def busy() -> bool:
            f = app.frame
            return f is not None and f.engine_state is not None and \
                (f.engine_state.running or 0) >= 12

        await until(pilot, busy, timeout_s=20)
        await pilot.press("comma", "comma")  # 16 -> 8 -> 4
        await until(pilot, lambda: "draining" in screen_text(app), timeout_s=10)
        seen["status"] = app.frame.knob_status.get("batch_limit") if app.frame else None
        seen["screen"] = [line for line in screen_text(app).splitlines() if "draining" in line]
        await until(pilot, lambda: app.frame is not None and not app.frame.knob_status,
                    timeout_s=40)
        assert app.frame is not None and app.frame.engine_state is not None
        seen["running_at_clear"] = app.frame.engine_state.running
        await pilot.pause(0.3)
        seen["after"] = "draining" in screen_text(app)

    drive(tmp_path, script, batch_limit=16,
          workload_params={"variant": "mapreduce", "chunks": 16, "output_tokens": 400,
                           "reduce_tokens": 30})
    status = seen["status"]
    assert isinstance(status, str) and status.startswith("draining ") and status.endswith("-> 4")
    assert int(status.split()[1]) > 4
    assert "batch_limit" in seen["screen"][0]  # type: ignore[index]
    assert isinstance(seen["running_at_clear"], int) and seen["running_at_clear"] <= 4
    assert seen["after"] is False


def test_a_max_num_seqs_restart_shows_restarting_then_the_new_value(tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    async def script(pilot: Pilot[None], app: DashboardApp, backend: LiveBackend) -> None:
        def busy() -> bool:
            f = app.frame
            return f is not None and f.engine_state is not None and \
                (f.engine_state.running or 0) >= 4

        await until(pilot, busy, timeout_s=20)
        await backend.set_knob("max_num_seqs", 4)  # what `k max_num_seqs=4` does
        await until(pilot, lambda: "restarting -> 4" in screen_text(app), timeout_s=10)
        seen["row"] = next(line for line in screen_text(app).splitlines()
                           if "max_num_seqs" in line)
        await until(pilot, lambda: app.frame is not None and not app.frame.knob_status,
                    timeout_s=40)
        await pilot.pause(0.3)
        seen["after"] = next(line for line in screen_text(app).splitlines()
                             if "max_num_seqs" in line)

    _, events, _ = drive(tmp_path, script, batch_limit=16,
                         # Calls of ~6 s: the drain outlasts a slow paint on a busy machine.
                         workload_params={"variant": "mapreduce", "chunks": 8,
                                          "output_tokens": 600, "reduce_tokens": 30})
    assert "restarting -> 4" in str(seen["row"])
    after = str(seen["after"])
    assert "restarting" not in after and " 4 " in after
    assert [(e.knob, e.value) for e in events if isinstance(e, KnobEvent)
            and e.source == "ui"] == [("max_num_seqs", 4)]
