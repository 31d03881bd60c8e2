"""`g` in a replay: type a time to jump to (`5:30`, `1:02:03`, `330`, `90s`). A bad
time is shown on one line and the dialog stays open; escape cancels."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from app.ui.replay_seek import format_time, parse_time


class SeekInputScreen(ModalScreen[float | None]):
    """Dismissed with the session time typed, or None if cancelled."""

    DEFAULT_CSS = """
    SeekInputScreen { align: center middle; }
    SeekInputScreen > Vertical {
        width: 60; height: auto; border: thick $accent; background: $surface; padding: 1 2;
    }
    SeekInputScreen #seek-help { color: $text-muted; margin-bottom: 1; }
    SeekInputScreen #seek-error { color: $error; height: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def __init__(self, now_s: float, duration_s: float) -> None:
        super().__init__()
        self.now_s, self.duration_s = now_s, duration_s

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"Go to a time: m:ss, h:mm:ss or seconds (now {format_time(self.now_s)}"
                         f" of {format_time(self.duration_s)})", id="seek-help")
            yield Input(placeholder="e.g. 5:30", id="seek-entry")
            yield Static("", id="seek-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            t = parse_time(event.value)
        except ValueError as exc:
            self.query_one("#seek-error", Static).update(str(exc))
            return
        self.dismiss(t)

    def action_cancel(self) -> None:
        self.dismiss(None)
