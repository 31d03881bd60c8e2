"""The dashboard's live figures from LiveStats fed a scripted stream: before any request
finishes, the live tokens/s and J/token are in the vitals and TTFT in the details, the
finished-request figures say "-"; after a knob change, the "knob Δ" figures show what
happened since it."""

from __future__ import annotations

import io

from rich.console import Console

from app.core.stats import LiveStats
from app.ui.feed import Frame
from app.ui.widgets.totals import totals_table
from app.ui.widgets.vitals import vitals_text
from tests.core.test_stats_live import knob_run, long_requests


def _text(renderable: object) -> list[str]:
    console = Console(width=80, file=io.StringIO(), record=True, color_system=None)
    console.print(renderable)
    return [" ".join(line.split()) for line in console.export_text().splitlines()]


def test_long_requests_show_live_figures_before_any_finishes() -> None:
    stats = LiveStats()
    for ev in long_requests():
        if ev.t_s > 30.0:
            break
        stats.on_event(ev)
    frame = Frame(now_s=0.0, snapshot=stats.snapshot())
    vitals = " ".join(_text(vitals_text(frame, 80)))
    # 6 kJ over 2,368 tokens streamed by 8 requests none of which has finished
    assert "J/tok 2.534 J live - done" in vitals
    narrow = " ".join(_text(vitals_text(frame, 40)))
    assert "J/tok 2.534 J live" in narrow and "live - done" not in narrow
    assert "tok/s 80.0 now 78.9 run" in vitals  # last 10 s, whole run
    details = _text(totals_table(frame))
    assert "TPOT/run - 100 ms -" in details  # none finished; the running ones' mean
    assert "request - - -" in details
    assert "TTFT 502 ms 502 ms 502 ms" in details  # 0.5 s, within the sketch's 1%


def test_the_knob_figures_show_what_happened_since_the_change() -> None:
    stats = LiveStats()
    for ev in knob_run():
        stats.on_event(ev)
    frame = Frame(now_s=0.0, snapshot=stats.snapshot())
    vitals = " ".join(_text(vitals_text(frame, 80)))
    assert "1.250 J knob Δ" in vitals
    assert "40.0 knob Δ" in vitals
