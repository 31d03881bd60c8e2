"""Time-windowed statistics: the last 10 s, the last 60 s, since the last knob change,
the whole run; and the run cut into segments at each knob change (`report`'s table).

Two kinds of figures, kept so that their cost per event and their memory do not grow
with the run:

- **Progress** (tokens streamed so far by any request, energy measured so far): a
  `Point` is taken at each reading of the client's token counter (about once a
  second), one per time slot, and the last few dozen are kept. A span's tokens/s and
  J/token are the difference between the point at its end and the point at its start,
  interpolated between the points around that instant: tokens and energy are read over
  the same interval, to within one meter reading.
- **Request figures** (requests finished, latency, TTFT, TPOT): `Figures` per time slot
  of SLOT_S seconds in a ring of the last VIEW_SLOTS slots, merged when a view is read;
  and one `Figures` per knob segment, frozen into a `KnobSegment` when it ends.

A view of the last W seconds covers the slots that end in the last W seconds: between
W - SLOT_S and W seconds of requests; its rates cover exactly W seconds (or the run so
far, when it is shorter).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from app.core.quantiles import QuantileSet, make_quantiles

#: Seconds (run clock) of one time slot of the windowed views.
SLOT_S = 1.0

#: The windowed views: name -> span in seconds.
VIEW_SPANS: dict[str, float] = {"10s": 10.0, "60s": 60.0}

#: Slots kept: enough for the longest view.
VIEW_SLOTS = math.ceil(max(VIEW_SPANS.values()) / SLOT_S)

#: A finished request's event is published once its energy is known: up to one meter
#: interval after its time. An ended segment stays open to such late events this long.
LATE_S = 1.0

#: Progress points kept (two per slot at most; one with a token counter read once a
#: second): the longest view and some slack for a knob change whose end is still to come.
POINTS_KEPT = 2 * (VIEW_SLOTS + 8)


@dataclass(slots=True, frozen=True)
class Point:
    """The run's progress at one instant."""

    t_s: float
    tokens: float  # output tokens streamed so far, by any request
    energy_j: float  # energy measured so far, every component


def _lerp(a: Point, b: Point, t: float) -> Point:
    if b.t_s <= a.t_s or t >= b.t_s:
        return Point(t, b.tokens, b.energy_j) if t >= b.t_s else a
    f = max(0.0, (t - a.t_s) / (b.t_s - a.t_s))
    return Point(t, a.tokens + (b.tokens - a.tokens) * f,
                 a.energy_j + (b.energy_j - a.energy_j) * f)


class Progress:
    """The first point, and the last POINTS_KEPT points (at most two per slot)."""

    __slots__ = ("first", "points")

    def __init__(self) -> None:
        self.first: Point | None = None
        self.points: deque[Point] = deque(maxlen=POINTS_KEPT)

    @property
    def last(self) -> Point | None:
        return self.points[-1] if self.points else None

    def add(self, p: Point) -> None:
        pts = self.points
        if self.first is None:
            self.first = p
        if pts:
            last = pts[-1]
            if p.t_s < last.t_s:
                return  # progress read out of order: the newer reading stands
            slot = math.floor(p.t_s / SLOT_S)
            if len(pts) > 1 and math.floor(pts[-2].t_s / SLOT_S) == slot:
                pts[-1] = p  # two points per slot at most: its first and its newest
                return
        pts.append(p)

    def at(self, t: float) -> Point | None:
        """The progress at `t`, interpolated between the kept points around it; the
        oldest point kept when `t` is before it; None when no point is at or after `t`
        yet (it will be known at the next reading)."""
        pts = self.points
        if not pts or pts[-1].t_s < t:
            return None
        if t <= pts[0].t_s:
            first = self.first
            if first is not None and first.t_s <= t and len(pts) < POINTS_KEPT:
                return _lerp(first, pts[0], t)  # nothing dropped yet
            return pts[0]
        # the newest points are the ones asked for: search from the end
        for i in range(len(pts) - 1, 0, -1):
            if pts[i - 1].t_s <= t:
                return _lerp(pts[i - 1], pts[i], t)
        return pts[0]


