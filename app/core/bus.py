"""The event bus: one publisher side, many subscribers, none able to stall the engine.

Two kinds of subscriber:
- inline (`subscribe`): a cheap synchronous callback run in `publish` (the recorder's
  buffer, the live stats). It must not block; an exception in it is reported once
  and the subscriber dropped, so a broken consumer cannot break a run.
- queued (`subscribe_queue`): a consumer that reads at its own pace (the dashboard,
  the headless printer). `publish` only appends to its buffer. When the buffer runs
  long, telemetry (`sample`, `engine_state`) is coalesced to the newest reading per
  device; request, stage, workflow, knob and every other event are never dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from app.core.events import COALESCIBLE_KINDS, Event

log = logging.getLogger(__name__)

Handler = Callable[[Event], None]


def _coalesce_key(ev: Event) -> tuple[str, str]:
    return (ev.kind, str(getattr(ev, "device", getattr(ev, "source", ""))))


class QueueSubscription:
    """A buffer a slow consumer drains with `await get_batch()`."""

    def __init__(self, soft_limit: int = 1000) -> None:
        self._buf: deque[Event] = deque()
        self._soft_limit = soft_limit
        self._wakeup = asyncio.Event()
        self._closed = False
        self.coalesced = 0  # telemetry events merged away, for the curious
        # Compact again only once the buffer has doubled since the last compaction:
        # a buffer full of events that cannot be merged (requests in a flood) would
        # otherwise be rescanned on every put, quadratic in a slow consumer's lag.
        self._compact_at = soft_limit

    def put(self, ev: Event) -> None:
        self._buf.append(ev)
        if len(self._buf) > self._compact_at:
            self._compact()
            self._compact_at = max(self._soft_limit, 2 * len(self._buf))
        self._wakeup.set()

    def _compact(self) -> None:
        # Keep every non-telemetry event, and only the newest telemetry event per
        # (kind, device); order among kept events is preserved.
        newest: dict[tuple[str, str], int] = {}
        for i, ev in enumerate(self._buf):
            if ev.kind in COALESCIBLE_KINDS:
                newest[_coalesce_key(ev)] = i
        kept = deque(
            ev
            for i, ev in enumerate(self._buf)
            if ev.kind not in COALESCIBLE_KINDS or newest[_coalesce_key(ev)] == i
        )
        self.coalesced += len(self._buf) - len(kept)
        self._buf = kept

    def get_nowait(self) -> list[Event]:
        out = list(self._buf)
        self._buf.clear()
        self._compact_at = self._soft_limit
        self._wakeup.clear()
        return out

    async def get_batch(self) -> list[Event]:
        """Everything buffered; waits if nothing is. Returns [] once closed and empty."""
        while not self._buf and not self._closed:
            await self._wakeup.wait()
            self._wakeup.clear()
        return self.get_nowait()

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

    def __len__(self) -> int:
        return len(self._buf)


class EventBus:
    def __init__(self) -> None:
        # A tuple, replaced (not changed) by subscribe/unsubscribe: publish iterates it
        # without the copy a list would need against changes made by a handler.
        self._handlers: tuple[Handler, ...] = ()
        self._queues: list[QueueSubscription] = []
        self.published = 0

    def subscribe(self, handler: Handler) -> None:
        self._handlers = (*self._handlers, handler)

    def unsubscribe(self, handler: Handler) -> None:
        if handler in self._handlers:
            handlers = list(self._handlers)
            handlers.remove(handler)
            self._handlers = tuple(handlers)

    def subscribe_queue(self, soft_limit: int = 1000) -> QueueSubscription:
        sub = QueueSubscription(soft_limit)
        self._queues.append(sub)
        return sub

    def publish(self, ev: Event) -> None:
        self.published += 1
        for h in self._handlers:
            try:
                h(ev)
            except Exception:
                log.exception("event subscriber %r failed; dropping it", h)
                self.unsubscribe(h)
        for q in self._queues:
            q.put(ev)

    def close(self) -> None:
        for q in self._queues:
            q.close()
