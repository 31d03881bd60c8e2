"""`wattflow replay A B` with the dashboard: two sessions played together on one clock
(A's; B shifted by the alignment, app/core/replay_pair.py).

Both GPU power lines on one chart, the two sessions' totals side by side, and the
per-stage table of B's differences from A (J/token, tok/s, p90 latency, joules: the
numbers of `wattflow report A B`, app/core/compare.py), green where B is better, red
where it is worse. The timeline has a row of ticks per session. The replay keys work on
both: `space`, `<` / `>`, `g`, the arrows, `n` / `p` (the next knob change, mark or
error of either), `home` / `end`, a click on the timeline.
"""

from __future__ import annotations

import argparse
import asyncio
import math
from dataclasses import replace
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Footer, Static

from app.core.bus import EventBus
from app.core.compare import METRICS, DifferenceRow, differences, format_difference
from app.core.replay import Replayer
from app.core.replay_index import Landmark, ReplayIndex
from app.core.replay_pair import align_offset
from app.core.stats import LiveStats, StatsSnapshot
from app.ui.backends import SLOWEST_FROM_MAX
from app.ui.feed import Frame, GpuTrace, clip
from app.ui.replay_seek import SeekableReplayBackend, format_time
from app.ui.screens.seek_input import SeekInputScreen
from app.ui.widgets.power_chart import PowerChart
from app.ui.widgets.run_header import speed_text
from app.ui.widgets.timeline import Timeline, Track
from app.ui.widgets.totals import Totals

REFRESH_HZ = 5.0
BETTER, WORSE = "bold green", "bold red"


def difference_table(rows: list[DifferenceRow]) -> Table:
    t = Table(expand=True, box=None, padding=(0, 1), header_style="dim")
    t.add_column("stage", no_wrap=True, style="bold")
    for m in METRICS:
        t.add_column(f"{m.title} A", justify="right", no_wrap=True)
        t.add_column("B", justify="right", no_wrap=True)
        t.add_column("B-A", justify="right", no_wrap=True)
    for row in rows:
        cells: list[Text | str] = [row.label]
        for m in METRICS:
            d = row.figures[m.key]
            better = d.better(m)
            cells += ["-" if d.a is None else f"{d.a:,.{m.digits}f}",
                      "-" if d.b is None else f"{d.b:,.{m.digits}f}",
                      Text(format_difference(d, m),
                           style=BETTER if better else WORSE if better is False else "")]
        t.add_row(*cells)
    return t


class DifferenceTable(Static):
    """B's differences from A per stage and for the whole run, coloured by sign."""

    rows: list[DifferenceRow]

    def show(self, a: StatsSnapshot, b: StatsSnapshot) -> None:
        self.rows = differences(a, b)
        self.update(difference_table(self.rows))


class _NoSink:
    """The pair app paints from both feeds on its own timer."""

    def __init__(self) -> None:
        self.ended = 0

    def frame_ready(self, frame: Frame) -> None:
        pass

    def run_finished(self) -> None:
        self.ended += 1


def _shifted(trace: GpuTrace, label: str, offset: float) -> GpuTrace:
    return replace(trace, device=f"{label} {trace.device}",
                   points=[(t + offset, w) for t, w in trace.points],
                   limit_steps=[(t + offset, w) for t, w in trace.limit_steps])


