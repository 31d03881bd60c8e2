"""Is the run saturated? The engine cannot keep up with the arrivals when the queue at
admission keeps growing, or arrivals are being shed. Shown plainly by the headless
printer and the dashboard, whatever the workload's parameters asked for.

From the event stream alone (the client's engine-state readings, about once a second,
and shed workflows): saturated when, over the last `WINDOW_S`, the requests waiting for
admission grew by more than `MIN_GROWTH` and a quarter of where they were, and are still
waiting; or when a workflow was shed in that window.
"""

from __future__ import annotations

from collections import deque

from app.core.events import EngineStateEvent, Event, WorkflowEvent

WINDOW_S = 60.0
MIN_GROWTH = 8


class SaturationWatch:
    def __init__(self) -> None:
        self._waiting: deque[tuple[float, int]] = deque()
        self._last_shed_t: float | None = None
        self._shed = 0

    def on_event(self, ev: Event) -> None:
        if isinstance(ev, EngineStateEvent) and ev.source == "client" and ev.waiting is not None:
            self._waiting.append((ev.t_s, ev.waiting))
            while self._waiting and self._waiting[0][0] < ev.t_s - WINDOW_S:
                self._waiting.popleft()
        elif isinstance(ev, WorkflowEvent) and ev.phase == "shed":
            self._last_shed_t = ev.t_s
            self._shed += 1

    def reason(self, now_s: float | None = None) -> str | None:
        """Why the run is saturated now, in a few words; None when it keeps up."""
        now = now_s if now_s is not None else (self._waiting[-1][0] if self._waiting else 0.0)
        if self._last_shed_t is not None and now - self._last_shed_t <= WINDOW_S:
            return f"saturated: arrivals shed ({self._shed:,} so far)"
        if len(self._waiting) >= 2:
            (t0, w0), (t1, w1) = self._waiting[0], self._waiting[-1]
            if t1 - t0 >= WINDOW_S / 2 and w1 > 0 and w1 - w0 > max(MIN_GROWTH, w0 // 4):
                return f"saturated: {w1:,} waiting for admission, +{w1 - w0:,} in {t1 - t0:.0f} s"
        return None
