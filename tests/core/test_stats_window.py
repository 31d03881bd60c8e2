"""LiveStats on scripted event streams: cut-off and failed requests' energy kept apart
from a stage's J/token, the measured window split from the drain, shed workflows."""

from __future__ import annotations

from typing import Any

import pytest

from app.core import stats as stats_mod
from app.core.events import (
    RUN_ENDED,
    EndEvent,
    EngineStateEvent,
    Event,
    RequestEvent,
    Sample,
    WorkflowEvent,
)
from app.core.stats import LiveStats, StatsSnapshot
from app.headless import summary_lines


def req(t: float, rid: str, stage: str, phase: str, **kw: Any) -> RequestEvent:
    return RequestEvent(t_s=t, request_id=rid, stage=stage, phase=phase, workflow_id="w", **kw)


def samples(t_end: int, gpu_w: float = 100.0, cpu_w: float = 10.0) -> list[Event]:
    """One reading a second per device, cumulative counters at constant power."""
    out: list[Event] = []
    for t in range(t_end + 1):
        out.append(Sample(t_s=float(t), device="gpu0", component="gpu", energy_mj=gpu_w * 1e3 * t))
        out.append(Sample(t_s=float(t), device="cpu0", component="cpu", energy_mj=cpu_w * 1e3 * t))
    return out


def run_events(*, drain_event: bool = True, summary: dict[str, Any] | None = None) -> list[Event]:
    """12 s at 100 W GPU + 10 W CPU; the window ends at 8.5 s.

    map: finished at 3 s (100 tokens, 300 J), finished during the drain at 9.5 s (80
    tokens, 250 J), failed at 5 s (5 tokens, 20 J). late: both cut off at 12 s (10
    tokens, 77 J each). The client's token counter reads 20 tokens/s up to 8.5 s."""
    evs: list[Event] = samples(12)
    for t in range(9):
        evs.append(EngineStateEvent(t_s=float(t), source="client", output_tokens_total=20 * t))
    if drain_event:
        evs.append(EngineStateEvent(t_s=8.5, source="client", output_tokens_total=170,
                                    note="drain: duration reached"))
    evs.append(EngineStateEvent(t_s=10.0, source="client", output_tokens_total=190))
    for rid, stage in (("m0", "map"), ("m1", "map"), ("m2", "map"), ("l0", "late"), ("l1", "late")):
        evs.append(req(1.0, rid, stage, "submitted"))
    evs += [
        req(3.0, "m0", "map", "finished", prompt_tokens=50, output_tokens=100, latency_s=2.0,
            ttft_s=0.1, energy_j={"gpu": 300.0}),
        req(5.0, "m2", "map", "failed", output_tokens=5, ttft_s=0.1, reason="timeout",
            energy_j={"gpu": 20.0}),
        req(9.5, "m1", "map", "finished", prompt_tokens=50, output_tokens=80, latency_s=8.5,
            ttft_s=0.1, energy_j={"gpu": 250.0}),
        req(12.0, "l0", "late", "failed", output_tokens=10, ttft_s=0.2, reason=RUN_ENDED,
            energy_j={"gpu": 70.0, "cpu": 7.0}),
        req(12.0, "l1", "late", "failed", output_tokens=10, ttft_s=0.2, reason=RUN_ENDED,
            energy_j={"gpu": 70.0, "cpu": 7.0}),
    ]
    evs.sort(key=lambda e: e.t_s)  # stable: the drain event stays before the 9 s sample
    evs.append(EndEvent(t_s=12.0, summary=summary or {}))
    return evs


def snap_of(events: list[Event]) -> StatsSnapshot:
    s = LiveStats()
    for ev in events:
        s.on_event(ev)
    return s.snapshot()


