"""Keys per mode: the live key bar lists the knobs and no replay keys, the replay's
the reverse; `?` lists every key; the command palette has the knob actions."""

from __future__ import annotations

import asyncio

import pytest
from textual.command import CommandPalette

from app.ui.app import DashboardApp
from app.ui.keys import KEYS
from app.ui.screens.help import HelpScreen
from app.ui.widgets.key_bar import key_line
from tests.ui.fake_backend import fake_app, settle
from tests.ui.screen_text import screen_text
from tests.ui.test_dashboard_live import until

pytestmark = pytest.mark.timeout(30)


def _bottom_line(mode: str, size: tuple[int, int]) -> str:
    app: DashboardApp = fake_app(mode)
    out: list[str] = []

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await settle(app, pilot)
            out.append(screen_text(app).splitlines()[-1])

    asyncio.run(main())
    return out[0]


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
def test_live_key_bar_has_knob_keys_and_no_replay_keys(size: tuple[int, int]) -> None:
    line = _bottom_line("live", size)
    for key in ("[", "]", ",", ".", "k knob", "m mark", "? help", "q quit"):
        assert key in line, key
    for word in ("space", "<", ">", "pause", "slower", "faster"):
        assert word not in line, word


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
def test_replay_key_bar_has_pause_and_speed_and_no_knob_keys(size: tuple[int, int]) -> None:
    line = _bottom_line("replay", size)
    for key in ("space pause", "< slower", "> faster", "? help", "q quit"):
        assert key in line, key
    for word in ("cap", "batch", "knob", "mark", "["):
        assert word not in line, word


def test_key_bar_keeps_help_and_quit_when_very_narrow() -> None:
    for width in (30, 40, 60):
        text = key_line("live", width).plain
        assert len(text) <= width and text.rstrip().endswith("? help  q quit"), text


def test_question_mark_opens_a_help_listing_every_key() -> None:
    app: DashboardApp = fake_app("live")
    seen: dict[str, object] = {}

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            await pilot.press("question_mark")
            await pilot.pause(0.2)
            seen["help"] = isinstance(app.screen, HelpScreen)
            seen["text"] = screen_text(app)
            await pilot.press("escape")
            await pilot.pause(0.1)
            seen["closed"] = not isinstance(app.screen, HelpScreen)

    asyncio.run(main())
    assert seen["help"] and seen["closed"]
    text = str(seen["text"])
    for k in KEYS:  # each key on one line with what it does
        assert any(f" {k.shown} " in line and k.help[:30] in line
                   for line in text.splitlines()), k.help
    assert {k.shown for k in KEYS} >= {"[", "]", ",", ".", "k", "m", "space", "<", ">", "?",
                                       "q"}


def test_command_palette_lists_the_knob_actions_and_runs_them() -> None:
    app: DashboardApp = fake_app("live")
    seen: dict[str, object] = {}

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            titles = [c.title for c in app.get_system_commands(app.screen)]
            seen["titles"] = titles
            await pilot.press("ctrl+p")
            await until(pilot, lambda: isinstance(app.screen, CommandPalette))
            seen["palette"] = True
            await pilot.press(*"batch limit halved")
            await until(pilot, lambda: "Batch limit halved" in screen_text(app))
            await pilot.press("down", "enter")  # the first match, highlighted
            await until(pilot, lambda: bool(app.backend.calls))  # type: ignore[attr-defined]
            seen["calls"] = list(app.backend.calls)  # type: ignore[attr-defined]

    asyncio.run(main())
    titles = seen["titles"]
    assert isinstance(titles, list)
    for title in ("Power cap down 25 W", "Power cap up 25 W", "Batch limit halved",
                  "Batch limit doubled", "Set a knob's value (KNOB=VALUE)", "Drop a mark"):
        assert title in titles, title
    assert "Pause or play the replay" not in titles  # a live run has no replay actions
    assert seen["palette"]
    assert ("batch_limit", 16) in seen["calls"]  # type: ignore[operator]


def test_the_knob_dialog_fits_80x24_with_its_entry_in_sight() -> None:
    from app.ui.screens.knob_input import KnobInputScreen

    app: DashboardApp = fake_app("live")
    seen: dict[str, object] = {}

    async def main() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app, pilot)
            await pilot.press("k")
            await until(pilot, lambda: isinstance(app.screen, KnobInputScreen))
            await pilot.pause(0.2)
            entry = app.screen.query_one("#knob-entry")
            seen["inside"] = app.screen.region.contains_region(entry.region)
            seen["text"] = screen_text(app)

    asyncio.run(main())
    assert seen["inside"]
    assert "e.g. power_cap=300" in str(seen["text"]) and "max_num_seqs" in str(seen["text"])
