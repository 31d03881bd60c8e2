"""Seeking in the dashboard's replay: times typed by the user, and a replay backend
whose panels are rebuilt as of any moment from the session's seek index
(app/core/replay_index.py).

A seek moves the replayer, restores the live statistics as of the new time from the
index, and rebuilds the feed the panels paint from by digesting the events up to that
time again.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from app.core.bus import EventBus
from app.core.replay import Replayer
from app.core.replay_index import Landmark, ReplayIndex
from app.core.stats import LiveStats
from app.ui.backends import ReplayBackend
from app.ui.feed import Feed

_TIME = re.compile(r"^\s*(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)\s*$")
_UNITS = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(h|m|min|s)?\s*$")


def parse_time(text: str) -> float:
    """A session time the user typed: `5:30`, `1:02:03`, `330`, `90s`, `5m`, `1.5h`.
    ValueError with a one-line message for anything else."""
    m = _TIME.match(text)
    if m:
        h, mins, secs = m.group(1), m.group(2), m.group(3)
        if float(secs) >= 60 or (h is not None and int(mins) >= 60):
            raise ValueError(f"{text.strip()!r}: minutes and seconds go up to 59")
        return (int(h) * 3600 if h else 0) + int(mins) * 60 + float(secs)
    m = _UNITS.match(text)
    if m:
        value, unit = float(m.group(1)), m.group(2) or "s"
        return value * {"h": 3600.0, "m": 60.0, "min": 60.0, "s": 1.0}[unit]
    raise ValueError(f"{text.strip()!r} is not a time: type it as 5:30, 1:02:03, 330 or 90s")


def format_time(t: float) -> str:
    """`m:ss` (or `h:mm:ss`), as `parse_time` reads it back."""
    sign = "-" if t < 0 else ""
    total = int(abs(t))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{sign}{h}:{m:02d}:{s:02d}" if h else f"{sign}{m}:{s:02d}"


def rebuild_feed(feed: Feed, index: ReplayIndex, count: int, t: float,
                 stats: LiveStats) -> None:
    """Put `feed` in the state it has after the header and the first `count` events of
    the session (what a replay has published by time `t`), with `stats` as its
    statistics. The feed digests every one of them again: it is cheap (40 ms for an
    hour-long session; the statistics, the costly part, come from the index), and so
    every trace it keeps (the log, the chart's window and whole-run view, the engine
    state) is exactly what playing there gives."""
    sub = feed._sub  # the bus subscription stays; what it still holds is from before
    sub.get_nowait()
    fresh = Feed(EventBus(), stats, feed.history_s)
    fresh._sub = sub
    feed.__dict__.update(fresh.__dict__)
    digest = feed.digest
    digest(index.header)
    for ev in index.events[:count]:
        digest(ev)
    if index.ended_at(t) and index.end is not None:
        digest(index.end)


class SeekableReplayBackend(ReplayBackend):
    """A ReplayBackend that can jump to any moment of the session. `on_stats` is told
    the statistics that replace the old ones at each seek (the replay command's
    subscriber that feeds them)."""

    def __init__(self, replayer: Replayer, stats: LiveStats, index: ReplayIndex,
                 on_stats: Callable[[LiveStats], None] | None = None) -> None:
        super().__init__(replayer, stats)
        self.index = index
        self.stats = stats
        self.on_stats = on_stats
        self._jumped: Landmark | None = None  # the landmark the last n/p went to
        # `p` this soon (wall seconds) after a jump that played on goes to the landmark
        # before, as a player's "previous" does.
        self.previous_within_s = 2.0
        self.seeks = 0

    @property
    def duration_s(self) -> float:
        return self.index.duration_s

    def now_s(self) -> float:
        return self.replayer.now_s()

    def seek(self, t: float, *, before_start: bool = False) -> float:
        """Jump to session time `t` (clamped to the session; below 0 kept with
        `before_start`: a session aligned to start later); the time jumped to."""
        t = min(t if before_start else max(0.0, t), self.index.duration_s)
        count = self.replayer.seek(t)
        self.stats = self.index.stats_at(t)
        if self.on_stats is not None:
            self.on_stats(self.stats)
        rebuild_feed(self.feed, self.index, count, t, self.stats)
        self.seeks += 1
        self.request_frame()
        return t

    def step(self, seconds: float) -> float:
        return self.seek(self.now_s() + seconds)

    def next_landmark(self) -> Landmark | None:
        """Jump to the next knob change, mark or error; None (and stay) if none."""
        lm = self.index.next_landmark(self.now_s())
        if lm is not None:
            self.seek(lm.t_s)
        self._jumped = lm
        return lm

    def previous_landmark(self) -> Landmark | None:
        """Jump to the previous knob change, mark or error; None (and stay) if none."""
        now = self.now_s()
        lm = self.index.previous_landmark(now)
        # A replay that plays on is just past the landmark it was sent to: `p` within
        # `previous_within_s` of that jump goes to the one before.
        if lm is not None and lm is self._jumped and (
                now - lm.t_s <= self.previous_within_s * self.replayer.speed):
            lm = self.index.previous_landmark(lm.t_s)
        if lm is not None:
            self.seek(lm.t_s)
        self._jumped = lm
        return lm

    def request_frame(self) -> None:
        if self._sink is not None:
            self._sink.frame_ready(self.feed.frame(self.replayer.now_s()))