def test_a_stage_all_cut_off_has_no_j_per_token_and_shows_its_energy() -> None:
    s = snap_of(run_events())
    stages = {st.stage: st for st in s.stages}
    late = stages["late"]
    assert (late.count, late.cancelled, late.failed) == (0, 2, 0)
    assert late.output_tokens == 0 and late.cancelled_output_tokens == 20
    assert late.energy_j == 0.0 and late.energy_by_component_j == {}
    assert late.cancelled_energy_j == pytest.approx(154.0)
    assert late.j_per_output_token is None
    m = stages["map"]
    assert (m.count, m.failed, m.cancelled) == (2, 1, 0)
    assert m.output_tokens == 180 and m.failed_output_tokens == 5
    assert m.energy_j == pytest.approx(550.0) and m.failed_energy_j == pytest.approx(20.0)
    assert m.j_per_output_token == pytest.approx(550.0 / 180)  # failed energy kept out
    # totals: finished requests' tokens only; everything measured in the numerator
    assert s.output_tokens == 180 and s.generated_output_tokens == 205
    assert (s.failed_output_tokens, s.cancelled_output_tokens) == (5, 20)
    assert s.energy_total_j == pytest.approx(1320.0)
    assert s.j_per_output_token == pytest.approx(1320.0 / 180)
    assert s.j_per_generated_token == pytest.approx(1320.0 / 205)
    assert s.gpu_j_per_output_token == pytest.approx(1200.0 / 180)
    assert (s.finished_energy_j, s.failed_energy_j, s.cancelled_energy_j) == pytest.approx(
        (550.0, 20.0, 154.0))
    # idle is still what no request was given, cut-off and failed ones included
    assert s.idle_energy_j["gpu"] == pytest.approx(1200.0 - 710.0)
    assert s.failure_reasons == {"timeout": 1}


def check_split(s: StatsSnapshot, generated_in_window: int = 170) -> None:
    assert s.window_end_s == pytest.approx(8.5) and s.drain_s == pytest.approx(3.5)
    assert s.duration_s == pytest.approx(12.0) and s.window_duration_s == pytest.approx(8.5)
    # counters interpolated between the readings at 8 s and 9 s
    assert s.window_energy_j == pytest.approx({"gpu": 850.0, "cpu": 85.0})
    assert s.drain_energy_j == pytest.approx({"gpu": 350.0, "cpu": 35.0})
    assert s.window_energy_total_j + s.drain_energy_total_j == pytest.approx(s.energy_total_j)
    assert s.window_avg_power_w == pytest.approx({"gpu": 100.0, "cpu": 10.0})
    # the request that finished at 9.5 s is the drain's, in tokens and count
    assert (s.window_requests_finished, s.window_output_tokens) == (1, 100)
    assert (s.drain_requests_finished, s.drain_output_tokens) == (1, 80)
    assert s.window_tokens_per_s == pytest.approx(100 / 8.5)
    assert s.window_j_per_output_token == pytest.approx(935.0 / 100)
    # the client's token counter at the window end (read then, or interpolated)
    assert s.window_generated_tokens == generated_in_window
    assert s.drain_generated_tokens == 205 - generated_in_window
    assert s.window_j_per_generated_token == pytest.approx(935.0 / generated_in_window)
    # the whole run keeps the drain
    assert s.output_tokens == 180 and s.requests_finished == 2


def test_window_split_at_the_drain_event() -> None:
    check_split(snap_of(run_events()))


def test_window_end_from_the_end_record_alone() -> None:
    # no reading of the token counter at 8.5 s: between 160 at 8 s and 190 at 10 s
    s = snap_of(run_events(drain_event=False, summary={"window_end_s": 8.5, "drain_s": 3.5}))
    check_split(s, generated_in_window=168)


def test_window_end_from_drain_s_alone() -> None:
    check_split(snap_of(run_events(drain_event=False, summary={"drain_s": 3.5})), 168)


def test_end_record_wins_over_the_drain_event() -> None:
    s = snap_of(run_events(summary={"window_end_s": 9.0}))
    assert s.window_end_s == 9.0 and s.window_energy_j["gpu"] == pytest.approx(900.0)


def test_finished_event_published_after_the_drain_event_counts_by_its_time() -> None:
    evs = run_events()
    late = req(8.4, "m9", "map", "finished", output_tokens=7, energy_j={"gpu": 1.0})
    evs.insert(len(evs) - 1, late)  # published just before the end, timed before the window end
    s = snap_of(evs)
    assert (s.window_requests_finished, s.window_output_tokens) == (2, 107)
    assert (s.drain_requests_finished, s.drain_output_tokens) == (1, 80)