class Figures:
    """Request figures over a span: finished requests and their latency and TPOT
    quantiles, and the TTFT of requests whose first token came in it."""

    __slots__ = ("finished", "first_tokens", "latency", "tpot", "ttft")

    def __init__(self, exact: bool) -> None:
        self.finished = 0
        self.first_tokens = 0
        self.latency: QuantileSet = make_quantiles(exact)
        self.ttft: QuantileSet = make_quantiles(exact)
        self.tpot: QuantileSet = make_quantiles(exact)

    def finish(self, latency_s: float | None, tpot_s: float | None) -> None:
        self.finished += 1
        if latency_s is not None:
            self.latency.add(latency_s)
        if tpot_s is not None:
            self.tpot.add(tpot_s)

    def first_token(self, ttft_s: float) -> None:
        self.first_tokens += 1
        self.ttft.add(ttft_s)

    def merge(self, other: Figures) -> None:
        self.finished += other.finished
        self.first_tokens += other.first_tokens
        self.latency.merge(other.latency)
        self.ttft.merge(other.ttft)
        self.tpot.merge(other.tpot)

    def copy(self, exact: bool) -> Figures:
        out = Figures(exact)
        out.merge(self)
        return out


class SlotRing:
    """Request figures of the last VIEW_SLOTS slots of SLOT_S seconds."""

    __slots__ = ("_cache", "_exact", "_figs", "_ids", "_newest")

    def __init__(self, exact: bool) -> None:
        self._exact = exact
        self._ids = [-1] * VIEW_SLOTS
        self._figs: list[Figures | None] = [None] * VIEW_SLOTS  # made when first used
        self._newest = -1
        # per view span: (newest slot, the merge of the slots before it)
        self._cache: dict[int, tuple[int, Figures]] = {}

    def at(self, t: float) -> Figures | None:
        """The slot holding time `t`; None when it is older than the slots kept."""
        slot = math.floor(t / SLOT_S)
        if slot <= self._newest - VIEW_SLOTS:
            return None
        i = slot % VIEW_SLOTS
        figs = self._figs[i]
        if self._ids[i] != slot or figs is None:
            self._ids[i] = slot
            figs = self._figs[i] = Figures(self._exact)
        if slot > self._newest:
            self._newest = slot
        elif slot < self._newest:
            self._cache.clear()  # a late event in a slot already merged
        return figs

    def merged(self, now_s: float, span_s: float) -> Figures:
        """The slots that end within the `span_s` seconds before `now_s`."""
        n = max(1, math.ceil(span_s / SLOT_S))
        newest = math.floor(now_s / SLOT_S)
        cached = self._cache.get(n)
        if cached is None or cached[0] != newest:
            past = Figures(self._exact)
            for slot in range(newest - n + 1, newest):
                i = slot % VIEW_SLOTS
                figs = self._figs[i]
                if self._ids[i] == slot and figs is not None:
                    past.merge(figs)
            self._cache[n] = cached = (newest, past)
        out = cached[1].copy(self._exact)
        i = newest % VIEW_SLOTS
        figs = self._figs[i]
        if self._ids[i] == newest and figs is not None:
            out.merge(figs)
        return out


@dataclass(slots=True)
class WindowStats:
    """One span's figures. Tokens are those *streamed* in the span by any request
    (finished, failed, cut off or still running); latency and TPOT are of requests that
    finished in it, TTFT of requests whose first token came in it."""

    start_s: float | None = None  # run clock; None: not known yet
    end_s: float | None = None
    duration_s: float = 0.0
    streamed_tokens: int | None = None
    tokens_per_s: float | None = None
    energy_j: float | None = None  # every component; None: nothing measured
    avg_power_w: float | None = None
    j_per_token: float | None = None  # energy_j / streamed_tokens
    requests_finished: int = 0
    first_tokens: int = 0
    latency_p50_s: float | None = None
    latency_p90_s: float | None = None
    latency_p99_s: float | None = None
    ttft_p50_s: float | None = None
    ttft_p90_s: float | None = None
    tpot_p50_s: float | None = None


@dataclass(slots=True)
class KnobSegment(WindowStats):
    """The span between two consecutive knob changes (the first from the run's start,
    the last to its end), with the knobs in force during it."""

    knobs: dict[str, float | None] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)  # the changes that began it


def window_stats(figs: Figures, start: Point | None, end: Point | None,
                 measured: bool, into: WindowStats | None = None) -> WindowStats:
    """A span's figures from its request figures and its progress at both ends
    (tokens and energy unknown while either end is)."""
    w = WindowStats() if into is None else into
    w.requests_finished, w.first_tokens = figs.finished, figs.first_tokens
    w.latency_p50_s, w.latency_p90_s = figs.latency.q(0.5), figs.latency.q(0.9)
    w.latency_p99_s = figs.latency.q(0.99)
    w.ttft_p50_s, w.ttft_p90_s = figs.ttft.q(0.5), figs.ttft.q(0.9)
    w.tpot_p50_s = figs.tpot.q(0.5)
    if start is None or end is None:
        return w
    w.start_s, w.end_s = start.t_s, end.t_s
    w.duration_s = dur = max(0.0, end.t_s - start.t_s)
    tokens = max(0, round(end.tokens - start.tokens))
    w.streamed_tokens = tokens
    w.tokens_per_s = tokens / dur if dur > 0 else None
    if measured:
        w.energy_j = energy = max(0.0, end.energy_j - start.energy_j)
        w.avg_power_w = energy / dur if dur > 0 else None
        w.j_per_token = energy / tokens if tokens and energy else None
    return w


