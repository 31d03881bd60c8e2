"""Tensor parallelism on the twin: N simulated GPUs, per-GPU power and caps (issue 10)."""

from __future__ import annotations

import asyncio

import pytest

from app.core.clock import LoopClock, run_async
from engines.base import EngineContext, Request
from engines.sim.engine import SimEngine, SimOptionError
from engines.sim.specs import GPUS, MODELS
from engines.sim.twin import GpuTwin
from meters.base import PowerCapError
from meters.sim.meter import SimMeter

H100 = GPUS["h100"]


def make(options: dict[str, object]) -> tuple[SimEngine, SimMeter, LoopClock]:
    clock = LoopClock()
    engine = SimEngine.from_options(EngineContext(clock=clock, emit=lambda _e: None), options)
    return engine, SimMeter.from_options({"engine": engine}), clock


def test_70b_on_four_gpus_reports_four_power_lines() -> None:
    async def main() -> None:
        engine, meter, clock = make({"model": "llama-3.1-70b", "tensor_parallel_size": 4})
        info = meter.info()
        assert [d.device for d in info.devices] == ["gpu0", "gpu1", "gpu2", "gpu3"]
        assert engine.info().details["tensor_parallel_size"] == 4
        await engine.start()

        async def one(i: int) -> None:
            async for _ in engine.generate(Request(f"r{i}", "", 200, 400)):
                pass

        task = asyncio.gather(*(one(i) for i in range(32)))
        await asyncio.sleep(2.0)
        samples = meter.sample(clock.now())
        assert [s.device for s in samples] == ["gpu0", "gpu1", "gpu2", "gpu3"]
        for s in samples:
            # Each GPU draws a single GPU's power (not the group's), busy but under TDP.
            assert 250 < (s.power_avg_w or 0) <= 700
            assert s.mem_used_mib and 60_000 < s.mem_used_mib < 81_920
        await task
        await engine.stop()

    run_async(main(), virtual=True)


def test_weights_and_kv_are_split_over_the_gpus() -> None:
    async def main() -> None:
        one = make({"model": "qwen3-8b"})[0]
        four = make({"model": "qwen3-8b", "tensor_parallel_size": 4})[0]
        assert four.memory.weights == pytest.approx(one.memory.weights / 4)
        # Each GPU holds a quarter of every token's KV and more room: >4x the tokens.
        assert four.sched.total_blocks > 4 * one.sched.total_blocks
        with pytest.raises(SimOptionError, match="tensor_parallel_size"):
            make({"tensor_parallel_size": 0})

    run_async(main(), virtual=True)


def test_all_reduce_makes_tp_steps_slower_than_ideal() -> None:
    model = MODELS["llama-3.1-70b"]
    tp4 = GpuTwin(H100, model, tensor_parallel_size=4)
    for n in (8, 512):
        work = tp4.roofline.decode_work(n, n * 500)
        t = tp4.roofline.times(work)
        assert t.comm_s > 0 and t.link_bytes > 0
        # Ideal: a quarter of one (hypothetical, big enough) GPU's kernel time.
        ideal = GpuTwin(H100, model).roofline.times(work)
        assert t.total_s > ideal.gpu_s / 4 + ideal.overhead_s
        assert t.total_s - t.comm_s == pytest.approx(ideal.gpu_s / 4 + ideal.overhead_s)
    # Communication grows with the tokens of the step.
    small = tp4.roofline.times(tp4.roofline.decode_work(8, 4000)).comm_s
    large = tp4.roofline.times(tp4.roofline.decode_work(512, 4000)).comm_s
    assert large > small


def test_power_cap_is_per_gpu_and_the_lowest_binds() -> None:
    async def main() -> None:
        engine, meter, clock = make({"model": "llama-3.1-70b", "tensor_parallel_size": 4})
        twin = engine.twin
        meter.set_power_limit("gpu2", 300)
        assert [s.power_limit_w for s in meter.sample(clock.now())] == [700, 700, 300, 700]
        assert [d.power_limit_w for d in meter.info().devices] == [700, 700, 300, 700]
        assert twin.power_limit_w == 300  # lock step: the slowest GPU paces the group
        assert meter.power_limit_record("gpu2")["limit_w"] == 300
        with pytest.raises(PowerCapError, match=r"no device 'gpu4'.*gpu0, gpu1, gpu2, gpu3"):
            meter.set_power_limit("gpu4", 300)
        work = twin.roofline.decode_work(0, 0)
        twin.roofline.add_chunk(work, 0, 8192)
        capped = twin.plan_step(work)
        assert capped.power_w <= 300
        for dev in ("gpu0", "gpu1", "gpu2", "gpu3"):
            meter.set_power_limit(dev, 700)
        assert twin.plan_step(work).times.total_s < capped.times.total_s

    run_async(main(), virtual=True)
