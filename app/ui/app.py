"""The dashboard app: panels repainted from frames at 5 Hz, keys that go through the
backend (and so through `Runner.set_knob`), and a clean stop on `q`.

The layout follows the terminal's size (`layout_tier`): at 80x24 the header, the
vitals (power and cap per GPU, energy, J/token, tokens/s, requests), the knobs, the
chart and the key bar; from 100x30 the event log too; from 120x36 the details beside
the chart and the stage table. Nothing is laid out beyond the screen: panels that do
not fit are not shown at all rather than scrolled to."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import ClassVar

from textual import events
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import BindingType
from textual.containers import Horizontal
from textual.geometry import Size
from textual.message import Message
from textual.screen import Screen

from app.core.knobs import KnobError, format_value
from app.stop_watchdog import signal_name
from app.ui import keys
from app.ui.backends import Backend
from app.ui.feed import Frame
from app.ui.screens.help import HelpScreen
from app.ui.screens.knob_input import KnobInputScreen
from app.ui.widgets.event_log import EventLog
from app.ui.widgets.key_bar import KeyBar
from app.ui.widgets.knobs_panel import KnobsPanel
from app.ui.widgets.power_chart import PowerChart
from app.ui.widgets.run_header import RunHeader, speed_text
from app.ui.widgets.stage_table import StageTable
from app.ui.widgets.totals import Totals
from app.ui.widgets.vitals import Vitals

REFRESH_HZ = 5.0

#: (tier, least columns, least rows): the largest the terminal reaches is used.
TIERS = (("xl", 160, 45), ("l", 120, 36), ("m", 100, 30))


def layout_tier(size: Size) -> str:
    """"s" (80x24 and up: the essentials), "m", "l" or "xl" (everything, roomier)."""
    for name, cols, rows in TIERS:
        if size.width >= cols and size.height >= rows:
            return name
    return "s"


class FrameReady(Message):
    """A new frame to paint. Frames are whole states: a newer one replaces a stale one
    still waiting in the queue, so a busy UI paints the latest and skips the rest."""

    def __init__(self, frame: Frame) -> None:
        super().__init__()
        self.frame = frame

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, FrameReady)


class RunFinished(Message):
    """The run (or replay) has ended and its session is closed."""


class DashboardApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "wattflow"
    COMMAND_PALETTE_BINDING = "ctrl+p"

    BINDINGS: ClassVar[list[BindingType]] = list(keys.bindings())

    def __init__(self, backend: Backend, *, exit_on_end: bool = False,
                 handle_signals: bool = True, refresh_hz: float = REFRESH_HZ,
                 window_s: float = 120.0) -> None:
        super().__init__()
        self.backend = backend
        self.exit_on_end = exit_on_end
        self.handle_signals = handle_signals
        self.refresh_hz = refresh_hz
        self.window_s = window_s
        self.frame: Frame | None = None
        self.frames_painted = 0
        self.quitting = False
        self.terminated = False  # stopped by SIGTERM/SIGHUP (the CLI exits 1 then)
        self.marks = 0
        self.tier = "s"
        self._wall_t0 = time.monotonic()
        self._signals: list[int] = []

    # -- layout --------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        live = self.backend.mode == "live"
        yield RunHeader(id="header")
        with Horizontal(id="top"):
            yield Vitals(id="vitals")
            yield KnobsPanel(live=live, id="knobs")
        with Horizontal(id="main"):
            yield PowerChart(self.window_s, id="chart")
            yield Totals(id="totals")
        yield StageTable(id="stages")
        yield EventLog(id="log")
        yield KeyBar(self.backend.mode, id="keys")

    def on_mount(self) -> None:
        titles = {"vitals": "now", "chart": f"GPU power, last {self.window_s:.0f} s",
                  "totals": "details", "stages": "stages", "knobs": "knobs", "log": "events"}
        for wid, title in titles.items():
            self.query_one(f"#{wid}").border_title = title
        self._apply_tier(self.size)
        if self.handle_signals:
            self._install_signals()
        self.backend.start(self)
        self.set_interval(1.0 / self.refresh_hz, self.backend.request_frame)

    def on_resize(self, event: events.Resize) -> None:
        self._apply_tier(event.size)

    def _apply_tier(self, size: Size) -> None:
        """Show the panels the terminal has room for; a class per tier sizes them."""
        self.tier = tier = layout_tier(size)
        # The dashboard's own screen, also when a dialog (k, ?) is on top of it.
        screen = self.screen_stack[0]
        for name in ("s", "m", "l", "xl"):
            screen.set_class(name == tier, f"tier-{name}")
        screen.query_one("#log").display = tier != "s"
        screen.query_one("#totals").display = tier in ("l", "xl")
        screen.query_one("#stages").display = tier in ("l", "xl")

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop_by_signal, sig)
                self._signals.append(sig)

    def stop_by_signal(self, sig: int) -> None:
        """A termination signal reached the process (the stop watchdog, or the app's
        own handlers, call this on the app's loop): quit as `q` does; SIGINT from
        outside counts as Ctrl-C."""
        self.terminated = sig != signal.SIGINT
        self._quit(f"stopped by {signal_name(sig)}")

    def on_unmount(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals.clear()

    # -- Sink: called by the backend, possibly from the runner's thread ---------------
    def frame_ready(self, frame: Frame) -> None:
        self.post_message(FrameReady(frame))

    def run_finished(self) -> None:
        self.post_message(RunFinished())

    # -- painting --------------------------------------------------------------------
    def on_frame_ready(self, message: FrameReady) -> None:
        self.frame = frame = message.frame
        if not self.query(RunHeader):
            return  # the app is closing: its panels are gone
        self.frames_painted += 1
        with self.batch_update():
            self.query_one(Vitals).show(frame)
            self.query_one(RunHeader).show(
                frame, mode=self.backend.mode, state=self._state(frame),
                wall_s=time.monotonic() - self._wall_t0, speed=self.backend.speed,
                paused=self.backend.paused)
            chart = self.query_one(PowerChart)
            chart.show(frame)
            chart.border_title = chart.title()
            self.query_one(Totals).show(frame)
            self.query_one(StageTable).show(frame)
            self.query_one(KnobsPanel).show(frame)
            self.query_one(EventLog).show(frame)
            # The marks with their times: on the event log's border, or on the chart's
            # where the log is not shown (80x24).
            marks = [t for t in frame.ticks if t.kind == "mark"]  # all of them
            text = ("marks " + ", ".join(f"{m.label} {m.t_s:.1f} s" for m in marks[-4:])
                    if marks else "")
            log_shown = self.tier != "s"
            self.query_one("#log").border_subtitle = text if log_shown else ""
            chart.border_subtitle = "" if log_shown else text

    def _state(self, frame: Frame) -> str:
        if frame.ended is not None or self.backend.done:
            if self.backend.mode == "replay":
                return "replay finished; q to leave" if frame.ended or self.backend.done else ""
            reason = frame.ended.reason if frame.ended else "ended"
            return f"{reason}; q to leave"
        if self.quitting:
            return "stopping…"
        if self.backend.mode == "replay":
            return "paused" if self.backend.paused else "playing"
        if not getattr(self.backend, "ready", True):
            return "starting…"
        # Plainly: the engine cannot keep up (app/core/saturation.py says why).
        return "running · SATURATED" if frame.saturated else "running"

    def on_run_finished(self, message: RunFinished) -> None:
        if self.quitting or self.exit_on_end or getattr(self.backend, "error", None) is not None:
            # A run that never started (a bad engine option, an engine that would not
            # start) has nothing to show: the dashboard closes and the command prints the
            # one-line error, as without the dashboard.
            self.exit()
            return
        what = "replay" if self.backend.mode == "replay" else "run"
        self.notify(f"the {what} has ended; press q to leave", timeout=6)

    # -- keys -------------------------------------------------------------------------
    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """The command palette (ctrl+p): this mode's actions by name, then Textual's."""
        for k in keys.keys_for(self.backend.mode):
            if k.palette:
                yield SystemCommand(k.palette, f"{k.help} (key {k.shown})",
                                    self._runner_for(k.action))
        yield SystemCommand("Help: keys and panels", "every key and what it does (key ?)",
                            self.action_help)
        yield from super().get_system_commands(screen)

    def _runner_for(self, action: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            await self.run_action(action)

        return run

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.backend.mode))

    def _error(self, exc: Exception) -> None:
        self.notify(str(exc).splitlines()[0], severity="error", timeout=4)

    async def _step(self, name: str, direction: int) -> None:
        try:
            before, after = await self.backend.step_knob(name, direction)
        except KnobError as exc:
            self._error(exc)
            return
        if after == before:
            self.notify(f"{name} stays at {format_value(name, after)} (its limit)",
                        severity="warning", timeout=3)

    async def action_cap(self, direction: int) -> None:
        await self._step("power_cap", direction)

    async def action_batch(self, direction: int) -> None:
        await self._step("batch_limit", direction)

    def action_knob_input(self) -> None:
        if self.backend.mode != "live":
            self._error(KnobError("knobs are read-only in a replay"))
            return
        current = dict(self.frame.snapshot.knobs) if self.frame else {}
        self.push_screen(KnobInputScreen(self.backend.set_knob, current))

    async def action_autopilot(self) -> None:
        try:
            on = await self.backend.toggle_autopilot()
        except KnobError as exc:
            self._error(exc)
            return
        self.notify(f"autopilot {'on' if on else 'off'}", timeout=2)
        self.backend.request_frame()

    async def action_mark(self) -> None:
        self.marks += 1
        try:
            await self.backend.mark(f"m{self.marks}")
        except KnobError as exc:
            self.marks -= 1
            self._error(exc)

    def action_pause_play(self) -> None:
        try:
            paused = self.backend.toggle_pause()
        except KnobError as exc:
            self._error(exc)
            return
        self.notify("paused" if paused else "playing", timeout=1.5)
        self.backend.request_frame()

    def action_speed(self, factor: float) -> None:
        try:
            speed = self.backend.scale_speed(factor)
        except KnobError as exc:
            self._error(exc)
            return
        self.notify(f"speed {speed_text(speed)}", timeout=1.5)
        self.backend.request_frame()

    async def action_quit(self) -> None:
        self._quit("quit from the dashboard")

    def _quit(self, message: str) -> None:
        if self.backend.done:
            self.exit()
            return
        if not self.quitting:
            self.quitting = True
            self.backend.request_quit(message)
            self.backend.request_frame()
