"""The run's one clock: seconds since the run started.

Wall time for real engines; virtual time for the simulated twin, so a one-hour
experiment runs in seconds. Virtual time is implemented at the event-loop level:
`VirtualTimeEventLoop` reports a virtual `time()` and, whenever the loop would
block waiting for its next timer, jumps virtual time forward to that timer instead
of sleeping. All code keeps using plain `asyncio.sleep` and timeouts; nothing needs
to know which clock is in force.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import selectors
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVarTuple

_Ts = TypeVarTuple("_Ts")

#: Wall seconds between two looks at real I/O while the virtual loop has work. An
#: hour on virtual time takes ~250k loop iterations; an epoll call on each was ~4% of
#: the run, for I/O that virtual runs barely have (a thread's `call_soon_threadsafe`
#: needs no look: its callback is already in the ready queue).
IO_POLL_INTERVAL_S = 0.001


class Clock(Protocol):
    virtual: bool

    def now(self) -> float:
        """Seconds since the run started."""
        ...


class LoopClock:
    """Reads the running loop's time, so it is wall or virtual as the loop is."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self.virtual = isinstance(self._loop, VirtualTimeEventLoop)

    def now(self) -> float:
        return self._loop.time() - self._t0


class ManualClock:
    """A clock tests move by hand."""

    virtual = True

    def __init__(self, t_s: float = 0.0) -> None:
        self.t_s = t_s

    def now(self) -> float:
        return self.t_s

    def advance(self, dt_s: float) -> None:
        self.t_s += dt_s


class _VirtualSelector(selectors.BaseSelector):
    """Wraps the real selector: polls I/O without blocking (at most once a millisecond
    of wall time while the loop has work), and when nothing is ready and the loop
    wanted to wait `timeout` seconds for a timer, advances the loop's virtual time by
    that much instead."""

    def __init__(self, inner: selectors.BaseSelector, loop: VirtualTimeEventLoop) -> None:
        self._inner = inner
        self._loop = loop
        self._next_poll = 0.0  # time.monotonic() of the next look at real I/O

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            # Nothing scheduled: only I/O or another thread can wake us. Block for real.
            return self._inner.select(None)
        now = time.monotonic()
        if now >= self._next_poll:
            self._next_poll = now + IO_POLL_INTERVAL_S
            ready = self._inner.select(0)
            if ready:
                return ready
        if timeout > 0:
            self._loop._advance(timeout)
        return []

    def close(self) -> None:
        self._inner.close()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Any:
        return self._inner.get_map()


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """An event loop whose time jumps to the next timer whenever it would idle."""

    def __init__(self) -> None:
        self._virtual_now = 0.0
        super().__init__(selectors.DefaultSelector())
        self._selector = _VirtualSelector(self._selector, self)  # type: ignore[has-type]

    def time(self) -> float:
        return self._virtual_now

    def _advance(self, dt_s: float) -> None:
        self._virtual_now += dt_s

    # An hour on virtual time queues ~180k callbacks and ~95k timers. Outside debug
    # mode these are the base class's call_soon and call_later without the calls
    # between them that only act in debug mode: the same handles, queued the same way.
    def call_soon(self, callback: Callable[[*_Ts], object], *args: *_Ts,
                  context: contextvars.Context | None = None) -> asyncio.Handle:
        if self._debug:  # type: ignore[attr-defined]
            return super().call_soon(callback, *args, context=context)
        if self._closed:  # type: ignore[attr-defined]
            raise RuntimeError("Event loop is closed")
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)  # type: ignore[attr-defined]
        return handle

    def call_later(self, delay: float, callback: Callable[[*_Ts], object],
                   *args: *_Ts,
                   context: contextvars.Context | None = None) -> asyncio.TimerHandle:
        if self._debug or delay is None:  # type: ignore[attr-defined]
            return super().call_later(delay, callback, *args, context=context)
        if self._closed:  # type: ignore[attr-defined]
            raise RuntimeError("Event loop is closed")
        timer = asyncio.TimerHandle(self._virtual_now + delay, callback, args, self, context)
        heapq.heappush(self._scheduled, timer)  # type: ignore[attr-defined]
        timer._scheduled = True  # type: ignore[attr-defined]
        return timer


def run_async(main: Any, *, virtual: bool = False) -> Any:
    """asyncio.run with a choice of clock."""
    if not virtual:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=VirtualTimeEventLoop) as runner:
        return runner.run(main)
