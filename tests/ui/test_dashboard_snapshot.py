"""The whole dashboard at 120x40 from a fixed frame of made-up numbers, compared as text
with tests/ui/snapshots/. After a deliberate change of the layout, regenerate with
`WATTFLOW_UPDATE_SNAPSHOTS=1 pytest tests/ui/test_dashboard_snapshot.py` and review the diff.

(Text rather than pytest-textual-snapshot's SVG: that plugin pins syrupy 4.8, which
needs pytest < 9.)"""

from __future__ import annotations

import asyncio
import difflib
import os
from pathlib import Path

import pytest

from app.ui.app import DashboardApp
from tests.ui.fake_backend import FakeBackend
from tests.ui.screen_text import screen_text

pytestmark = pytest.mark.timeout(30)

SNAPSHOTS = Path(__file__).parent / "snapshots"


def _render(size: tuple[int, int]) -> str:
    app = DashboardApp(FakeBackend(), handle_signals=False)
    out: list[str] = []

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            # Two paints: the second comes after the layout settled (the first frame is
            # posted from on_mount, before the panels know their size).
            # The footer fills in its keys a moment after mount, too.
            for _ in range(100):
                if app.frames_painted >= 2 and "q quit" in screen_text(app):
                    break
                await pilot.pause(0.05)
            await pilot.pause(0.1)
            out.append(screen_text(app))

    asyncio.run(main())
    return "\n".join(line.rstrip() for line in out[0].splitlines()) + "\n"


@pytest.mark.parametrize("size", [(120, 40), (160, 48)])
def test_dashboard_matches_snapshot(size: tuple[int, int]) -> None:
    text = _render(size)
    path = SNAPSHOTS / f"dashboard_{size[0]}x{size[1]}.txt"
    if os.environ.get("WATTFLOW_UPDATE_SNAPSHOTS") == "1" or not path.exists():
        path.write_text(text, encoding="utf-8")
    expected = path.read_text(encoding="utf-8")
    diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True)))
    assert text == expected, diff


def test_snapshot_shows_every_panel_with_its_numbers() -> None:
    # Independent of the stored file: what the researcher must find on the screen.
    text = _render((120, 40))
    for needle in ("● LIVE", "composite-sim-20250101-120000", "Llama-3.1-8B-Instruct",
                   "cap 500 W", "141 kJ", "0.545 J", "0.456 J", "1,210", "3.42 s", "84 ms",
                   "21 ms", "reduce", "88.0 kJ", "power_cap", "500 W", "0.25/s",
                   "power_cap 700 W → 500 W (ui)", "mark: m1", "q quit"):
        assert needle in text, needle
