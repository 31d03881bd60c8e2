"""A run is called saturated when the queue at admission keeps growing, or arrivals are
shed; not when a burst comes and goes. Through the headless printer and on the twin."""

from __future__ import annotations

import io

from app.core.clock import run_async
from app.core.events import EngineStateEvent, WorkflowEvent
from app.core.runner import RunConfig, Runner
from app.core.saturation import SaturationWatch
from app.core.stats import LiveStats
from app.headless import HeadlessPrinter


def _state(t: float, waiting: int) -> EngineStateEvent:
    return EngineStateEvent(t_s=t, source="client", running=64, waiting=waiting)


def test_a_growing_queue_is_saturation_a_burst_is_not() -> None:
    w = SaturationWatch()
    for t in range(0, 61):  # a burst: up to 40 waiting, back to 0
        w.on_event(_state(t, 40 if 10 <= t <= 20 else 0))
    assert w.reason() is None
    for t in range(61, 130):  # then it grows steadily
        w.on_event(_state(t, (t - 60) // 2))
    why = w.reason()
    assert why is not None and "waiting for admission" in why


def test_shed_arrivals_are_saturation() -> None:
    w = SaturationWatch()
    w.on_event(_state(1.0, 0))
    w.on_event(WorkflowEvent(t_s=2.0, workflow_id="w1", phase="shed", reason="backlog full"))
    assert w.reason(3.0) is not None and "shed" in (w.reason(3.0) or "")
    assert w.reason(100.0) is None  # a minute later, nothing shed since


def test_an_overloaded_twin_is_called_saturated_plainly() -> None:
    cfg = RunConfig(workload="interactive", workload_params={"rate": 20.0}, engine="sim",
                    meters=["sim"], batch_limit=8, duration_s=240.0, fast=True)
    runner = Runner(cfg)
    out = io.StringIO()
    runner.bus.subscribe(HeadlessPrinter(LiveStats(), out=out, period_s=0.0).on_event)
    run_async(runner.run(), virtual=True)
    text = out.getvalue()
    assert "SATURATED" in text and "cannot keep up" in text
