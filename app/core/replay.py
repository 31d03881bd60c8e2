"""Replay a recorded session: its events are published again, in order, on the same
kind of bus a live run uses, paced by their timestamps, so every subscriber (live
stats, the headless printer, a dashboard) works on a replay exactly as on a run.

Pacing follows `speed` (2.0: twice as fast; `math.inf`: as fast as possible) and can be
changed, paused and resumed while the replay runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from pathlib import Path

from app.core.bus import EventBus
from app.core.session_reader import SessionStream, open_session

MIN_SPEED, MAX_SPEED = 1 / 64, 4096.0


class Replayer:
    def __init__(self, path: Path | str, bus: EventBus, speed: float = 1.0) -> None:
        self.stream: SessionStream = open_session(path)  # SessionError for bad input
        self.bus = bus
        self._speed = self._check(speed)
        self._paused = False
        self._changed = asyncio.Event()
        # Session time `_anchor_t` corresponds to wall time `_anchor_wall`; moved on
        # every speed change or pause so a change applies from that moment on.
        self._anchor_t = 0.0
        self._anchor_wall = time.monotonic()
        self.position_s = 0.0  # session time of the last event published
        self.events = 0

    @staticmethod
    def _check(speed: float) -> float:
        if math.isnan(speed) or speed <= 0:
            raise ValueError(f"replay speed must be positive, got {speed}")
        return speed if math.isinf(speed) else min(MAX_SPEED, max(MIN_SPEED, speed))

    def now_s(self) -> float:
        """The session time the replay has reached (between events too)."""
        if self._paused or math.isinf(self._speed):
            return max(self._anchor_t, self.position_s)
        return self._anchor_t + (time.monotonic() - self._anchor_wall) * self._speed

    def _reanchor(self) -> None:
        self._anchor_t, self._anchor_wall = self.now_s(), time.monotonic()
        self._changed.set()

    @property
    def speed(self) -> float:
        return self._speed

    def set_speed(self, speed: float) -> None:
        speed = self._check(speed)
        self._reanchor()
        self._speed = speed

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        if not self._paused:
            self._reanchor()
            self._paused = True

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._anchor_wall = time.monotonic()
            self._changed.set()

    async def run(self) -> None:
        """Publish the header, every event and the end record (if the file has one)."""
        self.bus.publish(self.stream.header)
        self._anchor_t, self._anchor_wall = 0.0, time.monotonic()
        for ev in self.stream:
            while not math.isinf(self._speed):
                self._changed.clear()
                if self._paused:
                    await self._changed.wait()
                    continue
                wait = (ev.t_s - self.now_s()) / self._speed
                if wait <= 0:
                    break
                # Woken by the timeout or by a change: either way, look again (a pause
                # may have come in the same instant as the timeout).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), wait)
            self.position_s = max(self.position_s, ev.t_s)
            self.events += 1
            self.bus.publish(ev)
            if self.events % 2048 == 0:
                await asyncio.sleep(0)  # as-fast-as-possible replays still let others run
        if self.stream.end is not None:
            self.bus.publish(self.stream.end)
        self.bus.close()
