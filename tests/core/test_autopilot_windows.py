"""The objective judged window by window: the ledger judges each 30 s window on what
finished in it, and every decision of the autopilot carries the count."""

from __future__ import annotations

from app.core.autopilot.objective import parse_objective
from app.core.autopilot.windows import WindowLedger
from app.core.events import AutopilotEvent, Event, RequestEvent, WorkflowEvent

OBJECTIVE = parse_objective("ttft_p90=1s,tpot_p90=50ms")
OBJECTIVE_1S = parse_objective("ttft_p90=1s")  # the safety tests' default


def finished(t: float, ttft: float = 0.4, tpot: float = 0.02, stage: str = "s",
             rid: int = 0) -> RequestEvent:
    return RequestEvent(t_s=t, request_id=f"r{rid}-{t}", phase="finished", stage=stage,
                        ttft_s=ttft, tpot_s=tpot, latency_s=ttft + 100 * tpot,
                        output_tokens=100)


def fill(ledger: WindowLedger, start: float, n: int, **kw: float) -> None:
    for i in range(n):
        ledger.on_event(finished(start + i * 25.0 / n, **kw))  # type: ignore[arg-type]


def test_a_window_whose_p90_goes_over_is_a_miss_and_one_within_is_met() -> None:
    ledger = WindowLedger(OBJECTIVE, 30.0)
    fill(ledger, 0.0, 10)  # met
    fill(ledger, 30.0, 10, ttft=1.5)  # every TTFT over the limit
    fill(ledger, 60.0, 10, tpot=0.02)
    b = ledger.tally(95.0)
    assert (b.judged, b.missed) == (3, 1)
    assert b.text() == "2/3" and b.met == 2


def test_the_window_still_open_is_not_judged_yet() -> None:
    ledger = WindowLedger(OBJECTIVE, 30.0)
    fill(ledger, 0.0, 10, ttft=2.0)
    assert ledger.tally(29.0).judged == 0
    assert ledger.tally(31.0).missed == 1


def test_a_window_with_too_few_requests_is_not_judged() -> None:
    ledger = WindowLedger(OBJECTIVE, 30.0)
    fill(ledger, 0.0, 4, ttft=5.0)
    fill(ledger, 60.0, 10)
    b = ledger.tally(100.0)
    assert (b.judged, b.missed) == (1, 0)


def test_a_stage_target_counts_only_its_stage_and_a_workflow_target_workflows() -> None:
    obj = parse_objective("summarize:ttft_p90=1s,workflow_p90=10s")
    ledger = WindowLedger(obj, 30.0)
    fill(ledger, 0.0, 10, ttft=3.0, stage="other")  # not the target's stage
    for i in range(6):
        ledger.on_event(WorkflowEvent(t_s=40.0 + i, workflow_id=f"w{i}", phase="finished",
                                      latency_s=20.0))
    b = ledger.tally(70.0)
    # The first window had no request of the stage and no workflow: not judged.
    assert (b.judged, b.missed) == (1, 1)


def test_empty_windows_between_are_not_judged() -> None:
    ledger = WindowLedger(OBJECTIVE, 30.0)
    fill(ledger, 0.0, 10)
    fill(ledger, 300.0, 10, ttft=3.0)  # nine empty windows between
    t = ledger.tally(400.0)
    assert (t.judged, t.missed, t.met) == (2, 1, 1)


def test_every_decision_of_the_autopilot_carries_the_windows_met() -> None:
    """On the scripted fake plant: the count in the decisions grows with the run and
    matches a count made from the requests themselves."""
    from tests.core.test_autopilot_safety import capped, drive, make
    from tests.fakes.fake_plant import FakePlant

    pilot, path, published = make()
    seen: list[RequestEvent] = []
    on_event = pilot.on_event

    def both(ev: Event) -> None:
        if isinstance(ev, RequestEvent) and ev.phase == "finished":
            seen.append(ev)
        on_event(ev)

    pilot.on_event = both  # type: ignore[method-assign]
    drive(pilot, path, FakePlant(capped), 1, 600)
    counts = [e.measured["windows_met"] for e in published
              if isinstance(e, AutopilotEvent) and e.measured and "windows_met" in e.measured]
    assert len(counts) >= 10
    judged = [int(c.split("/")[1]) for c in counts]
    assert judged == sorted(judged) and judged[-1] >= 15
    # The last count against one made here from the requests of the closed windows.
    last = next(e for e in reversed(published) if isinstance(e, AutopilotEvent)
                and e.measured and "windows_met" in e.measured)
    own = WindowLedger(OBJECTIVE_1S, 30.0)
    for ev in seen:
        if ev.t_s < last.t_s:
            own.on_event(ev)
    assert last.measured is not None
    assert last.measured["windows_met"] == own.tally(last.t_s).text()
