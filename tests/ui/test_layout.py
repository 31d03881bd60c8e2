"""The layout at a default terminal and up: the essentials are on the screen (their
panels lie inside it, nothing scrolls), more panels appear as the terminal grows."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from rich.console import Console

from app.ui.app import DashboardApp
from app.ui.widgets.totals import totals_table
from tests.ui.fake_backend import fake_app, fake_frame, settle
from tests.ui.screen_text import screen_text

pytestmark = pytest.mark.timeout(30)

ESSENTIAL_PANELS = ("header", "vitals", "knobs", "chart", "keys")
# State, elapsed, power now and cap per GPU, utilization, joules so far, J/token,
# tok/s, where the requests are, the knobs with their keys, quit.
ESSENTIAL_TEXT = ("running", "5:00.0", "gpu0", "507 W", "cap 500 W", "util 97%", "169 kJ",
                  "J/tok 0.524 J", "1,210", "12 waiting", "45 running", "done 1,240",
                  "failed 3", "shed 0", "power_cap", "[ ]", "batch_limit", ", .", "rate",
                  "max_tokens", "q quit", "? help")


def _layout(size: tuple[int, int], mode: str = "live") -> dict[str, Any]:
    app: DashboardApp = fake_app(mode)
    out: dict[str, Any] = {}

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await settle(app, pilot)
            screen = app.screen
            out["text"] = screen_text(app)
            out["scroll"] = (screen.max_scroll_x, screen.max_scroll_y)
            out["tier"] = app.tier
            shown = {}
            for w in app.query("#header, #vitals, #knobs, #chart, #keys, #log, #totals,"
                               " #stages"):
                assert w.id is not None
                shown[w.id] = (w.display, w.region, w.virtual_region)
            out["panels"] = shown
            out["screen"] = screen.region

    asyncio.run(main())
    return out


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (120, 36)])
@pytest.mark.parametrize("mode", ["live", "replay"])
def test_essentials_are_on_the_screen_unclipped(size: tuple[int, int], mode: str) -> None:
    out = _layout(size, mode)
    assert out["scroll"] == (0, 0)  # nothing is below or beside the screen
    for panel in ESSENTIAL_PANELS:
        display, region, virtual = out["panels"][panel]
        assert display, panel
        assert region.area > 0 and out["screen"].contains_region(region), panel
        assert region.size == virtual.size, f"{panel} is clipped: {virtual} shown as {region}"
    text = out["text"]
    needles = ESSENTIAL_TEXT if mode == "live" else tuple(
        n for n in ESSENTIAL_TEXT if n not in ("running", "[ ]", ", ."))
    for needle in needles:
        assert needle in text, (needle, size)
    if mode == "replay":
        assert "REPLAY" in text and "read-only" in text
    assert "marks m2 280.0 s" in text  # on the log's border, or the chart's at 80x24


def test_more_panels_appear_as_the_terminal_grows() -> None:
    shown = {size: {p for p, (d, _, _) in _layout(size)["panels"].items() if d}
             for size in ((80, 24), (100, 30), (120, 36))}
    assert shown[(80, 24)] == set(ESSENTIAL_PANELS)
    assert shown[(100, 30)] == set(ESSENTIAL_PANELS) | {"log"}
    assert shown[(120, 36)] == set(ESSENTIAL_PANELS) | {"log", "totals", "stages"}
    for size in ((100, 30), (120, 36), (200, 50)):
        out = _layout(size)
        for panel, (display, region, virtual) in out["panels"].items():
            if display:
                assert out["screen"].contains_region(region), (size, panel)
                assert region.size == virtual.size, (size, panel)
    assert "power_cap 700 W → 500 W (ui)" in _layout((100, 30))["text"]


def test_details_fit_their_columns_at_the_end_of_a_replay() -> None:
    # Large numbers, as at the end of a long run: no row of the details panel is cut.
    frame = fake_frame()
    s = frame.snapshot
    s.energy_j = {"gpu": 9.87e9, "cpu": 1.2e9, "dram": 3.4e8}
    s.energy_total_j = 1.14e10
    s.requests_cancelled = 123_456
    s.workflows_finished = 9_999_999
    s.workflows_failed = 1_234_567
    s.workflows_shed = 7_654_321
    s.latency_p99_s = 12345.0
    app: DashboardApp = fake_app("replay", frame)

    async def main() -> None:
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(app, pilot)
            totals = app.query_one("#totals")
            width = totals.content_region.width
            console = Console(width=width, record=True, file=io.StringIO())
            console.print(totals_table(frame))
            lines = console.export_text().splitlines()
            assert len(lines) <= totals.content_region.height
            for line in lines:
                assert "…" not in line and len(line.rstrip()) <= width, line
            text = screen_text(app)
            for needle in ("9.87 GJ", "12345 s", "9,999,999",
                           "7,654,321", "cut 123,456"):
                assert needle in text, needle

    asyncio.run(main())


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
def test_a_drain_in_progress_is_shown_whole_at_every_size(size: tuple[int, int]) -> None:
    frame = fake_frame()
    frame.knob_status = {"batch_limit": "draining 46 -> 2", "max_num_seqs": "restarting -> 128"}
    app: DashboardApp = fake_app("live", frame)
    seen: list[str] = []

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await settle(app, pilot)
            seen.append(screen_text(app))

    asyncio.run(main())
    text = seen[0]
    if size[0] >= 100:
        assert "draining 46 -> 2" in text and "restarting -> 128" in text
    else:  # both on the knobs panel's border, squeezed
        assert "draining 46->2 · restarting->128" in text
    row = next(line for line in text.splitlines() if "batch_limit" in line)
    assert "draining" in row  # on the knob's own row too


@pytest.mark.parametrize("n", [4, 16])
def test_several_gpus_fit_at_80x24(n: int) -> None:
    from app.ui.feed import GpuTrace

    frame = fake_frame()
    frame.gpus = [GpuTrace(f"gpu{i}", [(t / 2, 300.0 + 10 * i) for t in range(361, 601)],
                           limit_w=500.0, util_pct=90.0) for i in range(n)]
    app: DashboardApp = fake_app("live", frame)
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app, pilot)
            seen["text"] = screen_text(app)
            seen["scroll"] = (app.screen.max_scroll_x, app.screen.max_scroll_y)
            chart = app.query_one("#chart")
            seen["chart_rows"] = chart.content_region.height

    asyncio.run(main())
    text = seen["text"]
    assert seen["scroll"] == (0, 0) and seen["chart_rows"] >= 10
    if n == 4:  # each GPU's power and cap in the vitals, a line each on the chart
        for i in range(4):
            assert f"gpu{i} {300 + 10 * i}/500W 90%" in text
    else:  # the sum in the vitals, a strip per GPU on the chart (the rest counted)
        assert "16 GPU 6,000 W cap 8,000 W util 90%" in text
        assert "gpu0 " in text and "more" in text
    assert "q quit" in text and "power_cap" in text


def test_a_resize_under_the_help_lays_the_dashboard_out_for_the_new_size() -> None:
    from app.ui.screens.help import HelpScreen

    app: DashboardApp = fake_app("live")
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(app, pilot)
            await pilot.press("question_mark")
            await pilot.pause(0.2)
            assert isinstance(app.screen, HelpScreen)
            await pilot.resize_terminal(80, 24)
            await pilot.pause(0.3)
            await pilot.press("escape")
            await pilot.pause(0.3)
            seen["text"] = screen_text(app)
            seen["scroll"] = (app.screen.max_scroll_x, app.screen.max_scroll_y)
            seen["knobs_w"] = app.query_one("#knobs").region.width

    asyncio.run(main())
    assert seen["scroll"] == (0, 0) and seen["knobs_w"] == 40
    for needle in ESSENTIAL_TEXT:
        assert needle in seen["text"], needle
