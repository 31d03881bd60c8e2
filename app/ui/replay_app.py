"""The dashboard on a replay that can seek: the live dashboard's panels, a timeline
strip under the header, and keys to move about the session.

Keys: `g` then a time (`5:30`) jumps there; left/right step 10 s, shift+left/right
60 s; `n` / `p` the next / previous knob change, mark or error; `home` / `end` the
start and the end. A click on the timeline jumps to that time. Each jump rebuilds every
panel as of that moment (app/ui/replay_seek.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual.app import SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widget import Widget

from app.ui import keys
from app.ui.app import DashboardApp, FrameReady
from app.ui.feed import clip
from app.ui.replay_seek import SeekableReplayBackend, format_time
from app.ui.screens.seek_input import SeekInputScreen
from app.ui.widgets.key_bar import KeyBar
from app.ui.widgets.timeline import Timeline, Track


class ReplayDashboardApp(DashboardApp):
    BINDINGS: ClassVar[list[BindingType]] = [
        # The seek keys are the dashboard's (app/ui/keys.py); home and end again, before
        # the focused panel's own (scrolling the event log)...
        Binding("home", "seek(0)", "start", show=False, priority=True),
        Binding("end", "seek_end", "end", show=False, priority=True),
    ]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # ...but not over a dialog's: in the `g` dialog, home and end move the cursor.
        if action in ("seek", "seek_end") and len(self.screen_stack) > 1:
            return False
        return super().check_action(action, parameters)

    def __init__(self, backend: SeekableReplayBackend, **kw: object) -> None:
        super().__init__(backend, **kw)  # type: ignore[arg-type]
        self.seekable = backend

    def compose(self) -> Iterable[Widget]:
        for widget in super().compose():
            if isinstance(widget, KeyBar):  # the replay's keys and the seek keys
                yield KeyBar("seek", id=widget.id)
                continue
            yield widget
            if widget.id == "header":
                yield Timeline(self.seekable.duration_s,
                               [Track("", self.seekable.index.landmarks)], id="timeline")

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """The command palette: the seek actions too, by name."""
        for k in keys.keys_for("seek"):
            if k.palette and "seek" in k.modes:
                yield SystemCommand(k.palette, f"{k.help} (key {k.shown})",
                                    self._runner_for(k.action))
        yield from super().get_system_commands(screen)

    def on_frame_ready(self, message: FrameReady) -> None:
        # DashboardApp's own handler paints the panels (Textual calls both).
        for timeline in self.query(Timeline):
            timeline.show(message.frame.now_s)

    # -- seeking -------------------------------------------------------------------
    def _seek(self, t: float) -> None:
        t = self.seekable.seek(t)
        self.notify(f"at {format_time(t)}", timeout=1.0)

    def action_seek(self, t: float) -> None:
        self._seek(t)

    def action_seek_end(self) -> None:
        self._seek(self.seekable.duration_s)

    def action_step(self, seconds: float) -> None:
        self.seekable.step(seconds)

    def action_landmark(self, direction: int) -> None:
        b = self.seekable
        lm = b.next_landmark() if direction > 0 else b.previous_landmark()
        if lm is None:
            self.notify(f"no {'later' if direction > 0 else 'earlier'} knob change, mark"
                        " or error", severity="warning", timeout=2)
            return
        self.notify(f"{format_time(lm.t_s)} {lm.kind}: {clip(lm.label)}", timeout=2.5)

    def action_goto(self) -> None:
        def done(t: float | None) -> None:
            if t is not None:
                self._seek(t)

        self.push_screen(SeekInputScreen(self.seekable.now_s(), self.seekable.duration_s),
                         done)

    def on_timeline_seek(self, message: Timeline.Seek) -> None:
        self._seek(message.t_s)
