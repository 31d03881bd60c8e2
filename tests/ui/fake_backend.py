"""FakeBackend: a dashboard backend that paints one fixed frame built from made-up
numbers (no runner, no clock), for snapshot tests and key-handling tests."""

from __future__ import annotations

import asyncio
from typing import Any

from app.core.events import EngineStateEvent, SessionHeader
from app.core.knobs import KnobError, step_value
from app.core.stats import StageStats, StatsSnapshot
from app.core.stats_window import WindowStats
from app.ui.backends import Sink
from app.ui.feed import DeviceLimits, Frame, GpuTrace, LogLine, Tick
from tests.ui.screen_text import screen_text


def fake_frame(now_s: float = 300.0) -> Frame:
    # A GPU that idles at 90 W, runs at ~560 W, and is capped at 500 W from t=240 s.
    points = []
    for i in range(int(now_s * 10) - 1300, int(now_s * 10) + 1):
        t = i / 10
        busy = (i // 150) % 4 != 3
        w = (560.0 if t < 240 else 495.0) if busy else 90.0
        points.append((t, w + (i % 7) * 3.0))
    snap = StatsSnapshot(
        t_s=now_s, duration_s=now_s, requests_submitted=1290, requests_finished=1240,
        requests_failed=3, requests_cancelled=0, requests_in_flight=47, workflows_finished=61,
        workflows_failed=1, workflow_latency_p50_s=18.2, workflow_latency_p90_s=25.7,
        prompt_tokens=2_480_000, output_tokens=310_000, tokens_per_s=1033.3,
        requests_per_s=4.1, recent_tokens_per_s=1210.0, ttft_p50_s=0.084, ttft_p90_s=0.31,
        ttft_p99_s=0.92, tpot_p50_s=0.0213, latency_p50_s=3.42, latency_p90_s=6.8,
        latency_p99_s=11.9,
        energy_j={"gpu": 141_200.0, "cpu": 24_600.0, "dram": 3_100.0},
        idle_energy_j={"gpu": 9_800.0, "cpu": 20_000.0, "dram": 2_500.0},
        energy_total_j=168_900.0, avg_power_w={"gpu": 470.7, "cpu": 82.0, "dram": 10.3},
        power_w={"gpu0": 497.0, "cpu0": 85.0, "dram0": 10.5},
        j_per_output_token=0.5448, gpu_j_per_output_token=0.4555,
        stages=[
            StageStats("map", 980, 2, 0, 2.91, 4.1, 7.7, 0.071, 0.019, 1_960_000, 196_000,
                       88_000.0, {}, 0.449),
            StageStats("reduce", 200, 1, 0, 6.2, 8.8, 12.4, 0.22, 0.027, 450_000, 100_000,
                       48_000.0, {}, 0.48),
            StageStats("review", 60, 0, 0, 2.2, 3.0, 3.3, 0.05, 0.02, 70_000, 14_000,
                       5_200.0, {}, 0.371),
        ],
        knobs={"power_cap": 500.0, "batch_limit": 32, "rate": 0.25, "max_tokens": None},
        failure_reasons={"HTTP 500": 3},
        streamed_output_tokens=322_000, streamed_tokens_per_s=1073.3,
        j_per_streamed_token=0.5245, gpu_j_per_streamed_token=0.4385, tpot_p90_s=0.034,
        tpot_p99_s=0.051, running_tpot_s=0.0238,
        views={"knob": WindowStats(start_s=240.0, end_s=300.0, duration_s=60.0,
                                   streamed_tokens=66_000, tokens_per_s=1100.0,
                                   j_per_token=0.4912, latency_p50_s=3.61,
                                   latency_p90_s=7.2, latency_p99_s=12.6)},
    )
    header = SessionHeader(
        t_s=0.0, name="composite-sim-20250101-120000", clock="wall",
        engine={"name": "sim", "model": "meta-llama/Llama-3.1-8B-Instruct"},
        workload={"name": "composite", "params": {}},
    )
    log = [
        LogLine(1, 0.0, "run", "session composite-sim-20250101-120000: engine sim"
                " (meta-llama/Llama-3.1-8B-Instruct), workload composite, wall clock"),
        LogLine(2, 120.0, "knob", "batch_limit 64 → 32 (ui)"),
        LogLine(3, 180.5, "mark", "mark: m1"),
        LogLine(4, 201.2, "warning", "request failed: HTTP 500"),
        LogLine(5, 240.0, "knob", "power_cap 700 W → 500 W (ui)"),
    ]
    return Frame(
        now_s=now_s, snapshot=snap, header=header,
        gpus=[GpuTrace("gpu0", points, limit_w=500.0, util_pct=97.0, sm_clock_mhz=1410.0,
                       temp_c=61.0, limit_steps=[(0.0, 700.0), (240.0, 500.0)])],
        devices=[DeviceLimits("gpu0", "NVIDIA H100 80GB HBM3", 700.0, (200.0, 700.0))],
        log=log,
        engine_state=EngineStateEvent(t_s=now_s, running=45, waiting=2, kv_cache_pct=63.0,
                                      prefix_hit_pct=41.0),
        client_state=EngineStateEvent(t_s=now_s, source="client", running=47, waiting=12),
        ticks=[Tick(240.0, "knob", "power_cap=500 W"), Tick(280.0, "mark", "m2")],
    )


class FakeBackend:
    """Live-looking backend whose knobs live in a dict; records what the app asked."""

    mode = "live"
    virtual = False

    def __init__(self, frame: Frame | None = None) -> None:
        self.frame = frame or fake_frame()
        self.knobs: dict[str, float | None] = dict(self.frame.snapshot.knobs)
        self.calls: list[tuple[str, object]] = []
        self.done = False
        self.ready = True
        self._sink: Sink | None = None

    def start(self, sink: Sink) -> None:
        self._sink = sink
        sink.frame_ready(self.frame)

    def request_frame(self) -> None:
        if self._sink is not None:
            self._sink.frame_ready(self.frame)

    async def step_knob(self, name: str, direction: int) -> tuple[float | None, float | None]:
        before = self.knobs.get(name)
        bounds = (200.0, 700.0) if name == "power_cap" else None
        after = step_value(name, before, direction, bounds, in_force=700.0)
        if after != before:
            await self.set_knob(name, after)
        return before, after

    async def set_knob(self, name: str, value: float | None) -> None:
        if name == "rate" and value == 13:
            raise KnobError("rate: the fake refuses 13")
        self.knobs[name] = value
        self.calls.append((name, value))

    async def mark(self, label: str) -> None:
        self.calls.append(("mark", label))

    def request_quit(self, message: str) -> None:
        self.calls.append(("quit", message))
        self.done = True
        if self._sink is not None:
            self._sink.run_finished()

    async def wait_done(self) -> None:
        pass

    def toggle_pause(self) -> bool:
        raise KnobError("pause and play are for replays; a live run goes on")

    def scale_speed(self, factor: float) -> float:
        raise KnobError("replay speed is for replays")

    @property
    def speed(self) -> float | None:
        return None

    @property
    def paused(self) -> bool:
        return False


class FakeReplayBackend(FakeBackend):
    """The same frame as a replay at 2x: knobs read-only, pause and speed work."""

    mode = "replay"

    def __init__(self, frame: Frame | None = None) -> None:
        super().__init__(frame)
        self._paused = False
        self._speed = 2.0

    async def step_knob(self, name: str, direction: int) -> tuple[float | None, float | None]:
        raise KnobError("knobs are read-only in a replay")

    async def set_knob(self, name: str, value: float | None) -> None:
        raise KnobError("knobs are read-only in a replay")

    async def mark(self, label: str) -> None:
        raise KnobError("marks are recorded in live runs only")

    def toggle_pause(self) -> bool:
        self._paused = not self._paused
        return self._paused

    def scale_speed(self, factor: float) -> float:
        self._speed *= factor
        return self._speed

    @property
    def speed(self) -> float | None:
        return self._speed

    @property
    def paused(self) -> bool:
        return self._paused


def fake_app(mode: str = "live", frame: Frame | None = None) -> Any:
    from app.ui.app import DashboardApp

    backend = FakeBackend(frame) if mode == "live" else FakeReplayBackend(frame)
    return DashboardApp(backend, handle_signals=False)


async def settle(app: Any, pilot: Any) -> None:
    """Until the layout has settled: two paints (the first frame is posted from
    on_mount, before the panels know their size) and the key bar drawn."""
    for _ in range(100):
        if app.frames_painted >= 2 and "q quit" in screen_text(app):
            break
        await pilot.pause(0.05)
    await pilot.pause(0.1)


def render_screen(size: tuple[int, int], mode: str = "live",
                  frame: Frame | None = None) -> str:
    app = fake_app(mode, frame)
    out: list[str] = []

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await settle(app, pilot)
            out.append(screen_text(app))

    asyncio.run(main())
    return "\n".join(line.rstrip() for line in out[0].splitlines()) + "\n"