class PairReplayApp(App[None]):
    TITLE = "wattflow"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #pair-header { height: 1; background: $boost; }
    #pair-chart { height: 16; border: round $primary-darken-1; padding: 0 1; }
    #pair-totals { height: auto; }
    #pair-totals > Totals { width: 1fr; border: round $primary-darken-1; padding: 0 1; }
    #pair-diff { height: auto; border: round $primary-darken-1; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "pause_play", "pause/play", key_display="space"),
        Binding("less_than_sign", "speed(0.5)", "slower", key_display="<"),
        Binding("greater_than_sign", "speed(2)", "faster", key_display=">"),
        Binding("g", "goto", "go to"),
        Binding("left", "step(-10)", "-10s", key_display="←"),
        Binding("right", "step(10)", "+10s", key_display="→"),
        Binding("shift+left", "step(-60)", "-60s", show=False),
        Binding("shift+right", "step(60)", "+60s", show=False),
        Binding("n", "landmark(1)", "next event"),
        Binding("p", "landmark(-1)", "prev event"),
        Binding("home", "seek(0)", "start", show=False, priority=True),
        Binding("end", "seek_end", "end", show=False, priority=True),
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    def __init__(self, a: SeekableReplayBackend, b: SeekableReplayBackend, offset_s: float,
                 names: tuple[str, str]) -> None:
        super().__init__()
        self.a, self.b, self.offset_s, self.names = a, b, offset_s, names
        self.sink = _NoSink()
        self.frames: tuple[Frame, Frame] | None = None

    @property
    def duration_s(self) -> float:
        return max(self.a.duration_s, self.b.duration_s + self.offset_s)

    def now_s(self) -> float:
        """The common time: A's, or B's shifted once A has ended."""
        return max(self.a.now_s(), self.b.now_s() + self.offset_s)

    def compose(self) -> ComposeResult:
        yield Static(id="pair-header")
        yield Timeline(self.duration_s, [
            Track("A", self.a.index.landmarks),
            Track("B", self.b.index.landmarks, self.offset_s)], id="pair-timeline")
        yield PowerChart(120.0, id="pair-chart")
        with Horizontal(id="pair-totals"):
            yield Totals(id="pair-totals-a")
            yield Totals(id="pair-totals-b")
        yield DifferenceTable(id="pair-diff")
        yield Footer()

    def on_mount(self) -> None:
        a_name, b_name = self.names
        self.query_one("#pair-chart").border_title = "GPU power, last 120 s: A and B"
        self.query_one("#pair-totals-a").border_title = f"A: {a_name}"
        self.query_one("#pair-totals-b").border_title = f"B: {b_name}"
        self.query_one("#pair-diff").border_title = (
            "per stage: B minus A (relative to A); green: B better, red: B worse")
        self.a.start(self.sink)
        self.b.start(self.sink)
        if self.offset_s:
            self.b.seek(-self.offset_s, before_start=True)
        self.set_interval(1.0 / REFRESH_HZ, self.paint)
        self.paint()

    def paint(self) -> None:
        if not self.query("#pair-header"):
            return  # the app is closing: its panels are gone
        fa = self.a.feed.frame(self.a.now_s())
        fb = self.b.feed.frame(self.b.now_s())
        self.frames = (fa, fb)
        now = self.now_s()
        chart = replace(fa, now_s=now,
                        gpus=[_shifted(g, "A", 0.0) for g in fa.gpus]
                        + [_shifted(g, "B", self.offset_s) for g in fb.gpus],
                        devices=fa.devices + fb.devices)
        r = self.a.replayer
        state = "paused" if r.paused else (
            "at the end" if r.at_end and self.b.replayer.at_end else "playing")
        head = Text(no_wrap=True, overflow="ellipsis")
        head.append(" wattflow ", style="bold reverse")
        head.append(f" A|B REPLAY {speed_text(r.speed)} ", style="bold black on #ffb74d")
        head.append(f" {state}   t {format_time(now)}", style="bold")
        if self.offset_s:
            head.append(f"   B {'+' if self.offset_s > 0 else '-'}"
                        f"{format_time(abs(self.offset_s))} (aligned on a mark)", style="dim")
        with self.batch_update():
            self.query_one("#pair-header", Static).update(head)
            self.query_one(Timeline).show(now)
            self.query_one(PowerChart).show(chart)
            self.query_one("#pair-totals-a", Totals).show(fa)
            self.query_one("#pair-totals-b", Totals).show(fb)
            self.query_one(DifferenceTable).show(fa.snapshot, fb.snapshot)

    # -- keys -------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("seek", "seek_end") and len(self.screen_stack) > 1:
            return False
        return super().check_action(action, parameters)

    def seek(self, t: float) -> None:
        t = min(max(0.0, t), self.duration_s)
        self.a.seek(t)
        self.b.seek(t - self.offset_s, before_start=True)
        self.paint()

    def action_seek(self, t: float) -> None:
        self.seek(t)

    def action_seek_end(self) -> None:
        self.seek(self.duration_s)

    def action_step(self, seconds: float) -> None:
        self.seek(self.now_s() + seconds)

    def _landmark(self, direction: int) -> tuple[str, Landmark] | None:
        now = self.now_s()
        cands: list[tuple[float, str, Landmark]] = []
        for label, backend, off in (("A", self.a, 0.0), ("B", self.b, self.offset_s)):
            idx: ReplayIndex = backend.index
            lm = idx.next_landmark(now - off) if direction > 0 else \
                idx.previous_landmark(now - off)
            if lm is not None:
                cands.append((lm.t_s + off, label, lm))
        if not cands:
            return None
        t, label, lm = min(cands) if direction > 0 else max(cands)
        self.seek(t)
        return label, lm

    def action_landmark(self, direction: int) -> None:
        found = self._landmark(direction)
        if found is None:
            self.notify(f"no {'later' if direction > 0 else 'earlier'} knob change, mark or"
                        " error", severity="warning", timeout=2)
            return
        label, lm = found
        self.notify(f"{label} {format_time(lm.t_s)} {lm.kind}: {clip(lm.label)}", timeout=2.5)

    def action_goto(self) -> None:
        def done(t: float | None) -> None:
            if t is not None:
                self.seek(t)

        self.push_screen(SeekInputScreen(self.now_s(), self.duration_s), done)

    def on_timeline_seek(self, message: Timeline.Seek) -> None:
        self.seek(message.t_s)

    def action_pause_play(self) -> None:
        for r in (self.a.replayer, self.b.replayer):
            if r.paused:
                r.resume()
            else:
                r.pause()
        self.paint()

    def action_speed(self, factor: float) -> None:
        speed = self.a.replayer.speed
        speed = SLOWEST_FROM_MAX if math.isinf(speed) and factor < 1 else speed * factor
        for r in (self.a.replayer, self.b.replayer):
            r.set_speed(speed)
        self.paint()

    async def action_quit(self) -> None:
        self.a.request_quit("quit")
        self.b.request_quit("quit")
        self.exit()


