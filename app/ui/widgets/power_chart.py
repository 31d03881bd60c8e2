"""Power over the last two minutes, for any number of named series (a GPU each, or a
fleet's nodes): a braille line per series while they are few, a one-row strip per
series when there are many (or the panel is short). The cap in force is drawn as a
stepped line (as it was over time, not today's cap over the past); marks (`m`) and
knob changes are vertical ticks, lettered `m` and `k` on the time axis.

Smoothing: each dot column shows the median of the readings that fall in it, then a
median of three neighbouring columns. A lone reading off the trend (a sample taken
between two engine steps) is dropped; a real change lasts longer than one column
(a second at most) and is kept, edge included."""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rich.text import Text
from textual.widget import Widget

from app.ui.feed import Frame, Tick
from app.ui.widgets.braille import BrailleCanvas

GPU_STYLES = ("#4fc3f7", "#ffb74d", "#81c784", "#ba68c8", "#e57373", "#fff176", "#90a4ae",
              "#f06292")
CAP_STYLE = "bold #ff5252"
AXIS_STYLE = "#808080"
TICK_STYLES = {"mark": "#ba68c8", "knob": "#4fc3f7"}
TICK_LETTERS = {"mark": "m", "knob": "k"}
LABEL_W = 6  # "1000 W" at most, then the axis
#: More series than this are drawn as strips, one row each.
MAX_LINES = 4
SPARKS = "▁▂▃▄▅▆▇█"
#: A gap between readings longer than this breaks the line instead of bridging it.
GAP_S = 5.0


@dataclass(slots=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]  # (t_s, W), oldest first
    cap_steps: Sequence[tuple[float, float]] = ()  # (t_s, cap W) at each change
    cap_w: float | None = None  # in force now
    util_pct: float | None = None


@dataclass(slots=True)
class ChartData:
    now_s: float
    window_s: float
    series: list[Series] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    top_hint_w: float = 0.0  # the highest the y axis must reach (a GPU's maximum limit)
    absolute: bool = False  # time labels as run time (the whole run), not "-60 s"


def chart_data(frame: Frame, window_s: float) -> ChartData:
    series = [Series(g.device, g.points, g.limit_steps, g.limit_w, g.util_pct)
              for g in frame.gpus]
    if series and not any(s.cap_steps or s.cap_w is not None for s in series):
        cap = frame.snapshot.knobs.get("power_cap")
        if cap is not None:
            for s in series:
                s.cap_w = float(cap)
    ranges = [d.range_w[1] for d in frame.devices if d.range_w is not None]
    return ChartData(frame.now_s, window_s, series, list(frame.ticks),
                     max(ranges, default=0.0), absolute=frame.span_s is not None)


def _nice_top(w: float) -> float:
    step = 50.0 if w <= 1000 else 100.0
    return max(step, math.ceil(w / step) * step)


def smoothed(points: Sequence[tuple[float, float]], t0: float, span_s: float,
             columns: int) -> list[float | None]:
    """One value per column of `span_s / columns` seconds from `t0`: the median of the
    readings in it, then the median of it and its two neighbours; None: no reading, or
    a gap longer than GAP_S."""
    if columns <= 0:
        return []
    buckets: list[list[float]] = [[] for _ in range(columns)]
    per = span_s / columns
    last_t: list[float | None] = [None] * columns
    start = bisect.bisect_left([p[0] for p in points], t0 - per)
    for t, w in points[start:]:
        i = int((t - t0) / per)
        if 0 <= i < columns:
            buckets[i].append(w)
            last_t[i] = t
    raw: list[float | None] = [statistics.median(b) if b else None for b in buckets]
    # Bridge empty columns between readings closer than GAP_S (slow meters, wide charts).
    filled = list(raw)
    prev: int | None = None
    for i, v in enumerate(raw):
        if v is None:
            continue
        if prev is not None and i - prev > 1 and (i - prev) * per <= GAP_S:
            for j in range(prev + 1, i):
                filled[j] = raw[prev]
        prev = i
    out: list[float | None] = []
    for i, v in enumerate(filled):
        if v is None:
            out.append(None)
            continue
        near = [x for x in filled[max(0, i - 1):i + 2] if x is not None]
        out.append(statistics.median(near) if len(near) == 3 else v)
    return out


def cap_at(steps: Sequence[tuple[float, float]], t: float) -> float | None:
    i = bisect.bisect_right([s[0] for s in steps], t) - 1
    return steps[i][1] if i >= 0 else None


def render_chart(frame: Frame, width: int, height: int, window_s: float) -> Text:
    """The whole panel as text: legend, plot with a y axis, time axis."""
    return render(chart_data(frame, window_s), width, height)


def render(data: ChartData, width: int, height: int) -> Text:
    if width < LABEL_W + 8 or height < 3:
        return Text("(too small)")
    n = len(data.series)
    if n > MAX_LINES or (n > 1 and height < 7):
        return render_strips(data, width, height)
    return render_lines(data, width, height)


