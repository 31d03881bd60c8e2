"""The runner under overload and total failure, on the fake engine in virtual time:
arrivals beyond the backlog are shed and recorded, admission stays cheap and exact when
thousands of waiters are cancelled, a run in which every request failed is a failed run
naming the engine's error, and the measured window is told apart from the drain."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.core.admission import Admission
from app.core.clock import run_async
from app.core.events import (
    EngineStateEvent,
    ErrorEvent,
    Event,
    RequestEvent,
    SessionHeader,
    WorkflowEvent,
)
from app.core.runner import ConfigError, RunConfig, Runner
from app.core.session_writer import SessionRecorder


def _run(cfg: RunConfig) -> tuple[list[Event], Any]:
    runner = Runner(cfg)
    events: list[Event] = []
    runner.bus.subscribe(events.append)
    out = run_async(runner.run(), virtual=True)
    return events, out


def _cfg(**kw: Any) -> RunConfig:
    base: dict[str, Any] = dict(
        workload="sequential",
        workload_params={"variant": "chain", "chunks": 2, "output_tokens": 20},
        engine="fake", meters=["fake"], batch_limit=2, duration_s=20.0,
    )
    base.update(kw)
    return RunConfig(**base)


def test_arrivals_beyond_the_backlog_are_shed_counted_and_recorded() -> None:
    # ~0.4 s per workflow at batch 2 against 50 arrivals/s: far more than it can serve.
    events, out = _run(_cfg(rate=50.0, max_backlog=5))
    shed = [e for e in events if isinstance(e, WorkflowEvent) and e.phase == "shed"]
    started = [e for e in events if isinstance(e, WorkflowEvent) and e.phase == "started"]
    assert len(shed) > 500
    assert "backlog full" in (shed[0].reason or "")
    # Every arrival is either started or shed: 20 s at 50/s.
    assert len(shed) + len(started) == pytest.approx(1000, rel=0.15)
    warnings = [e for e in events if isinstance(e, ErrorEvent) and e.source == "admission"]
    assert len(warnings) == 1 and "--max-backlog" in warnings[0].message
    # No request was ever made for a shed workflow.
    shed_ids = {e.workflow_id for e in shed}
    assert not any(isinstance(e, RequestEvent) and e.workflow_id in shed_ids for e in events)
    assert out.reason == "completed"


def test_a_backlog_wide_enough_sheds_nothing() -> None:
    events, _ = _run(_cfg(rate=2.0, max_backlog=1000, duration_s=10.0))
    assert not any(isinstance(e, WorkflowEvent) and e.phase == "shed" for e in events)


def test_closed_loop_never_sheds() -> None:
    events, _ = _run(_cfg(workload_params={"concurrency": 8, "chunks": 2}, max_backlog=1))
    assert not any(isinstance(e, WorkflowEvent) and e.phase == "shed" for e in events)


def test_the_window_and_the_drain_are_told_apart() -> None:
    events, out = _run(_cfg(duration_s=5.0, workload_params={"concurrency": 4, "chunks": 3,
                                                             "output_tokens": 200}))
    s = out.summary
    assert s["window_end_s"] == pytest.approx(5.0, abs=1e-6)
    assert s["drain_s"] > 0  # requests inside the engine at 5 s were let finish
    notes = [e for e in events if isinstance(e, EngineStateEvent) and (e.note or "")
             .startswith("drain:")]
    assert len(notes) == 1 and notes[0].t_s == pytest.approx(5.0)


def test_a_run_whose_every_request_failed_is_a_failed_run() -> None:
    _, out = _run(_cfg(engine_options={"fail_every": 1}, duration_s=3.0,
                            max_consecutive_failures=1000))
    assert out.reason == "failed"
    assert out.message.startswith("all ") and "requests failed; the last error:" in out.message
    assert out.message.endswith("HTTP 500 from fake")


def test_a_failure_streak_names_the_engines_error_not_a_guess() -> None:
    _, out = _run(_cfg(engine_options={"fail_every": 1}, duration_s=600.0,
                       max_consecutive_failures=5, workload_params={"concurrency": 2}))
    assert out.reason == "failed"
    assert "5 requests failed in a row, all with:" in out.message
    assert "looks down" not in out.message


def test_a_scheduled_change_past_the_end_is_reported() -> None:
    from app.core.knobs import ScheduledChange

    events, _ = _run(_cfg(duration_s=None, workflows=1,
                          schedule=[ScheduledChange(10_000.0, "batch_limit", 4)]))
    msgs = [e.message for e in events if isinstance(e, ErrorEvent) and e.source == "schedule"]
    assert any("never ran" in m and "10000" in m for m in msgs)


@pytest.mark.parametrize("interval", [1e-9, 0.0, 120.0])
def test_poll_interval_out_of_range_is_a_config_error(interval: float) -> None:
    with pytest.raises(ConfigError, match="poll interval"):
        _run(_cfg(poll_interval_s=interval))


def test_power_cap_out_of_range_is_refused_before_anything_is_written(tmp_path: Any) -> None:
    session = tmp_path / "s.jsonl"
    _, out = _run(_cfg(engine="sim", meters=["sim"], power_cap_w=50.0, session_path=session))
    assert out.config_error and "out of range" in out.message
    assert out.session_path is None and not session.exists()


# -- admission -------------------------------------------------------------------------

def test_cancelling_thousands_of_waiters_keeps_counts_exact() -> None:
    async def main() -> tuple[int, int, int]:
        adm = Admission(2)
        await adm.acquire()
        await adm.acquire()
        tasks = [asyncio.create_task(adm.acquire()) for _ in range(5000)]
        await asyncio.sleep(0)
        waiting_before = adm.waiting
        for t in tasks[::2]:
            t.cancel()
        await asyncio.sleep(0)
        waiting_after = adm.waiting
        adm.release()  # the slot goes to the first waiter still alive, not a cancelled one
        await asyncio.sleep(0)
        granted = sum(1 for t in tasks if t.done() and not t.cancelled())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return waiting_before, waiting_after, granted

    before, after, granted = asyncio.run(main())
    assert before == 5000
    assert after == 2500
    assert granted == 1


def test_a_slot_granted_as_its_waiter_is_cancelled_is_given_back() -> None:
    async def main() -> tuple[int, int]:
        adm = Admission(1)
        await adm.acquire()
        t = asyncio.create_task(adm.acquire())
        await asyncio.sleep(0)
        adm.release()  # grants t its slot...
        t.cancel()  # ...but t is cancelled before it resumes
        await asyncio.gather(t, return_exceptions=True)
        return adm.in_flight, adm.waiting

    assert asyncio.run(main()) == (0, 0)


# -- default session names -------------------------------------------------------------

def test_a_unique_recorder_moves_on_to_a_free_name(tmp_path: Any) -> None:
    base = tmp_path / "run.jsonl"
    base.write_text("someone else's\n")
    paths = []
    for _ in range(3):
        rec = SessionRecorder(base)
        header = SessionHeader(t_s=0.0, name="run", config={"session_path": str(base)})
        rec.open(header, unique=True)
        paths.append(rec.path)
        assert header.name == rec.path.stem
        assert header.config["session_path"] == str(rec.path)
        rec.abort()
    assert [p.name for p in paths] == ["run-2.jsonl", "run-3.jsonl", "run-4.jsonl"]
    assert base.read_text() == "someone else's\n"


def test_every_workflow_closes_once_even_when_it_fails_as_the_run_ends() -> None:
    # The soak's find: the last request fails (timeout) during the drain; the drain then
    # cancels its workflow while that workflow is closing its failed stage.
    events, _ = _run(_cfg(workload_params={"variant": "chain", "chunks": 2, "concurrency": 2,
                                           "output_tokens": 50},
                          engine_options={"token_s": 0.5}, request_timeout_s=1.0,
                          duration_s=0.5))
    started = {e.workflow_id for e in events if isinstance(e, WorkflowEvent)
               and e.phase == "started"}
    closing = [e.workflow_id for e in events if isinstance(e, WorkflowEvent)
               and e.phase in ("finished", "failed")]
    assert started and sorted(closing) == sorted(started)


def test_calls_cancelled_because_a_sibling_failed_are_not_cut_off_by_the_run() -> None:
    from app.core.events import RUN_ENDED, WORKFLOW_FAILED

    events, out = _run(_cfg(workload_params={"variant": "mapreduce", "chunks": 4,
                                             "output_tokens": 50},
                            engine_options={"fail_every": 4, "token_s": 0.05},
                            workflows=1, duration_s=None, batch_limit=8,
                            max_consecutive_failures=100))
    ended = [e for e in events if isinstance(e, RequestEvent)
             and e.phase in ("finished", "failed")]
    reasons = sorted(e.reason or "" for e in ended if e.phase == "failed")
    assert "HTTP 500 from fake" in reasons
    assert WORKFLOW_FAILED in reasons and RUN_ENDED not in reasons
    assert out.summary["requests_cancelled"] == 0
