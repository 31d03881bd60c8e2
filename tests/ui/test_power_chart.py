"""The braille power chart: the cap is drawn at its height, traces stay in the window."""

from __future__ import annotations

from app.ui.feed import Frame, GpuTrace
from app.ui.widgets.braille import BrailleCanvas
from app.ui.widgets.power_chart import render_chart
from tests.ui.fake_backend import fake_frame


def test_canvas_dots_map_to_braille_bits() -> None:
    c = BrailleCanvas(2, 1)
    c.dot(0, 0, "red")  # top-left dot of cell 0
    c.dot(3, 3, "red")  # bottom-right dot of cell 1
    c.dot(9, 9, "red")  # off the canvas: ignored
    assert [t.plain for t in c.lines()] == ["\u2801\u2880"]


def test_cap_line_sits_at_its_height_and_the_axis_is_labelled() -> None:
    frame = fake_frame()
    lines = render_chart(frame, 80, 14, 120.0).plain.splitlines()
    assert len(lines) == 14
    assert "cap 500 W" in lines[0] and "gpu0" in lines[0]
    plot = lines[1:-1]
    assert plot[0].startswith(" 700 W┤") and plot[-1].startswith("   0 W┤")
    # 12 rows of 4 dots span 0-700 W: 500 W is dot row round(47 * 2/7) = 13, text row 3.
    assert plot[3].count("⠤") + plot[3].count("⠶") + plot[3].count("⡧") > 10
    assert lines[-1].strip().startswith("└-120 s") and lines[-1].endswith("now")


def test_points_older_than_the_window_are_not_drawn() -> None:
    frame: Frame = fake_frame()
    frame.gpus = [GpuTrace("gpu0", [(0.0, 600.0), (1.0, 600.0)])]  # long before now-120 s
    frame.snapshot.knobs["power_cap"] = None
    text = render_chart(frame, 60, 10, 120.0).plain
    body = "\n".join(line[7:] for line in text.splitlines()[1:-1])
    assert body.strip() == ""


def test_the_cap_is_drawn_as_it_was_over_time() -> None:
    # Fake frame: cap 700 W until t=240 s, 500 W after; the window is 180-300 s.
    lines = render_chart(fake_frame(), 80, 14, 120.0).plain.splitlines()[1:-1]
    cols = len(lines[0]) - 7
    left, right = slice(7, 7 + cols // 3), slice(7 + 2 * cols // 3, 7 + cols)
    assert lines[0][left].count("⠉") > 5 and lines[0][right].strip() == ""
    assert lines[3][right].count("⠤") + lines[3][right].count("⠶") > 5
