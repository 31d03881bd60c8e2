"""Replay a recorded session: its events are published again, in order, on the same
kind of bus a live run uses, paced by their timestamps, so every subscriber (live
stats, the headless printer, a dashboard) works on a replay exactly as on a run.

Pacing follows `speed` (2.0: twice as fast; `math.inf`: as fast as possible) and can be
changed, paused and resumed while the replay runs.

Given a seek index (app/core/replay_index.py), a replay can also `seek` to any time: it
goes on publishing from the first event after that time, and whoever listens rebuilds
its state as of that time from the index (the live statistics, the power chart). With
`hold_at_end`, a replay that has published the end record waits there for a seek back
instead of closing the bus (the dashboard's replay, where `home` starts again).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from pathlib import Path

from app.core.bus import EventBus
from app.core.replay_index import ReplayIndex
from app.core.session_reader import SessionStream, open_session

MIN_SPEED, MAX_SPEED = 1 / 64, 4096.0


class Replayer:
    def __init__(self, path: Path | str, bus: EventBus, speed: float = 1.0, *,
                 index: ReplayIndex | None = None, hold_at_end: bool = False) -> None:
        self.stream: SessionStream = open_session(path)  # SessionError for bad input
        self.index = index
        self.hold_at_end = hold_at_end and index is not None
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
        self._cursor = 0  # with an index: the next event to publish
        self._seeks = 0  # bumped by each seek: a wait for an event's time is then void
        self.at_end = False  # the end record (or the last event) is out

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

    def seek(self, t: float) -> int:
        """Go on from session time `t` (clamped to the session): the next event
        published is the first one a replay playing from the start would publish after
        `t`. Returns how many events a replay has published by `t` (the listeners
        rebuild their state from the index: `index.stats_at(t)`). Needs an index."""
        if self.index is None:
            raise ValueError("seeking needs the session's index")
        # Before 0 is allowed: a session aligned on a later one's mark starts late.
        t = min(t, self.index.duration_s)
        self._cursor = self.events = self.index.count_at(t)
        self.position_s = t  # below 0 for a session that starts later (aligned)
        self._anchor_t, self._anchor_wall = t, time.monotonic()
        self.at_end = False
        self._seeks += 1
        self._changed.set()
        return self._cursor

    async def _until(self, t_s: float, seeks: int) -> bool:
        """Wait until session time `t_s` is due; False if a seek came meanwhile."""
        while not math.isinf(self._speed):
            self._changed.clear()
            if seeks != self._seeks:
                return False
            if self._paused:
                await self._changed.wait()
                continue
            wait = (t_s - self.now_s()) / self._speed
            if wait <= 0:
                break
            # Woken by the timeout or by a change: either way, look again (a pause
            # may have come in the same instant as the timeout).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)
        return seeks == self._seeks

    async def run(self) -> None:
        """Publish the header, every event and the end record (if the file has one)."""
        self.bus.publish(self.stream.header)
        if self._seeks == 0:
            self._anchor_t, self._anchor_wall = 0.0, time.monotonic()
        else:  # sought before it started: from there
            self._anchor_wall = time.monotonic()
        if self.index is not None:
            await self._run_indexed(self.index)
            return
        for ev in self.stream:
            await self._until(ev.t_s, self._seeks)
            self.position_s = max(self.position_s, ev.t_s)
            self.events += 1
            self.bus.publish(ev)
            if self.events % 2048 == 0:
                await asyncio.sleep(0)  # as-fast-as-possible replays still let others run
        self.at_end = True
        if self.stream.end is not None:
            self.bus.publish(self.stream.end)
        self.bus.close()

    async def _run_indexed(self, index: ReplayIndex) -> None:
        events = index.events
        while True:
            seeks = self._seeks
            while self._cursor < len(events):
                ev = events[self._cursor]
                if not await self._until(ev.t_s, seeks):
                    break  # a seek: start again from its cursor
                self._cursor += 1
                self.position_s = max(self.position_s, ev.t_s)
                self.events = self._cursor
                self.bus.publish(ev)
                if self._cursor % 2048 == 0:
                    await asyncio.sleep(0)
                    if seeks != self._seeks:
                        break
            if seeks != self._seeks:
                continue
            if index.end is not None:  # right after the last event, as from a file
                self.bus.publish(index.end)
            self.at_end = True
            if not self.hold_at_end:
                break
            while seeks == self._seeks:  # at the end: wait for a seek back
                self._changed.clear()
                await self._changed.wait()
        self.bus.close()
