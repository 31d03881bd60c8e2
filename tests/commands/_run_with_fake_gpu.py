"""Child process for the power-cap tests of `wattflow run`: the real CLI, with the fake
NVML (its state in a JSON file shared with the parent) where `import pynvml` finds it.

    python tests/commands/_run_with_fake_gpu.py FAKE_STATE wattflow-args...

Also registers engine "crash", whose every request raises (an engine that died). With
FAKE_STUCK_SUBSCRIBER=1 in the environment, a subscriber blocks the run's loop for good
at the first token (a consumer stuck on a pipe nobody reads): only the stop watchdog
can then close the session and restore the limit.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import engines
from app.cli import main
from engines.base import EngineContext, EngineInfo, Request, TokenEvent
from tests.fakes.fake_pynvml import FakeNvml


class CrashingEngine:
    name = "crash"

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx

    @classmethod
    def from_options(cls, ctx: EngineContext, options: dict[str, Any]) -> CrashingEngine:
        return cls(ctx)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def info(self) -> EngineInfo:
        return EngineInfo(name="crash", model="none")

    async def generate(self, request: Request) -> AsyncIterator[TokenEvent]:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
        yield  # an async generator that never yields


def _install_stuck_subscriber() -> None:
    import time

    from app.core import runner as runner_mod

    original = runner_mod.Runner.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)

        def stuck(ev: Any) -> None:
            if ev.kind == "request" and ev.phase == "first_token":
                print("stuck", file=sys.stderr, flush=True)
                time.sleep(3600)

        self.bus.subscribe(stuck)

    runner_mod.Runner.__init__ = init  # type: ignore[method-assign]


if __name__ == "__main__":
    import os

    if os.environ.get("FAKE_STUCK_SUBSCRIBER") == "1":
        _install_stuck_subscriber()
    sys.modules["pynvml"] = FakeNvml(state_path=sys.argv[1])  # type: ignore[assignment]
    engines.register("crash", lambda: CrashingEngine.from_options)
    sys.exit(main(sys.argv[2:]))
