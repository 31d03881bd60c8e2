"""`?`: every key, what it does, and in which mode; the panels and what they count."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from app.ui.keys import KEYS

PANELS = (
    ("now", "power and cap per GPU, energy so far, J per output token, tokens/s; where the"
            " calls are: waiting at admission (held by the batch limit), running or waiting"
            " in the engine as the engine reports it, done, failed, shed (arrivals dropped"
            " by an overloaded open loop)"),
    ("knobs", "each knob, its key and range; a change still taking effect says so:"
              " 'draining 46 -> 2' until the engine runs no more than the new batch limit,"
              " 'restarting -> 128' while the engine restarts"),
    ("chart", "power per GPU (smoothed), the cap as a stepped line, ticks at marks (m) and"
              " knob changes (k); a strip per GPU when there are many"),
)


def help_table(mode: str) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(no_wrap=True, style="bold #4fc3f7")
    t.add_column()
    t.add_column(no_wrap=True, style="dim")
    for k in KEYS:
        where = "both" if len(k.modes) > 1 else next(iter(k.modes))
        t.add_row(k.shown, Text(k.help, style="" if mode in k.modes else "dim"), where)
    return t


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 96%; max-width: 110; height: auto; max-height: 96%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    HelpScreen .title { text-style: bold; margin-top: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "close"), Binding("question_mark", "close", "close"),
        Binding("q", "close", "close"),
    ]

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def compose(self) -> ComposeResult:
        panels = Table.grid(padding=(0, 2))
        panels.add_column(no_wrap=True, style="bold")
        panels.add_column()
        for name, text in PANELS:
            panels.add_row(name, text)
        with VerticalScroll():
            yield Static(f"Keys ({self.mode}; escape or ? closes this)", classes="title")
            yield Static(help_table(self.mode), id="help-keys")
            yield Static("Panels", classes="title")
            yield Static(panels)

    def action_close(self) -> None:
        self.dismiss(None)
