"""The knobs with their current values, units, ranges and keys."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from app.core.knobs import SPECS, KnobSpec, format_value, step_text
from app.ui.feed import Frame

#: The keys that step a knob (the app's bindings); every other knob is typed with `k`.
STEP_KEYS = {"power_cap": "[ ]", "batch_limit": ", ."}


def _short(v: float) -> str:
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= scale and v % scale == 0 and (scale > 1e3 or abs(v) >= 1e4):
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


def _range(spec: KnobSpec, lo: float, hi: float) -> str:
    unit = {"W": " W", "tok": " tok"}.get(spec.unit, spec.unit)
    return f"{_short(lo)}-{_short(hi)}{unit}"


def knob_range(frame: Frame, name: str) -> str:
    """The bounds in force in this run (recorded in the header), else the spec's."""
    spec = SPECS[name]
    recorded = frame.header.knob_specs.get(name) if frame.header is not None else None
    if isinstance(recorded, dict):
        if recorded.get("unavailable"):
            return "not here"
        lo, hi = recorded.get("minimum"), recorded.get("maximum")
        if isinstance(lo, int | float) and isinstance(hi, int | float):
            return _range(spec, float(lo), float(hi))
    if spec.bounds_from == "device":
        ranges = [d.range_w for d in frame.devices if d.range_w is not None]
        if ranges:
            return _range(spec, max(r[0] for r in ranges), min(r[1] for r in ranges))
        return "not settable" if frame.header is not None else ""
    return _range(spec, spec.minimum, spec.maximum)


#: The panel shows each knob's range only from this content width on.
RANGE_FROM_W = 48
STATUS_STYLE = "bold #ffb74d"
PILOT_STYLE = "#ce93d8"
AUTOPILOT = "autopilot"


def autopilot_title(frame: Frame, width: int) -> str:
    """The knobs panel's title with an autopilot: its state (and objective, wide)."""
    ap = frame.autopilot
    if ap is None:
        return "knobs"
    title = f"knobs · autopilot {ap.state}"
    objective = f" · {ap.objective}"
    # The objective judged as the operator reads it: the 30 s windows that met it so far.
    windows = f" · met {frame.autopilot_windows}" if frame.autopilot_windows else ""
    if len(title) + len(objective) + len(windows) + 1 <= width:
        title += objective + windows
    elif len(title) + len(objective) + 1 <= width:
        title += objective
    elif windows and len(title) + len(windows) + 1 <= width:
        title += windows
    if width < RANGE_FROM_W and any(s == AUTOPILOT for s in frame.knob_sources.values()):
        title += " (* by it)"
    return title


def knobs_table(frame: Frame, *, live: bool, width: int = 60) -> Group:
    """Name, value, key, and the range in force (wide enough) or what the change is
    still doing ("draining 46 -> 2", "restarting -> 128"), which wins over the range."""
    t = Table.grid(padding=(0, 1), expand=True)
    t.add_column(style="dim", no_wrap=True)
    t.add_column(justify="right", no_wrap=True, style="bold")
    t.add_column(no_wrap=True, style="#4fc3f7")
    t.add_column(no_wrap=True, justify="right", ratio=1, overflow="ellipsis")
    knobs = frame.snapshot.knobs
    wide = width >= RANGE_FROM_W
    for name, spec in SPECS.items():
        value = knobs.get(name)
        shown = format_value(name, value) if wide or spec.unit != "tok" or value is None \
            else f"{value:g}"
        if value is None and spec.bounds_from == "device":
            limits = [d.limit_w for d in frame.devices if d.limit_w is not None]
            shown = (f"unset ({max(limits):g} W)" if wide else f"{max(limits):g} W") \
                if limits else "unset"
        elif value is None:
            shown = (spec.unset or "-") if wide else "-"
        status = frame.knob_status.get(name)
        source = frame.knob_sources.get(name)
        by_pilot = source == AUTOPILOT
        if by_pilot and not wide:
            shown += "*"  # set by the autopilot (the border's title says so)
        last: Text | str
        if status is not None:
            # Narrow: the first word here, the whole of it on the panel's border.
            last = Text(status if wide else status.split()[0], style=STATUS_STYLE)
        elif wide and source is not None and frame.autopilot is not None:
            # With an autopilot in the run, who set each knob matters more than its range.
            last = Text(f"by {source}", style=PILOT_STYLE if by_pilot else "dim")
        elif wide:
            last = Text(knob_range(frame, name), style="dim")
        else:
            last = ""
        t.add_row(spec.label or name, shown, STEP_KEYS.get(name, "k") if live else "", last)
    if not live:
        return Group(t, Text("replay: as recorded, read-only", style="dim italic"))
    if not wide:
        return Group(t)
    cap = SPECS["power_cap"].step
    cap_text = f"±{cap.amount:g} W" if cap is not None else ""
    note = Text.assemble(("[ ]", "#4fc3f7"), (f" cap {cap_text}  ", "dim"),
                         (", .", "#4fc3f7"),
                         (f" batch {step_text('batch_limit', -1)} "
                          f"{step_text('batch_limit', 1)}  ", "dim"),
                         ("k", "#4fc3f7"), (" type", "dim"), no_wrap=True, overflow="ellipsis")
    return Group(t, note)


class KnobsPanel(Static):
    def __init__(self, *, live: bool, id: str | None = None) -> None:
        super().__init__(id=id)
        self.live = live

    def show(self, frame: Frame) -> None:
        width = self.content_region.width or 60
        self.update(knobs_table(frame, live=self.live, width=width))
        # Narrow, the row says which knob is "draining"; the bottom border says the
        # rest, where it fits whole ("draining 46 -> 2 · restarting -> 128").
        self.border_title = autopilot_title(frame, width)
        subtitle = " · ".join(frame.knob_status.values()) if width < RANGE_FROM_W else ""
        if len(subtitle) > width - 2:  # two at once: "draining 46->2 · restarting->128"
            subtitle = subtitle.replace(" -> ", "->")
        self.border_subtitle = subtitle
