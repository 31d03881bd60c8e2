"""FakeEngine: a test engine with fixed per-token delays, optional failures, and a
record of how many requests were inside it at once. Not the simulated twin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from engines.base import EngineContext, EngineError, EngineInfo, Request, TokenEvent


class FakeEngine:
    name = "fake"

    def __init__(self, ctx: EngineContext, prefill_s: float = 0.01, token_s: float = 0.01,
                 fail_every: int = 0, text: str = "tok ") -> None:
        self.ctx = ctx
        self.prefill_s = prefill_s
        self.token_s = token_s
        self.fail_every = fail_every
        self.text = text
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls = 0
        self.started = False
        self.stopped = False
        self.log: list[tuple[float, str, str]] = []  # (t, event, request id)

    @classmethod
    def from_options(cls, ctx: EngineContext, options: dict[str, Any]) -> FakeEngine:
        opts = {k: v for k, v in options.items() if k != "seed"}
        return cls(ctx, **opts)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def info(self) -> EngineInfo:
        return EngineInfo(name="fake", model="fake")

    async def generate(self, request: Request) -> AsyncIterator[TokenEvent]:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.log.append((self.ctx.clock.now(), "start", request.request_id))
        try:
            if self.fail_every and self.calls % self.fail_every == 0:
                await asyncio.sleep(self.prefill_s)
                raise EngineError("HTTP 500 from fake")
            await asyncio.sleep(self.prefill_s)
            yield TokenEvent(t_s=self.ctx.clock.now(), prefill_tokens=request.prompt_tokens,
                             decode_tokens=1, text=self.text)
            for _ in range(request.max_tokens - 1):
                await asyncio.sleep(self.token_s)
                yield TokenEvent(t_s=self.ctx.clock.now(), decode_tokens=1, text=self.text)
            yield TokenEvent(t_s=self.ctx.clock.now(), finished=True, finish_reason="length",
                             output_tokens=request.max_tokens)
        finally:
            self.in_flight -= 1
            self.log.append((self.ctx.clock.now(), "end", request.request_id))
