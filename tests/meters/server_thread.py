"""`wattflow serve` servers (SimServer) on a loop of their own in a thread, as separate
machines would be: a blocking client in the test's loop (the dcgm meter opening) does
not stall them. `call` runs a function on their thread (their twins are not
thread-safe) and returns its result."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from engines.sim_server.server import ServeConfig, SimServer

T = TypeVar("T")


class ServersInThread:
    def __init__(self, configs: list[ServeConfig]) -> None:
        self.configs = configs
        self.servers: list[SimServer] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="test-servers")

    def __enter__(self) -> ServersInThread:
        self._thread.start()
        for cfg in self.configs:
            srv = SimServer(cfg)
            self._run(srv.start())
            self.servers.append(srv)
        return self

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the servers' loop (another fake to start there)."""
        return self._run(coro)

    def call(self, fn: Callable[[], T]) -> T:
        async def go() -> T:
            return fn()
        return self._run(go())  # type: ignore[no-any-return]

    def kill(self, i: int) -> None:
        self._run(self.servers[i].kill())

    def __exit__(self, *exc: object) -> None:
        for srv in self.servers:
            self._run(srv.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
