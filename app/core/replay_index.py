"""A seek index of a recorded session: the file read once, so that replay can jump to
any moment and rebuild every panel's state as of it.

The state as of session time `t` is what a replay playing from the start has published
by then: the header, then the events in file order up to (not including) the first one
whose time is later than `t` (the replayer waits for each event's time in turn, so an
event written out of order waits behind the one before it), and the end record once
every event is out. `ReplayIndex.count_at(t)` is that number of
events.

Rebuilding the live statistics by feeding every event from the start would take
seconds in an hour-long session, so the index keeps checkpoints: deep copies of the
statistics every `checkpoint_s` seconds of session time. A seek restores the
checkpoint at or before `t` and feeds the events after it (at most `checkpoint_s`
worth). docs/replay.md says what the user sees; bench/replay_seek.py measures it.

The index also answers what a navigable replay asks: the next and previous knob
change, mark or error from a time (`next_landmark`, `previous_landmark`), and the
events of a window before `t` (the power chart's samples, the event log's lines).
"""

from __future__ import annotations

import copy
import pickle
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path

from app.core.events import (
    EndEvent,
    ErrorEvent,
    Event,
    KnobEvent,
    MarkEvent,
    SessionHeader,
)
from app.core.session_reader import SessionError, open_session
from app.core.stats import RESTORE_SOURCE, LiveStats

#: Session seconds between checkpoints. A checkpoint of a busy run's statistics is about
#: half a megabyte (sketches per stage and time slot); a minute apart, an hour holds 60
#: of them, and a seek feeds at most a minute of events (about 10 ms of work).
DEFAULT_CHECKPOINT_S = 60.0

#: How close two times must be to count as the same instant for navigation: a replay
#: standing on a landmark goes to the one after it with `n`, not to itself.
_SAME_INSTANT_S = 1e-6

#: The event kinds navigation stops at.
LANDMARK_KINDS = ("knob", "mark", "error")


@dataclass(frozen=True, slots=True)
class Landmark:
    """A moment worth jumping to: a knob change, a mark or an error."""

    t_s: float
    kind: str  # one of LANDMARK_KINDS
    label: str  # what to show: "power_cap 700 -> 400", the mark's label, the message
    index: int  # the event's position in the session (file order, header excluded)


@dataclass(slots=True)
class _Checkpoint:
    """The statistics after `count` events (file order, the header excluded), frozen:
    pickled (restoring a pickle is five times faster than a deep copy of the live
    object graph, and the bytes are compact), or a deep copy when a grouping of the
    statistics cannot be pickled (a lambda)."""

    count: int
    frozen: bytes | LiveStats

    @classmethod
    def of(cls, count: int, stats: LiveStats) -> _Checkpoint:
        try:
            return cls(count, pickle.dumps(stats, protocol=pickle.HIGHEST_PROTOCOL))
        except (pickle.PicklingError, TypeError, AttributeError):
            return cls(count, copy.deepcopy(stats))

    def thaw(self) -> LiveStats:
        """A new LiveStats in this checkpoint's state (the checkpoint is unchanged)."""
        if isinstance(self.frozen, bytes):
            stats = pickle.loads(self.frozen)  # our own bytes, made above: safe to load
            assert isinstance(stats, LiveStats)
            return stats
        return copy.deepcopy(self.frozen)


def _landmark(ev: Event, index: int) -> Landmark | None:
    if isinstance(ev, KnobEvent):
        # The limit put back as the run closes is cleanup, and a starting value is a
        # record: neither is a change anyone wants to jump to.
        if not ev.is_change or ev.source == RESTORE_SOURCE:
            return None
        from app.core.knobs import format_value

        label = (f"{ev.knob} {format_value(ev.knob, ev.previous)}"
                 f" -> {format_value(ev.knob, ev.value)} ({ev.source})")
        return Landmark(ev.t_s, "knob", label, index)
    if isinstance(ev, MarkEvent):
        return Landmark(ev.t_s, "mark", ev.label, index)
    if isinstance(ev, ErrorEvent):
        return Landmark(ev.t_s, "error", f"{ev.source}: {ev.message}", index)
    return None


