"""The `k` dialog: KNOB=VALUE parsing, and errors shown on one line, not raised."""

from __future__ import annotations

import asyncio

import pytest
from textual.widgets import Input

from app.core.knobs import KnobError
from app.ui.app import DashboardApp
from app.ui.screens.knob_input import KnobInputScreen, parse_entry
from tests.ui.fake_backend import FakeBackend
from tests.ui.screen_text import screen_text

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(("text", "expected"), [
    ("power_cap=300", ("power_cap", 300.0)),
    ("  rate 2.5 ", ("rate", 2.5)),
    ("max_tokens: none", ("max_tokens", None)),
    ("batch=16", ("batch_limit", 16)),
    ("pow=250W", ("power_cap", 250.0)),
])
def test_entries_parse(text: str, expected: tuple[str, float | None]) -> None:
    assert parse_entry(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("voltage=3", "unknown knob 'voltage'"),
    ("batch_limit=2.5", "whole number"),
    ("batch_limit=0", "between 1 and 65536"),
    ("rate", "rate needs a value"),
    ("=3", "expected KNOB=VALUE"),
    ("batch_limit=none", "batch_limit needs a value"),
])
def test_bad_entries_are_one_line_knob_errors(text: str, message: str) -> None:
    with pytest.raises(KnobError, match=message) as info:
        parse_entry(text)
    assert "\n" not in str(info.value)


def _run(keys_then_check: list[str], backend: FakeBackend) -> tuple[DashboardApp, str]:
    app = DashboardApp(backend, handle_signals=False)
    shown: list[str] = []

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.1)
            await pilot.press("k")
            await pilot.pause(0.1)
            for entry in keys_then_check:
                # Typing is Textual's business; what is under test is what Enter does.
                app.screen.query_one("#knob-entry", Input).value = entry
                await pilot.press("enter")
                await pilot.pause(0.1)
            shown.append(screen_text(app))

    asyncio.run(main())
    return app, shown[0]


def test_refusal_from_the_runner_shows_in_the_dialog_which_stays_open() -> None:
    backend = FakeBackend()
    _app, text = _run(["rate=13"], backend)
    assert "rate: the fake refuses 13" in text
    assert ("rate", 13.0) not in backend.calls
    assert "Set a knob" in text  # the dialog is still up


def test_good_entry_applies_and_closes_the_dialog() -> None:
    backend = FakeBackend()
    _, text = _run(["batch_limit=oops", "batch_limit=16"], backend)
    assert backend.calls == [("batch_limit", 16)]
    assert "Set a knob" not in text


def test_escape_cancels_without_a_change() -> None:
    backend = FakeBackend()
    app = DashboardApp(backend, handle_signals=False)

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("k")
            await pilot.pause(0.1)
            assert isinstance(app.screen, KnobInputScreen)
            app.screen.query_one("#knob-entry", Input).value = "rate=3"
            await pilot.press("escape")
            await pilot.pause(0.1)
            assert not isinstance(app.screen, KnobInputScreen)

    asyncio.run(main())
    assert backend.calls == []


@pytest.mark.parametrize("entry", ["max_num_seqs", "max_num_s", "max_tokens"])
def test_a_knob_without_a_value_is_an_error_line_not_a_crash(entry: str) -> None:
    # Was a KeyError in the dialog's example table for max_num_seqs: the dashboard died.
    backend = FakeBackend()
    app, text = _run([entry], backend)
    assert "needs a value, e.g." in text
    assert "Set a knob" in text and backend.calls == []
    assert app.return_code in (None, 0)
