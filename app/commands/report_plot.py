"""`wattflow report --plot PNG`: GPU power over time, one panel per session.

Each panel: a line per GPU, the cap in force as a stepped line (as the meter read it,
else as the knob set it), and a vertical line at every knob change and mark. Their
labels sit in a lane above the plot, on as many rows as it takes for no two to
overlap; changes closer together than a label can tell apart (a key pressed three
times in a second) share one label ("batch_limit 32 → 4 (3 changes)").

Read from the session files themselves, so the report's own reading stays as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.events import KnobEvent, MarkEvent, Sample
from app.core.knobs import format_value
from app.core.session_reader import open_session

KNOB_COLOR = "tab:red"
MARK_COLOR = "tab:purple"
CAP_COLOR = "black"
FIG_W_IN = 11.0
DPI = 110
LABEL_PT = 7.0
#: Width of one character of the label font, in points (DejaVu Sans at 7 pt: ~4.2).
CHAR_PT = 0.62 * LABEL_PT
#: Events closer than this (in points along the time axis) share one label.
CLUSTER_PT = 9.0
#: Share of the figure's width the plot's axes take (the rest: y label, margins).
AXES_SHARE = 0.86


@dataclass(slots=True)
class Moment:
    t_s: float
    kind: str  # "knob" or "mark"
    label: str
    knob: str = ""
    previous: float | None = None
    value: float | None = None


@dataclass(slots=True)
class SessionSeries:
    power: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    caps: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    moments: list[Moment] = field(default_factory=list)
    start_cap: float | None = None  # the power_cap knob at the start, if set
    end_s: float = 0.0


def read_series(path: Path) -> SessionSeries:
    """Power and power limit per GPU, knob changes and marks of one session."""
    out = SessionSeries()
    stream = open_session(path)
    cap = stream.header.knobs.get("power_cap")
    out.start_cap = float(cap) if isinstance(cap, int | float) else None
    for ev in stream:
        out.end_s = max(out.end_s, ev.t_s)
        if isinstance(ev, Sample) and ev.component == "gpu":
            w = ev.power_w if ev.power_w is not None else ev.power_avg_w
            if w is not None:
                ts, ws = out.power.setdefault(ev.device, ([], []))
                ts.append(ev.t_s)
                ws.append(w)
            if ev.power_limit_w is not None:
                ts, ws = out.caps.setdefault(ev.device, ([], []))
                if not ws or ws[-1] != ev.power_limit_w:
                    ts.append(ev.t_s)
                    ws.append(ev.power_limit_w)
        elif isinstance(ev, KnobEvent) and ev.is_change:
            out.moments.append(Moment(ev.t_s, "knob", "", ev.knob, ev.previous, ev.value))
        elif isinstance(ev, MarkEvent):
            out.moments.append(Moment(ev.t_s, "mark", ev.label or "mark"))
    return out


def _cluster_label(group: Sequence[Moment]) -> str:
    """One label for moments too close to tell apart: a knob's first and last value,
    marks by name."""
    parts: list[str] = []
    knobs: dict[str, list[Moment]] = {}
    for m in group:
        if m.kind == "knob":
            if m.knob not in knobs:
                parts.append(f"knob:{m.knob}")
            knobs.setdefault(m.knob, []).append(m)
        else:
            parts.append(f"mark:{m.label}")
    out: list[str] = []
    for p in parts:
        kind, _, name = p.partition(":")
        if kind == "mark":
            out.append(f"◆ {name}")
            continue
        ms = knobs[name]
        text = f"{name} {format_value(name, ms[0].previous)} → {format_value(name, ms[-1].value)}"
        out.append(text + (f" ({len(ms)} changes)" if len(ms) > 1 else ""))
    return ", ".join(out)


@dataclass(slots=True)
class PlacedLabel:
    t_s: float
    text: str
    row: int
    right_aligned: bool
    color: str


def place_labels(moments: Sequence[Moment], t0: float, t1: float,
                 axes_pt: float) -> list[PlacedLabel]:
    """Cluster moments too close together, then give each label the lowest row where
    it overlaps no other. Widths are estimated from the character count: labels are
    short and the estimate errs wide."""
    if t1 <= t0:
        t1 = t0 + 1.0
    scale = axes_pt / (t1 - t0)
    groups: list[list[Moment]] = []
    for m in sorted(moments, key=lambda m: m.t_s):
        if groups and (m.t_s - groups[-1][-1].t_s) * scale < CLUSTER_PT:
            groups[-1].append(m)
        else:
            groups.append([m])
    rows: list[list[tuple[float, float]]] = []  # per row: occupied (left, right) in pt
    placed: list[PlacedLabel] = []
    for g in groups:
        text = _cluster_label(g)
        x = (g[0].t_s - t0) * scale
        w = len(text) * CHAR_PT + 4.0
        right_aligned = x + w > axes_pt  # would run off the right: end at the line
        left, right = (x - w, x) if right_aligned else (x, x + w)
        row = next((i for i, occ in enumerate(rows)
                    if all(right + 2 < a or left > b + 2 for a, b in occ)), len(rows))
        if row == len(rows):
            rows.append([])
        rows[row].append((left, right))
        color = MARK_COLOR if all(m.kind == "mark" for m in g) else KNOB_COLOR
        placed.append(PlacedLabel(g[0].t_s, text, row, right_aligned, color))
    return placed


def write_power_plot(sessions: Sequence[tuple[Path, str]], path: Path) -> None:
    """One panel per (session file, title). Raises OSError/ValueError on writing."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window
    import matplotlib.pyplot as plt

    data = [read_series(p) for p, _ in sessions]
    axes_pt = FIG_W_IN * 72 * AXES_SHARE
    layouts = []
    for d in data:
        t1 = max([d.end_s, *(ts[-1] for ts, _ in d.power.values() if ts)], default=1.0)
        labels = place_labels(d.moments, 0.0, t1, axes_pt)
        layouts.append((t1, labels, 1 + max((lab.row for lab in labels), default=-1)))
    heights: list[float] = []
    for _, _, nrows in layouts:
        heights += [max(0.3, 0.17 * nrows), 2.8]
    fig = plt.figure(figsize=(FIG_W_IN, sum(heights) + 0.6), layout="constrained")
    grid = fig.add_gridspec(len(heights), 1, height_ratios=heights)
    try:
        for i, (d, (_, title), (t1, labels, nrows)) in enumerate(
                zip(data, sessions, layouts, strict=True)):
            lane = fig.add_subplot(grid[2 * i])
            ax = fig.add_subplot(grid[2 * i + 1], sharex=lane)
            _draw_session(ax, lane, d, t1, labels, max(1, nrows))
            lane.set_title(title, fontsize=9, loc="left")
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)


