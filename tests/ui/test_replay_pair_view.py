"""The two-session replay's dashboard: its differences are the report's, its keys move
both sessions, a mark alignment holds across seeks."""

from __future__ import annotations

import argparse
import asyncio
import math
from pathlib import Path
from typing import Any

import pytest

from app.commands import report
from app.core.compare import METRICS, format_difference
from app.ui.replay_pair import DifferenceTable, pair_app
from tests.commands.test_replay_pair import write_marked
from tests.commands.test_report_differences import build
from tests.ui.screen_text import screen_text

pytestmark = pytest.mark.timeout(120)


def ns(a: Path, b: Path, speed: float = math.inf, align: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(session=str(a), other=str(b), speed=speed, align=align)


async def _until(pilot: Any, cond: Any, tries: int = 600) -> None:
    for _ in range(tries):
        await pilot.pause(0.05)
        if cond():
            return


def test_the_views_differences_equal_the_reports(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    build(a, map_j=200.0, map_latency_s=4.0, gpu_w=300.0)
    build(b, map_j=150.0, map_latency_s=5.0, gpu_w=250.0, extra_stage=True)
    app, backends = pair_app(ns(a, b))
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with app.run_test(size=(170, 50)) as pilot:
            await _until(pilot, lambda: all(x.replayer.at_end for x in backends))
            assert all(x.replayer.at_end for x in backends)
            app.paint()  # the end state now, not at the next tick of a busy machine
            await pilot.pause(0.3)
            seen["rows"] = app.query_one(DifferenceTable).rows
            seen["text"] = screen_text(app)

    asyncio.run(main())
    doc = report.json_document([report.analyse(a), report.analyse(b)])
    (d,) = doc["differences"]
    rows = seen["rows"]
    assert [r.stage for r in rows] == [s["stage"] for s in d["stages"]] + [d["run"]["stage"]]
    for row, want in zip(rows, [*d["stages"], d["run"]], strict=True):
        for m in METRICS:
            got = row.figures[m.key]
            assert got.to_dict(m) == want[m.key], (row.stage, m.key)
            if got.diff:
                assert format_difference(got, m) in seen["text"]
    assert "-0.5000 (-25.0%)" in seen["text"]


def test_keys_move_both_and_the_alignment_holds(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_marked(a, 6.0)
    write_marked(b, 2.0)
    app, backends = pair_app(ns(a, b, speed=1.0, align="go"))
    ra, rb = (x.replayer for x in backends)
    pos: list[tuple[float, float]] = []

    async def main() -> None:
        async with app.run_test(size=(170, 50)) as pilot:
            await pilot.pause(0.2)
            await pilot.press("space")
            pos.append((ra.now_s(), rb.now_s()))
            await pilot.press("n")  # the next landmark of either: both marks, at A's 6 s
            pos.append((ra.now_s(), rb.now_s()))
            await pilot.press("right")  # past A's end: A waits there, B goes on
            pos.append((ra.now_s(), rb.now_s()))
            await pilot.press("p")
            pos.append((ra.now_s(), rb.now_s()))
            await pilot.press("home")
            pos.append((ra.now_s(), rb.now_s()))

    asyncio.run(main())
    assert app.offset_s == 4.0
    # B is 4 s behind A throughout (before its start at first)
    assert pos[0][1] == pytest.approx(pos[0][0] - 4.0, abs=0.05)
    assert pos[1:] == [(6.0, 2.0), (10.0, 10.0), (6.0, 2.0), (0.0, -4.0)]
