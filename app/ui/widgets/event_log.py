"""Knob changes, marks, errors and engine notes as they happen (newest at the bottom)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import RichLog

from app.ui.feed import Frame, LogLine

LEVEL_STYLES = {
    "knob": "#4fc3f7",
    "mark": "bold #ba68c8",
    "error": "bold red",
    "warning": "yellow",
    "note": "dim",
    "run": "bold",
}


def log_text(line: LogLine) -> Text:
    text = Text(no_wrap=True)
    text.append(f"{line.t_s:8.1f} s  ", style="dim")
    text.append(f"{line.level:<7} ", style=LEVEL_STYLES.get(line.level, ""))
    text.append(line.text, style=LEVEL_STYLES.get(line.level, "") if line.level in (
        "error", "warning", "mark") else "")
    return text


class EventLog(RichLog):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, max_lines=500, wrap=False, markup=False, min_width=40)
        self._seen = 0  # sequence number of the last line written

    def show(self, frame: Frame) -> None:
        for line in frame.log:
            if line.seq > self._seen:
                self.write(log_text(line))
                self._seen = line.seq
