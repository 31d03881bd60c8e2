"""The replay's timeline strip: the whole session from start to end, its knob changes,
marks and errors as ticks, and where the replay is. A click seeks there.

One row of ticks per session (two in a two-session replay: B's shifted by the
alignment), then a row with the position and the session's times.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import events
from textual.message import Message
from textual.widget import Widget

from app.core.replay_index import Landmark

#: Tick symbols and colours by landmark kind; when ticks share a cell, the first kind
#: listed here wins (an error is never hidden behind a knob change).
TICKS = {"error": ("✗", "bold red"), "mark": ("▲", "bold cyan"), "knob": ("│", "bold yellow")}
_PRIORITY = list(TICKS)


@dataclass(slots=True)
class Track:
    label: str  # "" for a single session; "A", "B" side by side
    landmarks: list[Landmark]
    offset_s: float = 0.0  # a tick at session time t is drawn at t + offset_s


def _fmt(t: float) -> str:
    from app.ui.replay_seek import format_time

    return format_time(t)


class Timeline(Widget):
    """Call `show(now_s)` to move the position; `Timeline.Seek` is posted on a click."""

    DEFAULT_CSS = """
    Timeline {
        height: auto;
        padding: 0 1;
    }
    """

    class Seek(Message):
        def __init__(self, t_s: float) -> None:
            super().__init__()
            self.t_s = t_s

    def __init__(self, duration_s: float, tracks: list[Track], **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.duration_s = max(duration_s, 1e-9)
        self.tracks = tracks
        self.now_s = 0.0

    def get_content_height(self, container: object, viewport: object, width: int) -> int:
        return len(self.tracks) + 1

    def _label_width(self) -> int:
        return max((len(t.label) for t in self.tracks), default=0) + (
            1 if any(t.label for t in self.tracks) else 0)

    def _bar_width(self) -> int:
        return max(1, self.content_size.width - self._label_width())

    def cell_of(self, t: float) -> int:
        width = self._bar_width()
        return min(width - 1, max(0, int(t / self.duration_s * width)))

    def time_of(self, x: int) -> float:
        """The session time of a column of the widget's content (the tick row's)."""
        width = self._bar_width()
        cell = min(width - 1, max(0, x - self._label_width()))
        return (cell + 0.5) / width * self.duration_s

    def show(self, now_s: float) -> None:
        if now_s != self.now_s:
            self.now_s = now_s
            self.refresh()

    def render(self) -> Text:
        width = self._bar_width()
        lw = self._label_width()
        pos = self.cell_of(self.now_s)
        out = Text(no_wrap=True, overflow="crop")
        for track in self.tracks:
            cells: list[str | None] = [None] * width
            for lm in track.landmarks:
                i = self.cell_of(lm.t_s + track.offset_s)
                current = cells[i]
                if current is None or _PRIORITY.index(lm.kind) < _PRIORITY.index(current):
                    cells[i] = lm.kind
            if lw:
                out.append(f"{track.label:<{lw}}", style="bold")
            for i, kind in enumerate(cells):
                style = "on #37474f" if i <= pos else ""
                if kind is None:
                    out.append("─", style=f"dim {style}".strip())
                else:
                    sym, colour = TICKS[kind]
                    out.append(sym, style=f"{colour} {style}".strip())
            out.append("\n")
        # the position row: a marker under the current cell, the times at both ends
        start, now, end = "0:00", _fmt(self.now_s), _fmt(self.duration_s)
        row = [" "] * width
        row[pos] = "▲"
        line = "".join(row)
        line = start + line[len(start):]
        line = line[: width - len(end)] + end
        now_at = min(max(len(start) + 1, pos + 2), width - len(end) - len(now) - 1)
        if now_at > len(start) and now_at + len(now) < width - len(end):
            line = line[:now_at] + now + line[now_at + len(now):]
        out.append(" " * lw)
        for i, ch in enumerate(line):
            out.append(ch, style="bold #ffb74d" if i == pos or (
                now_at <= i < now_at + len(now)) else "dim")
        return out

    def on_click(self, event: events.Click) -> None:
        if event.y < len(self.tracks) + 1:
            self.post_message(self.Seek(self.time_of(event.x - self.gutter.left)))
