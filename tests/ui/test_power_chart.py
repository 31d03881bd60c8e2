"""The power chart: a line per GPU, the cap as a stepped line, ticks at marks and knob
changes, smoothing that drops a lone odd reading but keeps a real change, strips when
there are many GPUs."""

from __future__ import annotations

from app.ui.feed import Frame, GpuTrace, Tick
from app.ui.widgets.braille import BrailleCanvas
from app.ui.widgets.power_chart import render_chart, smoothed
from tests.ui.fake_backend import fake_frame

BLANK = {" ", "\u2800"}


def _plot(text: str) -> list[str]:
    """The plot rows (no legend, no time axis), without the y axis."""
    return [line[7:] for line in text.splitlines()[1:-1]]


def _rows_used(plot: list[str], cols: slice) -> set[int]:
    return {r for r, line in enumerate(plot) if any(ch not in BLANK for ch in line[cols])}


def test_canvas_dots_map_to_braille_bits() -> None:
    c = BrailleCanvas(2, 1)
    c.dot(0, 0, "red")  # top-left dot of cell 0
    c.dot(3, 3, "red")  # bottom-right dot of cell 1
    c.dot(9, 9, "red")  # off the canvas: ignored
    assert [t.plain for t in c.lines()] == ["\u2801\u2880"]


def test_axis_is_labelled_and_the_legend_names_gpu_and_cap() -> None:
    lines = render_chart(fake_frame(), 80, 14, 120.0).plain.splitlines()
    assert len(lines) == 14
    assert "cap 500 W" in lines[0] and "gpu0" in lines[0]
    plot = lines[1:-1]
    assert plot[0].startswith(" 700 W┤") and plot[-1].startswith("   0 W┤")
    assert lines[-1].strip().startswith("└-120 s") and lines[-1].endswith("now")


def test_the_cap_is_a_stepped_line_that_steps_when_the_cap_changed() -> None:
    # Cap 700 W until t=240 s, 400 W after; the window is 180-300 s; no power drawn.
    frame = fake_frame()
    frame.gpus = [GpuTrace("gpu0", [], limit_w=400.0,
                           limit_steps=[(0.0, 700.0), (240.0, 400.0)])]
    frame.ticks = []
    plot = _plot(render_chart(frame, 87, 14, 120.0).plain)  # 80 columns of plot
    before, after = _rows_used(plot, slice(2, 35)), _rows_used(plot, slice(45, 78))
    assert before == {0}  # 700 W is the top of the axis
    # 12 rows of 4 dots span 0-700 W: 400 W is dot row round(47 * 3/7) = 20, text row 5.
    assert after == {5}
    # The step: the column of the change joins the two levels.
    step_col = 40
    assert _rows_used(plot, slice(step_col - 1, step_col + 1)) >= {0, 1, 2, 3, 4, 5}


def test_one_cap_line_per_distinct_cap_and_gpus_capped_alike_share_it() -> None:
    frame = fake_frame()
    steps = [(0.0, 300.0)]
    frame.gpus = [GpuTrace(f"gpu{i}", [], limit_w=300.0, limit_steps=steps) for i in range(2)]
    text = render_chart(frame, 80, 14, 120.0).plain
    assert text.splitlines()[0].count("cap 300 W") == 1


def test_a_lone_odd_reading_is_smoothed_away_but_a_real_change_is_kept() -> None:
    # 10 readings a second at 500 W; one at 90 W (sampled between two steps); then a
    # real fall to 200 W for the last 20 s.
    points = [(i / 10, 500.0) for i in range(1000)]
    points[400] = (40.0, 90.0)
    points += [(100 + i / 10, 200.0) for i in range(200)]
    values = smoothed(points, 0.0, 120.0, 120)
    assert min(v for v in values[:100] if v is not None) == 500.0
    assert values[101:] == [200.0] * 19
    assert values[99] == 500.0 and values[100] == 200.0  # the edge stays where it was


def test_line_per_gpu_ticks_for_marks_and_knob_changes() -> None:
    frame = fake_frame()
    frame.gpus = [GpuTrace("gpu0", [(180 + i / 2, 300.0) for i in range(240)]),
                  GpuTrace("gpu1", [(180 + i / 2, 600.0) for i in range(240)])]
    frame.ticks = [Tick(210.0, "mark", "m1"), Tick(270.0, "knob", "batch_limit=4")]
    lines = render_chart(frame, 88, 14, 120.0).plain.splitlines()
    assert "gpu0 300 W" in lines[0] and "gpu1 600 W" in lines[0]
    axis = lines[-1][7:]  # after "      └"
    assert axis.index("m") == 20 and axis.index("k") == 60
    plot = _plot("\n".join(lines))
    # 700 W axis, 12 rows of 4 dots: 600 W at dot row 7 (text row 1), the 500 W cap
    # (the knob: no meter reads a limit here) at row 3, 300 W at dot row 27 (row 6).
    assert _rows_used(plot, slice(30, 50)) == {1, 3, 6}


def test_many_gpus_become_one_strip_each() -> None:
    frame: Frame = fake_frame()
    frame.gpus = [GpuTrace(f"node{i // 8}/gpu{i % 8}", [(180 + s, 100.0 + 40 * i)
                                                       for s in range(121)],
                           limit_w=500.0) for i in range(12)]
    lines = render_chart(frame, 90, 16, 120.0).plain.splitlines()
    assert "12 GPUs" in lines[0]
    rows = [line for line in lines if "/gpu" in line]
    assert len(rows) == 12
    assert rows[0].rstrip().endswith(" 100/500 W") and rows[11].rstrip().endswith(" 540/500 W")
    # Fewer rows than GPUs: the rest are counted, not silently dropped.
    short = render_chart(frame, 90, 8, 120.0).plain
    assert "7 more" in short


def test_a_mark_at_the_time_of_a_knob_change_keeps_its_letter() -> None:
    frame = fake_frame()
    frame.ticks = [Tick(210.0, "mark", "m1"), Tick(210.0, "knob", "power_cap=500 W")]
    axis = render_chart(frame, 88, 14, 120.0).plain.splitlines()[-1][7:]
    assert axis[20] == "m" and "k" not in axis


def test_the_cap_stays_visible_where_the_power_runs_at_it() -> None:
    frame = fake_frame()
    frame.ticks = []
    frame.gpus = [GpuTrace("gpu0", [(180 + i / 2, 500.0) for i in range(241)], limit_w=500.0,
                           limit_steps=[(0.0, 500.0)])]
    text = render_chart(frame, 88, 14, 120.0)
    row = text.plain.splitlines()[4]  # 500 W: text row 3 of the plot
    start = text.plain.index(row)
    styles = {str(span.style) for span in text.spans
              if span.start >= start + 10 and span.end <= start + len(row) - 10}
    assert styles == {"bold #ff5252"}  # the cap's colour, not the GPU's

