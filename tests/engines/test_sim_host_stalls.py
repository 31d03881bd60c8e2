"""The twin on the wall clock is immune to host lag: while requests are in the engine,
no GPU sample reads idle, even when the event loop stalls for 300 ms (a busy host, a
slow subscriber). A stall delays the simulation; it must not leak into the simulated
GPU as idle time."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from app.core.clock import run_async
from app.core.events import Event, RequestEvent, Sample
from app.core.runner import RunConfig, Runner

pytestmark = pytest.mark.timeout(60)


def _busy_run(stall_s: float) -> tuple[list[Event], float]:
    cfg = RunConfig(workload="sequential",
                    workload_params={"variant": "chain", "chunks": 50, "chunk_tokens": 256,
                                     "output_tokens": 400, "concurrency": 8},
                    engine="sim", meters=["sim"], batch_limit=8, duration_s=3.0,
                    poll_interval_s=0.02)
    runner = Runner(cfg)
    events: list[Event] = []
    runner.bus.subscribe(events.append)

    async def stalls() -> None:
        await asyncio.sleep(0.5)
        while True:
            time.sleep(stall_s)  # blocks the loop, as a loaded host or a stuck consumer does
            await asyncio.sleep(0.4)

    async def main() -> Any:
        task = asyncio.create_task(stalls())
        try:
            return await runner.run()
        finally:
            task.cancel()

    run_async(main(), virtual=False)
    engine: Any = runner._engine
    return events, float(engine.twin.idle_w)


def test_a_stalled_loop_never_reads_as_an_idle_gpu() -> None:
    events, idle_w = _busy_run(0.3)
    first = min(e.t_s for e in events if isinstance(e, RequestEvent) and e.phase == "first_token")
    # The chains keep 8 requests in the engine from the first token to the deadline.
    busy = [e for e in events if isinstance(e, Sample) and first + 0.05 < e.t_s < 2.9]
    assert len(busy) > 30
    idle = [e for e in busy if e.power_w is not None and e.power_w <= idle_w + 1e-6]
    assert idle == [], f"{len(idle)} of {len(busy)} samples read idle: {[s.t_s for s in idle]}"
    times = [e.t_s for e in events if isinstance(e, Sample)]
    assert times == sorted(times) and len(set(times)) == len(times)  # monotonic, no repeats
    # The energy counter never runs backwards.
    energy = [e.energy_mj for e in events if isinstance(e, Sample) and e.energy_mj is not None]
    assert all(b >= a for a, b in itertools.pairwise(energy))
