"""`wattflow replay A B`: two sessions played together, aligned on their starts or on a
mark; headless, their summaries and B's differences from A, the report's own."""

from __future__ import annotations

import argparse
import asyncio
import math
from pathlib import Path

import pytest

from app.commands import replay, report
from app.core.bus import EventBus
from app.core.events import EndEvent, Event, MarkEvent, RequestEvent, Sample, SessionHeader
from app.core.replay import Replayer
from app.core.replay_index import ReplayIndex
from app.core.replay_pair import align_offset
from app.core.session_reader import SessionError
from app.core.session_writer import SessionRecorder
from tests.commands.test_report_differences import build


def ns(a: Path, b: Path | None, **kw: object) -> argparse.Namespace:
    return argparse.Namespace(session=str(a), other=str(b) if b else None, speed=math.inf,
                              headless=True, follow=False, follow_timeout=30.0,
                              align=kw.get("align"))


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    build(a, map_j=200.0, map_latency_s=4.0, gpu_w=300.0)
    build(b, map_j=150.0, map_latency_s=5.0, gpu_w=250.0, extra_stage=True)
    return a, b


def test_headless_pair_prints_the_reports_differences(pair: tuple[Path, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert replay.run(ns(*pair)) == 0
    out = capsys.readouterr().out
    assert "A: " in out and "B: " in out
    table = out[out.index("differences:"):]
    assert report.run(argparse.Namespace(sessions=[str(p) for p in pair], csv=None,
                                         json=False, plot=None, exact=False)) == 0
    rep = capsys.readouterr().out
    # the same table, line for line, as `wattflow report A B` prints
    assert table.strip() == rep[rep.index("differences:"):].strip()
    assert "-0.5000 (-25.0%)" in table


def write_marked(path: Path, mark_at: float, *, label: str = "go") -> None:
    rec = SessionRecorder(path)
    rec.open(SessionHeader(t_s=0.0, name=path.stem))
    events: list[Event] = [Sample(t_s=float(t), device="gpu0", energy_mj=1e5 * t, power_w=100.0)
                           for t in range(11)]
    events.append(MarkEvent(t_s=mark_at, label=label))
    events.append(RequestEvent(t_s=mark_at, request_id="r", stage="s", phase="submitted"))
    events.sort(key=lambda e: e.t_s)
    for ev in events:
        rec.write(ev)
    rec.close(EndEvent(t_s=10.0))


def test_align_on_a_mark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_marked(a, 6.5)
    write_marked(b, 2.0)
    ia, ib = ReplayIndex.build(a), ReplayIndex.build(b)
    assert align_offset(ia, ib, None) == 0.0
    assert align_offset(ia, ib, "go") == 4.5  # B runs 4.5 s behind A
    assert replay.run(ns(a, b, align="go")) == 0
    assert "aligned on mark 'go': B runs 4.5 s behind A" in capsys.readouterr().out
    with pytest.raises(SessionError, match="no mark 'stop' to align on \\(its marks: go\\)"):
        align_offset(ia, ib, "stop")


def test_aligned_sessions_pass_their_marks_together(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_marked(a, 1.0)
    write_marked(b, 3.0)
    ia, ib = ReplayIndex.build(a), ReplayIndex.build(b)
    offset = align_offset(ia, ib, "go")
    assert offset == -2.0  # B's mark comes later: B starts 2 s into its session
    seen: dict[str, float] = {}
    bus_a, bus_b = EventBus(), EventBus()

    async def main() -> None:
        ra = Replayer(a, bus_a, 10.0, index=ia)
        rb = Replayer(b, bus_b, 10.0, index=ib)
        rb.seek(-offset)
        bus_a.subscribe(lambda ev: seen.setdefault("a", ra.now_s()) if ev.kind == "mark" else None)
        bus_b.subscribe(lambda ev: seen.setdefault("b", ra.now_s()) if ev.kind == "mark" else None)
        await asyncio.gather(ra.run(), rb.run())

    asyncio.run(main())
    # both marks published when A's clock reads 1 s (one wall tick apart at most)
    assert seen["a"] == pytest.approx(1.0, abs=0.3)
    assert seen["b"] == pytest.approx(1.0, abs=0.3)


def test_bad_combinations_are_one_line_errors(pair: tuple[Path, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    a, b = pair
    args = ns(a, b)
    args.follow = True
    assert replay.run(args) == 2
    assert capsys.readouterr().err.strip() == "wattflow: error: --follow takes one session"
    assert replay.run(ns(a, None, align="go")) == 2
    assert "--align needs two sessions" in capsys.readouterr().err
    junk = tmp_path / "junk.jsonl"
    junk.write_text("not json\n")
    assert replay.run(ns(a, junk)) == 2
    assert "not a wattflow session" in capsys.readouterr().err
