"""Numbers as the dashboard writes them."""

from __future__ import annotations

from app.ui.units import duration


def test_run_time_rounds_up_to_the_next_minute() -> None:
    assert duration(59.97) == "1:00.0" and duration(59.94) == "0:59.9"
    assert duration(3599.99) == "1:00:00.0"
