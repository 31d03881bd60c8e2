"""Child process for the power-cap tests of `wattflow run`: the real CLI, with the fake
NVML (its state in a JSON file shared with the parent) where `import pynvml` finds it.

    python tests/commands/_run_with_fake_gpu.py FAKE_STATE wattflow-args...

Also registers engine "crash", whose every request raises (an engine that died).
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


if __name__ == "__main__":
    sys.modules["pynvml"] = FakeNvml(state_path=sys.argv[1])  # type: ignore[assignment]
    engines.register("crash", lambda: CrashingEngine.from_options)
    sys.exit(main(sys.argv[2:]))
