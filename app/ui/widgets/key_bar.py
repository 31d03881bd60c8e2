"""The bottom line: the keys of this mode (a live run's knobs, a replay's pause and
speed), shortened as the terminal narrows; `? help` and `q quit` always fit."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from app.ui.keys import Key, keys_for

KEY_STYLE = "bold #4fc3f7"
PINNED = ("help", "quit")  # actions shown at every width, last on the line
#: Keys stepping one knob share one entry when space is short: "[ ] cap ±25W".
PAIRS = {"cap(-1)": "cap(1)", "batch(-1)": "batch(1)"}


def _entries(keys: list[Key], compact: bool) -> list[tuple[str, str]]:
    by_action = {k.action: k for k in keys}
    out: list[tuple[str, str]] = []
    skip: set[str] = set()
    for k in keys:
        if k.action in skip or k.action in PINNED or (compact and k.action == "command_palette"):
            continue
        pair = by_action.get(PAIRS.get(k.action, ""))
        if compact and pair is not None:
            skip.add(pair.action)
            name, _, down = k.label.partition(" ")
            up = pair.label.partition(" ")[2]
            steps = f"±{down[1:]}" if down.startswith("-") and up == f"+{down[1:]}" else \
                f"{down} {up}"
            out.append((f"{k.shown} {pair.shown}", f"{name} {steps}"))
            continue
        out.append((k.shown, k.label))
    out.extend((k.shown, k.label) for a in PINNED for k in keys if k.action == a)
    return out


def _line(entries: list[tuple[str, str]]) -> Text:
    line = Text(no_wrap=True, overflow="ellipsis")
    for i, (key, label) in enumerate(entries):
        if i:
            line.append("  ")
        line.append(key, style=KEY_STYLE)
        line.append(f" {label}", style="dim")
    return line


def key_line(mode: str, width: int) -> Text:
    keys = keys_for(mode)
    line = _line(_entries(keys, compact=False))
    if line.cell_len + 1 <= width:
        return Text(" ").append_text(line)
    entries = _entries(keys, compact=True)
    line = _line(entries)
    while line.cell_len + 1 > width and len(entries) > len(PINNED):
        entries.pop(len(entries) - len(PINNED) - 1)  # drop the last unpinned key
        line = _line(entries)
    return Text(" ").append_text(line)


class KeyBar(Static):
    DEFAULT_CSS = """
    KeyBar { dock: bottom; height: 1; background: $boost; }
    """

    def __init__(self, mode: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.mode = mode

    def on_resize(self) -> None:
        self.update(key_line(self.mode, self.size.width))

    def on_mount(self) -> None:
        self.update(key_line(self.mode, self.size.width or 80))
