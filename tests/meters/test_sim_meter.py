"""SimMeter: NVML-like readings of the simulated GPU, on virtual time."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from app.core.clock import LoopClock, run_async
from app.core.events import Sample
from engines.base import EngineContext, Request
from engines.sim.engine import SimEngine
from meters.base import MeterUnavailable, PowerCapError
from meters.sim.meter import SimMeter


def make(options: dict[str, object] | None = None) -> tuple[SimEngine, SimMeter, LoopClock]:
    clock = LoopClock()
    engine = SimEngine.from_options(EngineContext(clock=clock, emit=lambda _e: None),
                                    options or {})
    return engine, SimMeter.from_options({"engine": engine}), clock


async def load(engine: SimEngine, n: int, prompt: int, out: int) -> None:
    async def one(i: int) -> None:
        async for _ in engine.generate(Request(f"r{i}", "", prompt, out)):
            pass

    await asyncio.gather(*(one(i) for i in range(n)))


def test_info_describes_one_cappable_gpu() -> None:
    async def main() -> None:
        _, meter, _ = make()
        info = meter.info()
        assert info.name == "sim" and info.blocking is False and info.poll_interval_s == 0.1
        (dev,) = info.devices
        assert (dev.device, dev.component) == ("gpu0", "gpu")
        assert dev.power_limit_range_w == (200.0, 700.0) and dev.power_limit_w == 700.0
        _, a100, _ = make({"gpu": "a100"})
        assert a100.info().devices[0].power_limit_range_w == (100.0, 400.0)

    run_async(main(), virtual=True)


def test_needs_the_sim_engine() -> None:
    for engine in (None, object()):
        with pytest.raises(MeterUnavailable, match="use it with --engine sim"):
            SimMeter.from_options({"engine": engine})


def test_energy_counter_is_the_integral_of_power() -> None:
    async def main() -> tuple[list[Sample], float]:
        engine, meter, clock = make()
        await engine.start()
        samples: list[Sample] = []

        async def poll() -> None:
            while True:
                samples.append(meter.sample(clock.now())[0])
                await asyncio.sleep(0.0005)  # far finer than a step

        poller = asyncio.create_task(poll())
        await asyncio.sleep(0.3)  # idle first
        await load(engine, 8, 700, 150)
        await asyncio.sleep(0.2)
        poller.cancel()
        await engine.stop()
        return samples, engine.twin.idle_w

    samples, idle_w = run_async(main(), virtual=True)
    assert samples[0].power_w == idle_w
    assert max(s.power_w or 0 for s in samples) > 300
    integral = sum((b.t_s - a.t_s) * (a.power_w or 0) for a, b in itertools.pairwise(samples))
    counted = ((samples[-1].energy_mj or 0) - (samples[0].energy_mj or 0)) / 1000
    assert counted == pytest.approx(integral, rel=0.01)
    energies = [s.energy_mj or 0 for s in samples]
    assert all(b >= a for a, b in itertools.pairwise(energies))


def test_reading_inside_a_step_interpolates() -> None:
    async def main() -> tuple[float, float, float]:
        engine, meter, clock = make()
        await engine.start()
        task = asyncio.create_task(load(engine, 1, 8000, 1))  # one long prefill step
        await asyncio.sleep(0.001)
        seg = engine.twin.at(clock.now())
        assert seg is not None
        e0, e1 = engine.twin.energy_j(seg.t0), engine.twin.energy_j(seg.t1)
        mid = (seg.t0 + seg.t1) / 2
        await asyncio.sleep(mid - clock.now())
        em = (meter.sample(clock.now())[0].energy_mj or 0) / 1000
        await task
        await engine.stop()
        return e0, em, e1

    e0, em, e1 = run_async(main(), virtual=True)
    assert e0 < em < e1
    assert em == pytest.approx((e0 + e1) / 2, rel=1e-6)


def test_sample_channels_under_load_and_idle() -> None:
    async def main() -> tuple[Sample, Sample, Sample]:
        engine, meter, clock = make()
        before = meter.sample(clock.now())[0]
        await engine.start()
        task = asyncio.create_task(load(engine, 64, 200, 2000))
        await asyncio.sleep(3.0)
        busy = meter.sample(clock.now())[0]
        await task
        await asyncio.sleep(120.0)
        idle = meter.sample(clock.now())[0]
        await engine.stop()
        return before, busy, idle

    before, busy, idle = run_async(main(), virtual=True)
    assert busy.util_pct is not None and busy.util_pct > 80
    assert busy.sm_clock_mhz is not None and busy.sm_clock_mhz > 1000
    assert busy.power_avg_w is not None and 450 < busy.power_avg_w <= 700
    assert busy.temp_c is not None and idle.temp_c is not None and busy.temp_c > idle.temp_c
    assert (busy.mem_used_mib or 0) > 60_000 > (before.mem_used_mib or 0)
    assert idle.util_pct == 0 and idle.power_w == idle.power_avg_w == 75.0
    assert idle.sm_clock_mhz == 345.0
    assert busy.power_limit_w == 700.0 and busy.meter == "sim" and busy.device == "gpu0"


def test_set_power_limit_validates() -> None:
    async def main() -> None:
        _, meter, clock = make()
        for bad in (150, 701, "lots"):
            with pytest.raises(PowerCapError) as exc:
                meter.set_power_limit("gpu0", bad)  # type: ignore[arg-type]
            assert "\n" not in str(exc.value)
        with pytest.raises(PowerCapError, match="no device"):
            meter.set_power_limit("gpu1", 300)
        meter.set_power_limit("gpu0", 300)
        assert meter.sample(clock.now())[0].power_limit_w == 300.0
        assert meter.info().devices[0].power_limit_w == 300.0

    run_async(main(), virtual=True)


def test_power_cap_takes_effect_mid_run() -> None:
    async def main() -> tuple[float, float]:
        engine, meter, clock = make()
        await engine.start()
        task = asyncio.create_task(load(engine, 256, 200, 3000))
        await asyncio.sleep(5.0)
        uncapped = meter.sample(clock.now())[0].power_avg_w or 0
        meter.set_power_limit("gpu0", 350)
        await asyncio.sleep(2.0)
        capped = meter.sample(clock.now())[0].power_avg_w or 0
        task.cancel()
        await engine.stop()
        return uncapped, capped

    uncapped, capped = run_async(main(), virtual=True)
    assert uncapped > 600
    assert capped <= 350
