"""The whole dashboard from a fixed frame of made-up numbers, live and replay, at 80x24,
120x36 and 200x50, compared as text with tests/ui/snapshots/. After a deliberate change
of the layout, regenerate with
`WATTFLOW_UPDATE_SNAPSHOTS=1 pytest tests/ui/test_dashboard_snapshot.py` and review the diff.

(Text rather than pytest-textual-snapshot's SVG: that plugin pins syrupy 4.8, which
needs pytest < 9.)"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from tests.ui.fake_backend import render_screen

pytestmark = pytest.mark.timeout(30)

SNAPSHOTS = Path(__file__).parent / "snapshots"


@pytest.mark.parametrize("mode", ["live", "replay"])
@pytest.mark.parametrize("size", [(80, 24), (120, 36), (200, 50)])
def test_dashboard_matches_snapshot(size: tuple[int, int], mode: str) -> None:
    text = render_screen(size, mode)
    path = SNAPSHOTS / f"dashboard_{mode}_{size[0]}x{size[1]}.txt"
    if os.environ.get("WATTFLOW_UPDATE_SNAPSHOTS") == "1" or not path.exists():
        path.write_text(text, encoding="utf-8")
    expected = path.read_text(encoding="utf-8")
    diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True)))
    assert text == expected, diff


def test_snapshot_shows_every_panel_with_its_numbers() -> None:
    # Independent of the stored file: what the researcher must find on the screen.
    text = render_screen((120, 36), "live")
    for needle in ("● LIVE", "composite-sim-20250101-120000", "Llama-3.1-8B-Instruct",
                   "cap 500 W", "141 kJ", "169 kJ", "0.524 J", "1,210", "3.42 s", "84 ms",
                   "21 ms", "reduce", "88.0 kJ", "power_cap", "500 W", "0.25/s",
                   "power_cap 700 W → 500 W (ui)", "mark: m1", "q quit", "12 waiting",
                   "45 running", "marks m2 280.0 s"):
        assert needle in text, needle