@dataclass(slots=True)
class ReplayIndex:
    """A session's events in memory, with checkpoints of its statistics. Build it with
    `ReplayIndex.build(path)` (reads the file once) or `ReplayIndex.from_events`."""

    header: SessionHeader
    events: list[Event]  # file order, the header and the end record excluded
    end: EndEvent | None
    checkpoint_s: float = DEFAULT_CHECKPOINT_S
    make_stats: Callable[[], LiveStats] = LiveStats
    truncated: bool = False
    warnings: list[str] = field(default_factory=list)
    path: Path | None = None
    landmarks: list[Landmark] = field(default_factory=list)
    # running maximum of the events' times: `count_at` bisects it
    _reach: list[float] = field(default_factory=list)
    _checkpoints: list[_Checkpoint] = field(default_factory=list)
    _landmark_t: list[float] = field(default_factory=list)

    # -- building ---------------------------------------------------------------------

    @classmethod
    def build(cls, path: Path | str, *, checkpoint_s: float = DEFAULT_CHECKPOINT_S,
              make_stats: Callable[[], LiveStats] = LiveStats) -> ReplayIndex:
        """Read the session at `path` once. SessionError for a file that is not a
        session, a damaged line, or events the statistics cannot take."""
        stream = open_session(path)
        events = list(stream)
        index = cls(stream.header, events, stream.end, checkpoint_s, make_stats,
                    stream.truncated, list(stream.warnings), stream.path)
        index._prepare()
        return index

    @classmethod
    def from_events(cls, header: SessionHeader, events: list[Event], end: EndEvent | None,
                    *, checkpoint_s: float = DEFAULT_CHECKPOINT_S,
                    make_stats: Callable[[], LiveStats] = LiveStats) -> ReplayIndex:
        index = cls(header, list(events), end, checkpoint_s, make_stats)
        index._prepare()
        return index

    def _prepare(self) -> None:
        if not self.checkpoint_s > 0:
            raise ValueError(f"checkpoint interval must be positive, got {self.checkpoint_s}")
        self._reach = list(accumulate((ev.t_s for ev in self.events), max)) if self.events else []
        self.landmarks = [lm for i, ev in enumerate(self.events)
                          if (lm := _landmark(ev, i)) is not None]
        self._landmark_t = [lm.t_s for lm in self.landmarks]
        stats = self.make_stats()
        self._feed(stats, self.header)
        self._checkpoints = [_Checkpoint.of(0, stats)]
        next_t = self.start_s + self.checkpoint_s
        for i, ev in enumerate(self.events):
            if ev.t_s > next_t:
                # The state as of `next_t` (and of any time up to this event's) is
                # complete: everything before this event is in.
                self._checkpoints.append(_Checkpoint.of(i, stats))
                while next_t < ev.t_s:
                    next_t += self.checkpoint_s
            self._feed(stats, ev)
        # The last checkpoint: every event in (seeks to the end feed nothing).
        self._checkpoints.append(_Checkpoint.of(len(self.events), stats))

    def _feed(self, stats: LiveStats, ev: Event) -> None:
        try:
            stats.on_event(ev)
        except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as e:
            # A line that parsed but whose values make no sense together, as `report`
            # and replay say it.
            where = self.path if self.path is not None else "session"
            raise SessionError(f"{where}: bad {ev.kind} event at t={ev.t_s}:"
                               f" {type(e).__name__}: {e}") from None

    # -- times ------------------------------------------------------------------------

    @property
    def start_s(self) -> float:
        return self.events[0].t_s if self.events else 0.0

    @property
    def duration_s(self) -> float:
        """The session time of its last event (or the end record's, if later)."""
        last = self._reach[-1] if self._reach else 0.0
        return max(last, self.end.t_s) if self.end is not None else last

    def count_at(self, t: float) -> int:
        """How many events a replay has published by session time `t`."""
        return bisect_right(self._reach, t)

    def time_of(self, count: int) -> float:
        """The session time a replay has reached after publishing `count` events."""
        return self._reach[count - 1] if count > 0 else 0.0

    def ended_at(self, t: float) -> bool:
        """Whether a replay has published the end record by time `t`: it comes right
        after the last event."""
        return self.end is not None and self.count_at(t) == len(self.events)

    # -- state as of a time -------------------------------------------------------------

    def stats_at(self, t: float) -> LiveStats:
        """A new LiveStats holding exactly what playing the session to time `t` gives
        (the header, the events published by then, the end record if it came)."""
        stats = self.stats_after(self.count_at(t))
        if self.ended_at(t):
            assert self.end is not None
            self._feed(stats, self.end)
        return stats

    def stats_after(self, count: int) -> LiveStats:
        """A new LiveStats fed the header and the first `count` events."""
        count = max(0, min(count, len(self.events)))
        i = bisect_right([c.count for c in self._checkpoints], count) - 1
        cp = self._checkpoints[i]
        stats = cp.thaw()
        for ev in self.events[cp.count:count]:
            self._feed(stats, ev)
        return stats

    @property
    def checkpoints(self) -> int:
        return len(self._checkpoints)

    # -- navigation ---------------------------------------------------------------------

    def next_landmark(self, t: float, kinds: tuple[str, ...] = LANDMARK_KINDS) -> Landmark | None:
        """The first knob change, mark or error after time `t` (not at it)."""
        i = bisect_right(self._landmark_t, t + _SAME_INSTANT_S)
        for lm in self.landmarks[i:]:
            if lm.kind in kinds:
                return lm
        return None

    def previous_landmark(self, t: float,
                          kinds: tuple[str, ...] = LANDMARK_KINDS) -> Landmark | None:
        """The last knob change, mark or error before time `t` (not at it)."""
        i = bisect_left(self._landmark_t, t - _SAME_INSTANT_S)
        for lm in reversed(self.landmarks[:i]):
            if lm.kind in kinds:
                return lm
        return None

    # -- windows ------------------------------------------------------------------------

    def window(self, t: float, span_s: float,
               kinds: tuple[str, ...] | None = None) -> Iterator[Event]:
        """The events published by time `t` whose time is within `span_s` before it
        (t - span_s < t_s <= t), in file order; only those of `kinds` if given."""
        lo = bisect_right(self._reach, t - span_s)  # every event before has t_s <= t - span
        hi = self.count_at(t)
        for ev in self.events[lo:hi]:
            if ev.t_s > t - span_s and (kinds is None or ev.kind in kinds):
                yield ev
