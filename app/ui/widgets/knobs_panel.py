"""The knobs with their current values, units, ranges and keys."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from app.core.knobs import KNOB_NAMES
from app.ui.feed import Frame, format_knob

KEYS = {"power_cap": "[ ]", "batch_limit": ", .", "rate": "k", "max_tokens": "k",
        "max_num_seqs": "k"}


def knob_range(frame: Frame, name: str) -> str:
    if name == "power_cap":
        ranges = [d.range_w for d in frame.devices if d.range_w is not None]
        if ranges:
            return f"{min(r[0] for r in ranges):g}-{max(r[1] for r in ranges):g} W"
        return "not settable" if frame.header is not None else ""
    return {"batch_limit": "1-65536", "rate": "per s", "max_tokens": "per call",
            "max_num_seqs": "restart"}[name]


def knobs_table(frame: Frame, *, live: bool) -> Group:
    t = Table.grid(padding=(0, 1), expand=True)
    t.add_column(style="dim", no_wrap=True)
    t.add_column(justify="right", no_wrap=True, style="bold")
    t.add_column(no_wrap=True, style="#4fc3f7")
    t.add_column(no_wrap=True, style="dim", justify="right")
    knobs = frame.snapshot.knobs
    for name in KNOB_NAMES:
        value = knobs.get(name)
        shown = format_knob(name, value)
        if name == "power_cap" and value is None:
            limits = [d.limit_w for d in frame.devices if d.limit_w is not None]
            shown = f"unset ({max(limits):g} W)" if limits else "unset"
        elif name == "rate" and value is None:
            shown = "closed loop"
        elif name == "max_tokens" and value is None:
            shown = "workload's"
        elif name == "max_num_seqs" and value is None:
            shown = "-"
        t.add_row(name, shown, KEYS[name] if live else "", knob_range(frame, name))
    if live:
        note = Text.assemble(("\n[ ]", "#4fc3f7"), (" cap ±25 W   ", "dim"), (", .", "#4fc3f7"),
                             (" batch ½ ×2   ", "dim"), ("k", "#4fc3f7"), (" type", "dim"))
    else:
        note = Text("\nreplay: the knobs are as recorded, read-only", style="dim italic")
    return Group(t, note)


class KnobsPanel(Static):
    def __init__(self, *, live: bool, id: str | None = None) -> None:
        super().__init__(id=id)
        self.live = live

    def show(self, frame: Frame) -> None:
        self.update(knobs_table(frame, live=self.live))
