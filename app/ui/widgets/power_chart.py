"""GPU power over the last two minutes: one braille line per GPU, the power cap dashed."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

from rich.text import Text
from textual.widget import Widget

from app.ui.feed import Frame, GpuTrace
from app.ui.widgets.braille import BrailleCanvas

GPU_STYLES = ("#4fc3f7", "#ffb74d", "#81c784", "#ba68c8", "#e57373", "#fff176", "#90a4ae",
              "#f06292")
CAP_STYLE = "bold #ff5252"
AXIS_STYLE = "#808080"
LABEL_W = 6  # "1000 W" at most, then the axis


def _nice_top(w: float) -> float:
    step = 50.0 if w <= 1000 else 100.0
    return max(step, math.ceil(w / step) * step)


def cap_of(frame: Frame) -> float | None:
    """The cap to draw: what the meter reads as in force, else the knob."""
    limits = [g.limit_w for g in frame.gpus if g.limit_w is not None]
    if limits:
        return max(limits)
    cap = frame.snapshot.knobs.get("power_cap")
    return float(cap) if cap is not None else None


def render_chart(frame: Frame, width: int, height: int, window_s: float) -> Text:
    """The whole panel as text: legend, plot with a y axis, x axis."""
    if width < LABEL_W + 4 or height < 4:
        return Text("(too small)")
    cap = cap_of(frame)
    legend = Text(no_wrap=True, overflow="ellipsis")
    if not frame.gpus:
        legend.append("no GPU power readings yet", style="dim")
    for i, g in enumerate(frame.gpus):
        legend.append("━ ", style=GPU_STYLES[i % len(GPU_STYLES)])
        legend.append(_legend(g), style="bold" if len(frame.gpus) == 1 else "")
        legend.append("   ")
    if cap is not None:
        legend.append("┄ ", style=CAP_STYLE)
        legend.append(f"cap {cap:.0f} W")

    plot_rows = height - 2
    cols = width - LABEL_W - 1
    canvas = BrailleCanvas(cols, plot_rows)
    peak = max((w for g in frame.gpus for _, w in g.points), default=0.0)
    ranges = [d.range_w[1] for d in frame.devices if d.range_w is not None]
    top = _nice_top(max([peak * 1.05, cap or 0.0, *ranges, 100.0]))

    def y_of(w: float) -> int:
        return round((1.0 - min(max(w, 0.0), top) / top) * (canvas.height - 1))

    t0 = frame.now_s - window_s

    def x_of(t: float) -> int:
        return round((t - t0) / window_s * (canvas.width - 1))

    steps = next((g.limit_steps for g in frame.gpus if g.limit_steps), None)
    if steps:
        _draw_cap_steps(canvas, steps, t0, window_s, y_of)
    elif cap is not None:
        canvas.hline(y_of(cap), CAP_STYLE, dash=2)
    for i, g in enumerate(frame.gpus):
        style = GPU_STYLES[i % len(GPU_STYLES)]
        prev: tuple[int, int] | None = None
        for t, w in g.points:
            if t < t0 - window_s / canvas.width:
                continue
            pt = (x_of(t), y_of(w))
            if prev is None:
                canvas.dot(*pt, style)
            else:
                canvas.line(*prev, *pt, style)
            prev = pt

    out = Text(no_wrap=True)
    out.append_text(legend)
    labels = {0: f"{top:.0f} W", plot_rows // 2: f"{top / 2:.0f} W", plot_rows - 1: "0 W"}
    for r, line in enumerate(canvas.lines()):
        out.append("\n")
        out.append(labels.get(r, "").rjust(LABEL_W), style=AXIS_STYLE)
        out.append("┤" if r in labels else "│", style=AXIS_STYLE)
        out.append_text(line)
    out.append("\n")
    out.append(" " * LABEL_W + "└", style=AXIS_STYLE)
    left, mid, right = f"-{window_s:.0f} s", f"-{window_s / 2:.0f} s", "now"
    axis = [" "] * cols
    for pos, lab in ((0, left), ((cols - len(mid)) // 2, mid), (cols - len(right), right)):
        axis[pos:pos + len(lab)] = list(lab)
    out.append("".join(axis[:cols]), style=AXIS_STYLE)
    return out


def _draw_cap_steps(canvas: BrailleCanvas, steps: list[tuple[float, float]], t0: float,
                    window_s: float, y_of: Callable[[float], int]) -> None:
    """The cap as it was over time: dashed where it held, dotted up or down where the
    knob changed it."""
    times = [t for t, _ in steps]
    prev_y: int | None = None
    for x in range(canvas.width):
        t = t0 + x / max(1, canvas.width - 1) * window_s
        i = bisect.bisect_right(times, t) - 1
        if i < 0:
            continue
        y = y_of(steps[i][1])
        if prev_y is not None and y != prev_y:
            for yy in range(min(y, prev_y), max(y, prev_y) + 1, 2):
                canvas.dot(x, yy, CAP_STYLE)
        if (x // 2) % 2 == 0:
            canvas.dot(x, y, CAP_STYLE)
        prev_y = y


def _legend(g: GpuTrace) -> str:
    parts = [g.device]
    parts.append(f"{g.points[-1][1]:.0f} W" if g.points else "- W")
    if g.util_pct is not None:
        parts.append(f"util {g.util_pct:.0f}%")
    if g.sm_clock_mhz is not None:
        parts.append(f"{g.sm_clock_mhz:.0f} MHz")
    if g.temp_c is not None:
        parts.append(f"{g.temp_c:.0f}°C")
    return "  ".join(parts)


class PowerChart(Widget):
    """Repainted from the latest frame; keeps nothing but that frame."""

    DEFAULT_CSS = """
    PowerChart { height: 15; }
    """

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
        return render_chart(self._frame, size.width, size.height, self.window_s)