def _legend(data: ChartData, width: int) -> Text:
    legend = Text(no_wrap=True, overflow="ellipsis")
    if not data.series:
        legend.append("no GPU power readings yet", style="dim")
    for i, s in enumerate(data.series):
        legend.append("━ ", style=GPU_STYLES[i % len(GPU_STYLES)])
        now = f"{s.points[-1][1]:.0f} W" if s.points else "- W"
        legend.append(f"{s.name} {now}", style="bold" if len(data.series) == 1 else "")
        legend.append("  ")
    caps = {c for s in data.series for c in ([s.cap_w] if s.cap_w is not None else [])}
    if caps:
        legend.append("━ ", style=CAP_STYLE)
        legend.append("cap " + "/".join(f"{c:.0f}" for c in sorted(caps)) + " W  ")
    kinds = sorted({t.kind for t in data.ticks})
    for k in kinds:
        legend.append(f"{TICK_LETTERS.get(k, '?')}┊", style=TICK_STYLES.get(k, ""))
        legend.append(f"{k}  ", style="dim")
    legend.truncate(width)
    return legend


def _time_axis(data: ChartData, cols: int, x_of: Callable[[float], int],
               dots_per_col: int) -> Text:
    """The time labels, with the ticks' letters at their columns."""
    w = data.window_s
    axis = [" "] * cols
    out = Text(no_wrap=True)
    styles: dict[int, str] = {}
    for tick in _marks_last(data.ticks):  # a mark's letter wins over a knob's
        c = x_of(tick.t_s) // dots_per_col
        if 0 <= c < cols:
            axis[c] = TICK_LETTERS.get(tick.kind, "?")
            styles[c] = "bold " + TICK_STYLES.get(tick.kind, "")
    if data.absolute:
        t0 = data.now_s - w
        left, mid, right = (f"{t0:.0f} s", f"{t0 + w / 2:.0f} s", f"{data.now_s:.0f} s")
    else:
        left, mid, right = f"-{w:.0f} s", f"-{w / 2:.0f} s", "now"
    for pos, lab in ((0, left), ((cols - len(mid)) // 2, mid), (cols - len(right), right)):
        span = range(max(0, pos - 1), min(cols, pos + len(lab) + 1))
        if not any(c in styles for c in span):  # a tick's letter wins over a label
            axis[pos:pos + len(lab)] = list(lab)
    for c, ch in enumerate(axis[:cols]):
        out.append(ch, style=styles.get(c, AXIS_STYLE))
    return out


def _marks_last(ticks: Sequence[Tick]) -> list[Tick]:
    return sorted(ticks, key=lambda t: t.kind == "mark")


def render_lines(data: ChartData, width: int, height: int) -> Text:
    plot_rows = height - 2
    cols = width - LABEL_W - 1
    canvas = BrailleCanvas(cols, plot_rows)
    t0 = data.now_s - data.window_s
    peak = max((w for s in data.series for t, w in s.points if t >= t0), default=0.0)
    caps = [c for s in data.series for c in
            [*(w for _, w in s.cap_steps), *([s.cap_w] if s.cap_w is not None else [])]]
    top = _nice_top(max([peak * 1.05, *caps, data.top_hint_w, 100.0]))

    def y_of(w: float) -> int:
        return round((1.0 - min(max(w, 0.0), top) / top) * (canvas.height - 1))

    def x_of(t: float) -> int:
        return math.floor((t - t0) / data.window_s * canvas.width)

    for tick in _marks_last(data.ticks):  # under everything else
        x = x_of(tick.t_s)
        for y in range(0, canvas.height, 2):
            canvas.dot(x, y, TICK_STYLES.get(tick.kind, AXIS_STYLE))
    for i, s in enumerate(data.series):
        style = GPU_STYLES[i % len(GPU_STYLES)]
        values = smoothed(s.points, t0, data.window_s, canvas.width)
        prev: tuple[int, int] | None = None
        for x, v in enumerate(values):
            if v is None:
                prev = None
                continue
            pt = (x, y_of(v))
            if prev is None:
                canvas.dot(*pt, style)
            else:
                canvas.line(*prev, *pt, style)
            prev = pt
    # The cap over the power: a GPU held at its cap shares the cap's cells, and the
    # cap is the line that must not vanish there.
    drawn: set[tuple[tuple[float, float], ...]] = set()
    for s in data.series:
        steps: tuple[tuple[float, float], ...] = ()
        if s.cap_steps:
            steps = tuple(s.cap_steps)
        elif s.cap_w is not None:
            steps = ((t0 - 1.0, s.cap_w),)
        if steps and steps not in drawn:  # GPUs capped alike share one line
            drawn.add(steps)
            _draw_cap_steps(canvas, steps, t0, data.window_s, y_of)

    out = Text(no_wrap=True)
    out.append_text(_legend(data, width))
    labels = {0: f"{top:.0f} W", plot_rows // 2: f"{top / 2:.0f} W", plot_rows - 1: "0 W"}
    for r, line in enumerate(canvas.lines()):
        out.append("\n")
        out.append(labels.get(r, "").rjust(LABEL_W), style=AXIS_STYLE)
        out.append("┤" if r in labels else "│", style=AXIS_STYLE)
        out.append_text(line)
    out.append("\n")
    out.append(" " * LABEL_W + "└", style=AXIS_STYLE)
    out.append_text(_time_axis(data, cols, x_of, 2))
    return out


def _draw_cap_steps(canvas: BrailleCanvas, steps: Sequence[tuple[float, float]], t0: float,
                    window_s: float, y_of: Callable[[float], int]) -> None:
    """The cap as it was over time: level where it held, a vertical rise or fall at the
    column where it changed."""
    prev_y: int | None = None
    for x in range(canvas.width):
        w = cap_at(steps, t0 + (x + 0.5) / canvas.width * window_s)
        if w is None:
            prev_y = None
            continue
        y = y_of(w)
        if prev_y is not None and y != prev_y:
            canvas.line(x, prev_y, x, y, CAP_STYLE)
        canvas.dot(x, y, CAP_STYLE)
        prev_y = y


def render_strips(data: ChartData, width: int, height: int) -> Text:
    """One row per series: its name, a sparkline of the window (red where it runs at
    its cap), its power now and cap. Rows that do not fit are counted, not hidden."""
    name_w = min(12, max((len(s.name) for s in data.series), default=4)) + 1
    tail_w = 13  # " 1234/1234 W"
    cols = max(4, width - name_w - tail_w)
    t0 = data.now_s - data.window_s
    top = _nice_top(max([data.top_hint_w, 100.0, *(
        w for s in data.series for t, w in s.points if t >= t0)]))
    out = Text(no_wrap=True)
    out.append_text(_legend_strips(data, width, top))
    room = height - 2
    shown = data.series if len(data.series) <= room else data.series[:max(0, room - 1)]
    for i, s in enumerate(shown):
        out.append("\n")
        out.append(s.name[-(name_w - 1):].ljust(name_w), style=GPU_STYLES[i % len(GPU_STYLES)])
        values = smoothed(s.points, t0, data.window_s, cols)
        for c, v in enumerate(values):
            if v is None:
                out.append(" ")
                continue
            cap = cap_at(s.cap_steps, t0 + (c + 0.5) / cols * data.window_s) if s.cap_steps \
                else s.cap_w
            level = min(len(SPARKS) - 1, max(0, round(v / top * (len(SPARKS) - 1))))
            at_cap = cap is not None and v >= 0.97 * cap
            out.append(SPARKS[level], style=CAP_STYLE if at_cap else GPU_STYLES[
                i % len(GPU_STYLES)])
        now = f"{s.points[-1][1]:.0f}" if s.points else "-"
        cap_now = f"{s.cap_w:.0f}" if s.cap_w is not None else "-"
        out.append(f" {now}/{cap_now} W".rjust(tail_w - 1).ljust(tail_w), style="bold")
    if len(shown) < len(data.series):
        out.append("\n")
        out.append(f"… {len(data.series) - len(shown)} more (a taller terminal shows them)",
                   style="dim")
    out.append("\n")
    out.append(" " * name_w)

    def x_of(t: float) -> int:
        return math.floor((t - t0) / data.window_s * cols)

    out.append_text(_time_axis(data, cols, x_of, 1))
    return out


def _legend_strips(data: ChartData, width: int, top: float) -> Text:
    legend = Text(no_wrap=True, overflow="ellipsis")
    total = sum(s.points[-1][1] for s in data.series if s.points)
    legend.append(f"{len(data.series)} GPUs  {total:.0f} W now  ", style="bold")
    legend.append(f"rows 0-{top:.0f} W, ", style="dim")
    legend.append("█", style=CAP_STYLE)
    legend.append(" at its cap  ", style="dim")
    for k in sorted({t.kind for t in data.ticks}):
        legend.append(f"{TICK_LETTERS.get(k, '?')}", style=TICK_STYLES.get(k, ""))
        legend.append(f" {k}  ", style="dim")
    legend.truncate(width)
    return legend


class PowerChart(Widget):
    """Repainted from the latest frame; keeps nothing but that frame."""

    def __init__(self, window_s: float = 120.0, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.window_s = window_s
        self._frame: Frame | None = None

    def show(self, frame: Frame) -> None:
        self._frame = frame
        self.refresh()

    def render(self) -> Text:
        if self._frame is None:
            return Text("waiting for the first reading…", style="dim")
        size = self.content_region.size
        # Once the run has ended: all of it, with every mark and knob change.
        window = self._frame.span_s or self.window_s
        return render_chart(self._frame, size.width, size.height, window)

    def title(self) -> str:
        if self._frame is not None and self._frame.span_s is not None:
            return "GPU power, the whole run"
        return f"GPU power, last {self.window_s:.0f} s"