def _draw_session(ax: Any, lane: Any, d: SessionSeries, t1: float,
                  labels: list[PlacedLabel], nrows: int) -> None:
    for device, (ts, ws) in sorted(d.power.items()):
        ax.plot(ts, ws, label=device, linewidth=0.9)
    drawn: set[tuple[tuple[float, ...], tuple[float, ...]]] = set()
    cap_label = "cap"
    for ts, ws in d.caps.values():
        key = (tuple(ts), tuple(ws))
        if key in drawn:
            continue  # GPUs capped alike share one line
        drawn.add(key)
        ax.step([*ts, t1], [*ws, ws[-1]], where="post", color=CAP_COLOR, linewidth=1.2,
                linestyle="-", label=cap_label)
        cap_label = "_cap"
    if not d.caps:
        _knob_cap_steps(ax, d, t1)
    for m in d.moments:
        color = MARK_COLOR if m.kind == "mark" else KNOB_COLOR
        ax.axvline(m.t_s, color=color, linestyle=":" if m.kind == "mark" else "--",
                   linewidth=0.8, alpha=0.8)
    for lab in labels:
        lane.vlines(lab.t_s, 0, lab.row + 0.5, color=lab.color, linewidth=0.6, alpha=0.6)
        lane.text(lab.t_s, lab.row + 0.5, f" {lab.text} " if not lab.right_aligned
                  else f"{lab.text} ", fontsize=LABEL_PT, color=lab.color, va="center",
                  ha="right" if lab.right_aligned else "left", clip_on=False)
    lane.set_ylim(0, nrows)
    lane.axis("off")
    if not d.power:
        ax.text(0.5, 0.5, "no GPU power samples", transform=ax.transAxes, ha="center")
    ax.set_xlim(0, t1)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("GPU power (W)")
    ax.set_ylim(bottom=0)  # power read against zero, not against its own wiggle
    ax.grid(alpha=0.3)
    if d.power:
        ax.legend(loc="lower right", fontsize=7, ncol=min(4, len(d.power) + 1))


def _knob_cap_steps(ax: Any, d: SessionSeries, t1: float) -> None:
    """No meter read a limit: the cap as the knob set it, where it was set."""
    ts: list[float] = [0.0]
    ws: list[float | None] = [d.start_cap]
    for m in d.moments:
        if m.kind == "knob" and m.knob == "power_cap":
            ts.append(m.t_s)
            ws.append(m.value)
    if any(w is not None for w in ws):
        ys = [float("nan") if w is None else w for w in ws]
        ax.step([*ts, t1], [*ys, ys[-1]], where="post", color=CAP_COLOR, linewidth=1.2,
                label="cap")
