"""Polls meters and hands their samples to the loop.

Blocking meters (NVML: one energy read spins the calling thread for milliseconds)
are read from one dedicated thread, never on the loop; samples cross back with
`call_soon_threadsafe`. Non-blocking meters (the simulated twin, which lives on the
loop's virtual time) are read from a loop task. A meter that raises is reported as
an `error` event and polled again next time: one bad read does not end a run.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from app.core.clock import Clock
from app.core.events import ErrorEvent, Event
from meters.base import DrainsMessages, Meter, SamplesFinal

#: GPU power readings update every 100 ms (NVML on an H100), so polling faster than
#: 100 Hz adds CPU and session size without new information.
MIN_POLL_INTERVAL_S = 0.01
MAX_POLL_INTERVAL_S = 60.0


class MeterPoller:
    def __init__(
        self,
        meters: list[Meter],
        clock: Clock,
        publish: Callable[[Event], None],
        interval_s: float | None = None,
    ) -> None:
        self._meters = meters
        self._clock = clock
        self._publish = publish
        self._interval_override = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # The pending callback of each loop-polled meter (its timer, or its reading
        # once the timer has fired).
        self._handles: dict[int, asyncio.Handle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._errors_reported: set[str] = set()
        # Abilities are known at construction; an isinstance check per read costs µs.
        self._drains = {id(m): m for m in meters if isinstance(m, DrainsMessages)}

    def _interval(self, meter: Meter) -> float:
        return self._interval_override or meter.info().poll_interval_s

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        blocking = [m for m in self._meters if m.info().blocking]
        for m in self._meters:
            if not m.info().blocking:
                self._handles[id(m)] = self._loop.call_soon(self._tick, m, self._interval(m))
        if blocking:
            self._thread = threading.Thread(
                target=self._poll_thread, args=(blocking,), name="wattflow-meters", daemon=True
            )
            self._thread.start()

    def _read(self, m: Meter) -> list[Event]:
        try:
            events: list[Event] = list(m.sample(self._clock.now()))
            drains = self._drains.get(id(m))
            if drains is not None:
                # A GPU lost mid-run or a counter reset, as one-line messages.
                for msg in drains.drain_errors() + drains.drain_notes():
                    events.append(ErrorEvent(t_s=self._clock.now(), source=f"meter:{m.name}",
                                             message=msg))
            return events
        except Exception as exc:  # a GPU that cannot be read must not end the run
            msg = f"{m.name}: {exc}".splitlines()[0]
            if msg in self._errors_reported:
                return []
            self._errors_reported.add(msg)
            return [ErrorEvent(t_s=self._clock.now(), source=f"meter:{m.name}", message=msg)]

    def _deliver(self, events: list[Event]) -> None:
        for ev in events:
            self._publish(ev)

    # A loop-polled meter is read by callbacks, not by a task that sleeps: an hour of
    # the twin takes 36,000 readings, and each sleep cost a future and a task step. The
    # timer fires `_due`, which queues the reading behind what is ready at that instant,
    # as the wake-up of a sleeping task was; the readings come at the same times and in
    # the same order among the run's other events.
    def _tick(self, m: Meter, interval: float) -> None:
        assert self._loop is not None
        self._deliver(self._read(m))
        self._handles[id(m)] = self._loop.call_later(interval, self._due, m, interval)

    def _due(self, m: Meter, interval: float) -> None:
        assert self._loop is not None
        self._handles[id(m)] = self._loop.call_soon(self._tick, m, interval)

    def _poll_thread(self, meters: list[Meter]) -> None:
        assert self._loop is not None
        interval = min(self._interval(m) for m in meters)
        while not self._stop.is_set():
            events: list[Event] = []
            for m in meters:
                events.extend(self._read(m))
            if events:
                try:
                    self._loop.call_soon_threadsafe(self._deliver, events)
                except RuntimeError:  # loop closed under us at shutdown
                    return
            self._stop.wait(interval)

    async def stop(self) -> None:
        """Stop polling, then take one last reading of every meter so that energy
        up to this instant is counted."""
        self._stop.set()
        if self._handles:
            for h in self._handles.values():
                h.cancel()
            self._handles.clear()
            # Two turns of the loop, as the cancelled polling tasks took to end: what
            # was ready at this instant still comes before the last readings.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
        for m in self._meters:
            # A meter that reads its energy counter rarely reads it now, so the run's
            # total is exact.
            if isinstance(m, SamplesFinal):
                try:
                    self._deliver(list(m.sample_final(self._clock.now())))
                    continue
                except Exception:
                    pass
            self._deliver(self._read(m))