def pair_app(args: argparse.Namespace) -> tuple[PairReplayApp, list[SeekableReplayBackend]]:
    """The app of `replay A B` (SessionError for a bad file or a missing mark)."""
    ia, ib = ReplayIndex.build(args.session), ReplayIndex.build(args.other)
    offset = align_offset(ia, ib, getattr(args, "align", None))
    backends = []
    for path, index in ((args.session, ia), (args.other, ib)):
        bus = EventBus()
        holder = _Holder(index.stats_at(-1.0))
        bus.subscribe(holder.on_event)
        replayer = Replayer(path, bus, speed=args.speed, index=index, hold_at_end=True)
        backends.append(SeekableReplayBackend(replayer, holder.stats, index,
                                              on_stats=holder.set))
    names = (ia.path.name if ia.path else "A", ib.path.name if ib.path else "B")
    return PairReplayApp(backends[0], backends[1], offset, names), backends


class _Holder:
    """Feeds the replay's events to the statistics of the latest seek. The index's
    statistics were fed the header already."""

    def __init__(self, stats: LiveStats) -> None:
        self.stats = stats

    def set(self, stats: LiveStats) -> None:
        self.stats = stats

    def on_event(self, ev: object) -> None:
        from app.core.events import Event

        if isinstance(ev, Event) and ev.kind != "session":
            self.stats.on_event(ev)


def replay_pair_dashboard(args: argparse.Namespace) -> tuple[StatsSnapshot, StatsSnapshot]:
    """Run the two-session dashboard until `q`; the two sessions' statistics then."""
    app, backends = pair_app(args)

    async def main() -> None:
        try:
            await app.run_async()
        finally:
            for b in backends:
                b.request_quit("the dashboard closed")
                await b.wait_done()
        for b in backends:
            if b.error is not None:
                raise b.error

    asyncio.run(main())
    return backends[0].stats.snapshot(), backends[1].stats.snapshot()
