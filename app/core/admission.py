"""Admission control: the batch limit as a resizable cap on requests in flight.

Raising the limit releases waiting requests at once; lowering it never interrupts a
running request: it takes effect as requests finish (no new one is admitted until
in-flight drops below the new limit). Waiters are served first come, first served.
`pause()` admits nobody until `resume()` (an engine restart drains behind it).
"""

from __future__ import annotations

import asyncio
from collections import deque


class Admission:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("batch limit must be at least 1")
        self._limit = limit
        self._in_flight = 0
        self._paused = False
        # A cancelled waiter is left in the deque and skipped when reached: removing it
        # from the middle would be O(n), and a drain cancels thousands at once.
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._waiting = 0  # live waiters in _waiters

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        return self._waiting

    def can_admit_now(self) -> bool:
        """Whether `acquire()` would return without waiting."""
        return self._in_flight < self._limit and not self._waiting and not self._paused

    def set_limit(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("batch limit must be at least 1")
        self._limit = limit
        self._wake()

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._wake()

    async def acquire(self) -> None:
        if self.can_admit_now():
            self._in_flight += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._waiting += 1
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # We were granted a slot just as we were cancelled: give it back.
                self.release()
            else:
                self._waiting -= 1  # still queued: _wake will skip the cancelled future
            raise

    def release(self) -> None:
        self._in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._in_flight < self._limit and not self._paused:
            fut = self._waiters.popleft()
            if fut.done():
                continue  # cancelled while waiting (already uncounted)
            self._waiting -= 1
            self._in_flight += 1
            fut.set_result(None)
        # Cancelled futures left at the head would otherwise pile up while paused.
        while self._waiters and self._waiters[0].done():
            self._waiters.popleft()