class _Segment:
    __slots__ = ("changes", "end", "end_s", "figs", "knobs", "start", "start_s")

    def __init__(self, start_s: float, knobs: dict[str, float | None], changes: list[str],
                 start: Point | None, exact: bool) -> None:
        self.start_s = start_s
        self.start = start  # the progress at start_s; None: not read yet
        self.end_s: float | None = None
        self.end: Point | None = None
        self.knobs = knobs
        self.changes = changes
        self.figs = Figures(exact)


class KnobSegments:
    """The run cut at each knob change. The open segment and those whose end point is
    still to come keep their request figures; the others are frozen into their
    KnobSegment (a few hundred bytes each: memory grows with knob changes, not with
    requests)."""

    __slots__ = ("_done", "_exact", "_open", "_pending")

    def __init__(self, exact: bool) -> None:
        self._exact = exact
        self._done: list[KnobSegment] = []
        self._pending: list[_Segment] = []  # ended, their end point not read yet
        self._open: _Segment | None = None

    @property
    def current(self) -> _Segment | None:
        return self._open

    def start(self, first: Point, knobs: dict[str, float | None]) -> None:
        """The first segment, from the run's first event."""
        if self._open is None:
            self._open = _Segment(first.t_s, dict(knobs), [], first, self._exact)

    def figures_at(self, t: float) -> Figures | None:
        """The request figures of the segment time `t` falls in (a segment holds
        [start, end)); None when that segment is already frozen: a request event
        published after its segment's end was read is counted in the whole run only."""
        seg = self._open
        if seg is not None and t >= seg.start_s:
            return seg.figs
        for seg in reversed(self._pending):
            if seg.start_s <= t:
                return seg.figs
        return None

    def set_knobs(self, knobs: dict[str, float | None]) -> None:
        """Knobs recorded without a change (starting values found in force)."""
        if self._open is not None:
            self._open.knobs.update(knobs)

    def change(self, t: float, knobs: dict[str, float | None], what: str,
               progress: Progress, measured: bool) -> None:
        seg = self._open
        if seg is not None and t <= seg.start_s:  # changes at one instant: one segment
            seg.knobs = dict(knobs)
            seg.changes.append(what)
            return
        if seg is not None:
            seg.end_s = t
            self._pending.append(seg)
        self._open = _Segment(t, dict(knobs), [what], None, self._exact)
        self.resolve(progress, measured)

    def resolve(self, progress: Progress, measured: bool) -> None:
        """Read the segment ends whose progress is now known; freeze the ended ones."""
        if not self._pending and (self._open is None or self._open.start is not None):
            return
        for seg in self._pending:
            if seg.start is None:
                seg.start = progress.at(seg.start_s)
        last = progress.last
        while self._pending and last is not None:
            seg = self._pending[0]
            assert seg.end_s is not None
            if last.t_s < seg.end_s + LATE_S:
                break
            seg.end = progress.at(seg.end_s)
            if seg.end is None:
                break
            self._done.append(self._frozen(seg, seg.end, measured))
            self._pending.pop(0)
        if self._open is not None and self._open.start is None:
            self._open.start = progress.at(self._open.start_s)

    def _frozen(self, seg: _Segment, end: Point | None, measured: bool) -> KnobSegment:
        out = KnobSegment(knobs=dict(seg.knobs), changes=list(seg.changes))
        window_stats(seg.figs, seg.start, end, measured, into=out)
        out.start_s = seg.start_s
        out.end_s = seg.end_s if seg.end_s is not None else (end.t_s if end else None)
        return out

    def all(self, progress: Progress, last: Point | None,
            measured: bool) -> list[KnobSegment]:
        """Every segment so far, the open one last (up to `last`, the latest progress);
        an end not read yet is taken at `last`."""
        out = list(self._done)
        for seg in self._pending:
            assert seg.end_s is not None
            if seg.start is None:
                seg.start = progress.at(seg.start_s)
            out.append(self._frozen(seg, progress.at(seg.end_s) or last, measured))
        if self._open is not None:
            out.append(self._frozen(self._open, last, measured))
        return out
