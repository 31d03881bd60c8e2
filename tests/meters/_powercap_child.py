"""Child process for the power-cap restore tests: a stand-in for a run that caps a GPU.

    python tests/meters/_powercap_child.py FAKE_STATE GUARD_STATE MODE

Installs the fake NVML (its state in FAKE_STATE, shared with the parent), caps gpu0 to
300 W through PowerCapGuard, prints "capped", then per MODE (normal and exception first wait for a line on stdin,
so the parent can see the cap in force):
  normal     finishes its (async) run and returns
  wait       waits for the parent's signal (SIGINT, SIGTERM or SIGKILL)
  exception  the "engine" raises while the run is going
Shaped like the runner: asyncio.run(main()) with the guard around the run.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from meters.nvml.meter import NvmlMeter
from meters.powercap.guard import PowerCapGuard
from tests.fakes.fake_pynvml import FakeNvml


async def _engine(mode: str) -> None:
    if mode != "wait":
        # Hold until the parent has seen the cap (it writes a line), then end.
        await asyncio.to_thread(sys.stdin.readline)
    if mode == "exception":
        await asyncio.sleep(0.01)
        raise RuntimeError("engine died")
    if mode == "wait":
        await asyncio.sleep(60)


async def main(guard_state: str, mode: str) -> None:
    meter = NvmlMeter()
    meter.open()
    try:
        with PowerCapGuard(guard_state) as guard:
            guard.apply(meter, "gpu0", 300.0)
            print("capped", flush=True)
            await asyncio.create_task(_engine(mode))
    finally:
        meter.close()


if __name__ == "__main__":
    fake_state, guard_state, mode = sys.argv[1:4]
    sys.modules["pynvml"] = FakeNvml(state_path=fake_state)  # type: ignore[assignment]
    asyncio.run(main(guard_state, mode))