def test_without_a_window_end_the_whole_run_is_the_window() -> None:
    evs = [e for e in run_events(drain_event=False)]
    s = snap_of(evs)
    assert s.window_end_s is None and s.drain_s is None
    assert s.window_duration_s == s.duration_s == pytest.approx(12.0)
    assert s.window_energy_j == pytest.approx(s.energy_j)
    assert s.window_output_tokens == s.output_tokens == 180
    assert s.window_j_per_output_token == pytest.approx(s.j_per_output_token)
    assert s.drain_energy_j == {} and s.drain_generated_tokens is None


def test_live_snapshot_before_and_during_the_drain() -> None:
    live = LiveStats()
    evs = run_events()
    for ev in evs:
        if ev.t_s > 8.2:
            break
        live.on_event(ev)
    before = live.snapshot()
    assert before.window_end_s is None and before.window_duration_s == pytest.approx(8.0)
    for ev in evs:
        if 8.2 < ev.t_s <= 10.0:
            live.on_event(ev)
    during = live.snapshot()
    assert during.window_end_s == pytest.approx(8.5) and during.drain_s == pytest.approx(1.5)
    assert during.window_energy_j["gpu"] == pytest.approx(850.0)
    assert during.drain_energy_j["gpu"] == pytest.approx(150.0)


def test_a_window_end_older_than_the_kept_readings_is_unknown(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats_mod, "SPLIT_HORIZON_S", 2.0)
    s = snap_of(run_events(drain_event=False, summary={"window_end_s": 4.0}))
    assert s.window_end_s == 4.0 and s.drain_s == pytest.approx(8.0)
    assert s.window_energy_j == {} and s.window_j_per_output_token is None
    assert s.window_j_per_generated_token is None
    # the finished requests dropped were all before the window end: still exact
    assert (s.window_output_tokens, s.drain_output_tokens) == (100, 80)
    assert s.energy_total_j == pytest.approx(1320.0)  # the whole run is unaffected


def test_finished_requests_dropped_after_the_window_end_make_the_split_unknown(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats_mod, "SPLIT_HORIZON_S", 2.0)
    evs = run_events(drain_event=False, summary={"window_end_s": 1.0})
    evs.insert(-1, req(11.9, "m8", "map", "finished", output_tokens=1))
    s = snap_of(evs)  # the one at 3 s (after 1 s) was dropped when 9.5 s came
    assert s.window_output_tokens is None and s.drain_requests_finished is None
    assert s.window_j_per_output_token is None


def test_wrongly_typed_window_end_is_ignored() -> None:
    s = snap_of(run_events(drain_event=False, summary={"window_end_s": "soon", "drain_s": True}))
    assert s.window_end_s is None and s.drain_s is None


def test_shed_workflows_are_counted() -> None:
    evs = run_events()
    evs[-1:-1] = [
        WorkflowEvent(t_s=2.0, workflow_id="a", phase="shed", reason="backlog over 1000"),
        WorkflowEvent(t_s=2.5, workflow_id="b", phase="shed", reason="backlog over 1000"),
        WorkflowEvent(t_s=4.0, workflow_id="c", phase="finished", latency_s=3.0),
    ]
    s = snap_of(evs)
    assert s.workflows_shed == 2 and s.shed_reasons == {"backlog over 1000": 2}
    assert s.workflows_finished == 1 and s.workflows_failed == 0
    d = s.to_dict()
    assert d["workflows_shed"] == 2 and d["window_end_s"] == pytest.approx(8.5)


def test_headless_summary_shows_window_drain_and_shed() -> None:
    evs = run_events()
    evs.insert(-1, WorkflowEvent(t_s=2.0, workflow_id="a", phase="shed", reason="backlog"))
    lines = summary_lines(snap_of(evs).to_dict())
    text = "\n".join(lines)
    assert lines[0] == "duration 8.5 s measured + 3.5 s drain"
    assert "2 cut off" in text and "1 shed" in text
    assert "1 workflow arrivals shed: the engine could not keep up" in text
    assert f"{935.0 / 100:.4f} in the measured window" in text


def test_headless_summary_of_an_older_run_is_unchanged() -> None:
    lines = summary_lines({"duration_s": 10.0, "requests_finished": 3, "requests_failed": 0,
                           "workflows_finished": 1, "output_tokens": 30, "prompt_tokens": 9})
    assert lines[0] == "duration 10.0 s"
    assert not any(" shed" in x or "cut off" in x for x in lines)
