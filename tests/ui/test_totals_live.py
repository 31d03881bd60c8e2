"""The totals panel from LiveStats fed a scripted stream: before any request finishes,
the live tokens/s and J/token and the TTFT are there, the finished-request figures
say "-"; after a knob change, the "knob Δ" column shows the figures since it."""

from __future__ import annotations

import io

from rich.console import Console

from app.core.stats import LiveStats
from app.ui.feed import Frame
from app.ui.widgets.totals import totals_table
from tests.core.test_stats_live import knob_run, long_requests


def lines(stats: LiveStats) -> list[str]:
    console = Console(width=44, file=io.StringIO(), record=True, color_system=None)
    console.print(totals_table(Frame(now_s=0.0, snapshot=stats.snapshot())))
    return [" ".join(line.split()) for line in console.export_text().splitlines()]


def test_long_requests_show_live_figures_before_any_finishes() -> None:
    stats = LiveStats()
    for ev in long_requests():
        if ev.t_s > 30.0:
            break
        stats.on_event(ev)
    text = lines(stats)
    # 6 kJ over 2,368 tokens streamed by 8 requests none of which has finished
    assert "J/token live done knob Δ" in text
    assert "all 2.534 J - 2.534 J" in text
    assert "streamed 80.0 78.9 78.9" in text  # last 10 s, whole run, since the start
    assert "TPOT - 100 ms" in text  # none finished; the running ones' mean
    assert "request done - - -" in text
    assert "TTFT 502 ms 502 ms 502 ms" in text  # 0.5 s, within the sketch's 1%


def test_the_knob_column_shows_the_figures_since_the_change() -> None:
    stats = LiveStats()
    for ev in knob_run():
        stats.on_event(ev)
    text = lines(stats)
    assert any(x.startswith("all ") and x.endswith(" 1.250 J") for x in text)
    assert any(x.startswith("streamed ") and x.endswith(" 40.0") for x in text)
    assert any(x.startswith("...knob Δ 3.") for x in text)
