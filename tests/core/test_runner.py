"""The runner on a fake engine and fake meter, in virtual time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.core import knobs
from app.core.clock import run_async
from app.core.events import Event, KnobEvent, RequestEvent
from app.core.runner import RunConfig, Runner
from app.core.stats import LiveStats


def _run(cfg: RunConfig, during: Any = None) -> tuple[Runner, list[Event], Any]:
    runner = Runner(cfg)
    events: list[Event] = []
    runner.bus.subscribe(events.append)

    async def main() -> Any:
        if during is None:
            return await runner.run()
        task = asyncio.create_task(runner.run())
        await asyncio.sleep(0)
        await during(runner)
        return await task

    out = run_async(main(), virtual=True)
    return runner, events, out


def _cfg(**kw: Any) -> RunConfig:
    base: dict[str, Any] = dict(
        workload="sequential",
        workload_params={"variant": "mapreduce", "chunks": 8, "output_tokens": 20,
                         "reduce_tokens": 20},
        engine="fake", meters=["fake"], batch_limit=4, workflows=3,
    )
    base.update(kw)
    return RunConfig(**base)


def test_energy_per_stage_plus_idle_equals_measured() -> None:
    # Poisson arrivals leave idle gaps between workflows, so all three lines are non-zero.
    _, events, out = _run(_cfg(rate=0.5, workflows=4))
    s = out.summary
    measured = s["measured_energy_j"]["gpu"]
    idle = s["idle_energy_j"]["gpu"]
    stages = sum(st["energy_j"] for st in s["stages"])
    assert idle > 0 and stages > 0
    assert stages + idle == pytest.approx(measured, rel=1e-9)
    # The same holds when the session's events are replayed through LiveStats.
    replay = LiveStats()
    for ev in events:
        replay.on_event(ev)
    snap = replay.snapshot()
    assert sum(st.energy_j for st in snap.stages) + snap.idle_energy_j["gpu"] == pytest.approx(
        snap.energy_j["gpu"], rel=1e-9)
    assert {st.stage for st in snap.stages} == {"map", "reduce"}


def test_j_per_token_is_energy_over_tokens() -> None:
    _, _, out = _run(_cfg())
    s = out.summary
    assert s["output_tokens"] == 3 * (8 * 20 + 20)
    assert s["j_per_output_token"] == pytest.approx(s["energy_total_j"] / s["output_tokens"])
    for st in s["stages"]:
        assert st["j_per_output_token"] == pytest.approx(st["energy_j"] / st["output_tokens"])


def test_batch_limit_caps_requests_in_engine() -> None:
    runner, _, out = _run(_cfg(batch_limit=3, workflows=2))
    assert out.reason == "completed"
    engine: Any = runner._engine
    assert engine.max_in_flight == 3


def test_raising_batch_limit_releases_waiters_at_once_and_lowering_waits() -> None:
    seen: dict[str, int] = {}

    async def during(runner: Runner) -> None:
        await asyncio.sleep(0.05)
        engine: Any = runner._engine
        seen["before"] = engine.in_flight
        runner.set_knob("batch_limit", 8, source="ui")
        await asyncio.sleep(0)  # no virtual time passes
        await asyncio.sleep(0)
        seen["raised"] = engine.in_flight
        runner.set_knob("batch_limit", 2, source="ui")
        seen["lowered_now"] = engine.in_flight  # running requests are not interrupted
        await asyncio.sleep(1.0)
        seen["lowered_mid"] = engine.in_flight  # none has finished yet (2 s each)
        await asyncio.sleep(2.0)
        seen["lowered_later"] = engine.in_flight

    cfg = _cfg(batch_limit=1, workflows=1,
               workload_params={"variant": "mapreduce", "chunks": 12, "output_tokens": 200})
    _, events, _ = _run(cfg, during)
    assert seen["before"] == 1
    assert seen["raised"] == 8
    assert seen["lowered_now"] == 8
    assert seen["lowered_mid"] == 8
    assert seen["lowered_later"] == 2
    knob_events = [e for e in events if isinstance(e, KnobEvent) and e.source == "ui"]
    assert [(k.knob, k.previous, k.value, k.source) for k in knob_events] == [
        ("batch_limit", 1, 8, "ui"), ("batch_limit", 8, 2, "ui")]


def test_knob_schedule_changes_knob_through_set_knob() -> None:
    sched = [knobs.parse_at("0.5:batch_limit=2"), knobs.parse_at("0.7:max_tokens=5")]
    _, events, _ = _run(_cfg(schedule=sched))
    changes = [(e.knob, e.value, e.source, round(e.t_s, 3)) for e in events
               if isinstance(e, KnobEvent) and e.source == "schedule"]
    assert changes == [("batch_limit", 2, "schedule", 0.5), ("max_tokens", 5, "schedule", 0.7)]
    # Calls made after the change are capped at 5 output tokens.
    reqs = [e for e in events if isinstance(e, RequestEvent)]
    late = {e.request_id for e in reqs if e.phase == "submitted" and e.t_s > 0.7}
    early = {e.request_id for e in reqs if e.phase == "submitted" and e.t_s < 0.7}
    done = {e.request_id: e.output_tokens for e in reqs if e.phase == "finished"}
    assert late and all(done[r] == 5 for r in late)
    assert all(done[r] == 20 for r in early)


def test_real_gpu_power_cap_is_saved_applied_and_restored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from tests.fakes.fake_pynvml import FakeGpu, FakeNvml, install

    monkeypatch.setenv("WATTFLOW_STATE_DIR", str(tmp_path))
    fake = install(monkeypatch, FakeNvml([FakeGpu(limit_w=650.0)], root=True))
    seen: dict[str, float] = {}

    async def during(runner: Runner) -> None:
        await asyncio.sleep(0.3)
        seen["during"] = fake.gpus[0].limit_w
        seen["state_file"] = float((tmp_path / "powercap.json").exists())

    cfg = _cfg(meters=["nvml"], allow_power_cap=True, power_cap_w=300.0, workflows=None,
               duration_s=0.6, engine_options={"token_s": 0.001, "prefill_s": 0.001})
    runner = Runner(cfg)
    events: list[Event] = []
    runner.bus.subscribe(events.append)

    async def main() -> Any:
        task = asyncio.create_task(runner.run())
        await asyncio.sleep(0)
        await during(runner)
        return await task

    out = run_async(main(), virtual=False)
    assert out.reason == "completed"
    assert seen == {"during": 300.0, "state_file": 1.0}
    assert fake.gpus[0].limit_w == 650.0  # put back
    assert not (tmp_path / "powercap.json").exists()
    caps = [(e.value, e.source) for e in events
            if isinstance(e, KnobEvent) and e.knob == "power_cap"]
    assert caps == [(300.0, "cli"), (650.0, "restore")]


def test_invalid_knob_values_are_rejected() -> None:
    with pytest.raises(knobs.KnobError, match="unknown knob"):
        knobs.validate("voltage", 3)
    with pytest.raises(knobs.KnobError, match="whole number"):
        knobs.validate("batch_limit", 2.5)
    with pytest.raises(knobs.KnobError, match="between"):
        knobs.validate("batch_limit", 0)
    with pytest.raises(knobs.KnobError, match="SECONDS:KNOB=VALUE"):
        knobs.parse_at("soon:rate=3")


def test_power_cap_outside_device_range_is_a_knob_error() -> None:
    async def during(runner: Runner) -> None:
        await asyncio.sleep(0.01)
        with pytest.raises(knobs.KnobError, match=r"out of range for this GPU \(200-700 W\)"):
            runner.set_knob("power_cap", 50.0)

    _run(_cfg(workflows=1, meters=["sim"], engine="sim"), during)


def test_power_cap_on_a_real_meter_needs_permission_flag() -> None:
    async def during(runner: Runner) -> None:
        await asyncio.sleep(0.01)
        with pytest.raises(knobs.KnobError, match="--allow-power-cap"):
            runner.set_knob("power_cap", 300.0)

    _, events, _ = _run(_cfg(workflows=1), during)
    assert not [e for e in events if isinstance(e, KnobEvent) and e.knob == "power_cap"
                and e.source != "start"]


def test_failed_requests_are_recorded_with_reason_and_run_goes_on() -> None:
    cfg = _cfg(engine_options={"fail_every": 5}, workflows=4)
    _, events, out = _run(cfg)
    failed = [e for e in events if isinstance(e, RequestEvent) and e.phase == "failed"]
    assert failed and any(e.reason == "HTTP 500 from fake" for e in failed)
    assert out.reason == "completed"
    assert out.summary["failure_reasons"].get("HTTP 500 from fake", 0) >= 1


def test_engine_that_always_fails_ends_the_run_as_failed() -> None:
    cfg = _cfg(engine_options={"fail_every": 1}, workflows=None, duration_s=100.0,
               max_consecutive_failures=5)
    _, _, out = _run(cfg)
    assert out.reason == "failed"
    assert "in a row" in out.message


def test_duration_ends_run_and_cancels_queued_requests() -> None:
    cfg = _cfg(workflows=None, duration_s=2.0, batch_limit=2,
               workload_params={"variant": "mapreduce", "chunks": 30, "output_tokens": 100})
    _, events, out = _run(cfg)
    assert out.reason == "completed"
    assert out.summary["duration_s"] < 2.0 + 30.0
    reqs = [e for e in events if isinstance(e, RequestEvent)]
    submitted = {e.request_id for e in reqs if e.phase == "submitted"}
    closed = {e.request_id for e in reqs if e.phase in ("finished", "failed")}
    assert submitted == closed  # nothing left dangling
    assert any(e.reason == "run ended" for e in reqs if e.phase == "failed")


def test_stop_request_closes_run_as_interrupted() -> None:
    async def during(runner: Runner) -> None:
        await asyncio.sleep(1.0)
        runner.request_stop("interrupted", "stopped by Ctrl-C")

    _, events, out = _run(_cfg(workflows=None, duration_s=1000.0), during)
    assert out.reason == "interrupted"
    assert events[-1].kind == "end"
    assert out.summary["duration_s"] < 5.0


def test_max_num_seqs_is_a_drain_restart_resume_recorded_as_events() -> None:
    from app.core.events import EngineStateEvent

    cfg = RunConfig(workload="sequential",
                    workload_params={"variant": "mapreduce", "chunks": 16, "output_tokens": 100},
                    engine="sim", meters=["sim"], batch_limit=16, workflows=2,
                    schedule=[knobs.parse_at("0.5:max_num_seqs=4")])
    runner, events, out = _run(cfg)
    assert out.reason == "completed"
    engine: Any = runner._engine
    assert engine.info().max_num_seqs == 4
    change = [e for e in events if isinstance(e, KnobEvent) and e.knob == "max_num_seqs"
              and e.source != "start"]
    assert [(e.previous, e.value, e.source) for e in change] == [(1024, 4, "schedule")]
    notes = [e.note for e in events if isinstance(e, EngineStateEvent) and e.note]
    assert any("draining" in n for n in notes) and "restarted with max_num_seqs=4" in notes
    # Nothing was admitted while the engine drained: every request admitted after the
    # drain began started after the restart.
    t_restart = change[0].t_s
    admitted_during = [e for e in events if isinstance(e, RequestEvent)
                       and e.phase == "first_token" and 0.5 < e.t_s < t_restart
                       and e.t_s - (e.ttft_s or 0) > 0.5]
    assert admitted_during == []


def test_max_num_batched_tokens_is_a_knob_like_max_num_seqs() -> None:
    """The knob added in one spec (app/core/knobs.py) plus the engines' restart: set
    from `--at`, drained and restarted, recorded, and the twin's steps get smaller."""
    from app.core.events import EngineStateEvent

    cfg = RunConfig(workload="sequential",
                    workload_params={"variant": "mapreduce", "chunks": 16, "output_tokens": 50,
                                     "chunk_tokens": 4000},
                    engine="sim", meters=["sim"], batch_limit=16, workflows=2,
                    schedule=[knobs.parse_at("0.5:max_num_batched_tokens=512")])
    runner, events, out = _run(cfg)
    assert out.reason == "completed"
    engine: Any = runner._engine
    assert engine.sched.max_num_batched_tokens == 512
    change = [(e.previous, e.value, e.source) for e in events if isinstance(e, KnobEvent)
              and e.knob == "max_num_batched_tokens"]
    assert change == [(None, 8192, "start"), (8192, 512, "schedule")]
    notes = [e.note for e in events if isinstance(e, EngineStateEvent) and e.note]
    assert "restarted with max_num_batched_tokens=512" in notes
    with pytest.raises(knobs.KnobError, match="between 16 and 1000000"):
        knobs.parse_at("1:max_num_batched_tokens=8")


def test_max_num_seqs_on_an_engine_that_cannot_restart_is_refused() -> None:
    async def during(runner: Runner) -> None:
        await asyncio.sleep(0.01)
        with pytest.raises(knobs.KnobError, match="cannot change max_num_seqs"):
            runner.set_knob("max_num_seqs", 8)

    _run(_cfg(workflows=1), during)
